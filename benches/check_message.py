#!/usr/bin/env python3
"""Checks one message a benches/e2e.sh mode delivered: that the relay did what the mode's rows
claim, so no row is timed for work that was not done.

  check_message.py FILE MODE BODY BASE_URL

MODE is plain, tracking, ed25519 or rsa; BODY is the load's body (html or text); BASE_URL the
tracking base URL. In the tracking modes with an HTML body, the decoded HTML part must hold
links rewritten to BASE_URL/c/… and exactly one open pixel BASE_URL/o/…; in plain mode neither.
ed25519 and rsa must carry exactly one DKIM-Signature of that algorithm; the others none.
Prints what it found (or what is wrong) on one line; exits 1 when something is wrong.
"""

import email
import email.policy
import re
import sys

path, mode, body, base = sys.argv[1:]
with open(path, "rb") as f:
    m = email.message_from_binary_file(f, policy=email.policy.default)
html = "".join(p.get_content() for p in m.walk() if p.get_content_type() == "text/html")
clicks, opens = html.count(base + "/c/"), html.count(base + "/o/")
algorithms = [
    a for s in m.get_all("DKIM-Signature") or [] for a in re.findall(r"(?:^|;)\s*a=([a-z0-9-]+)", str(s))
]
want = {"ed25519": ["ed25519-sha256"], "rsa": ["rsa-sha256"]}.get(mode, [])
tracked = mode != "plain" and body == "html"
problems = []
if tracked and (clicks == 0 or opens != 1):
    problems.append(f"expected rewritten links and one open pixel, found {clicks} links to {base}/c/ and {opens} pixels")
if not tracked and clicks + opens:
    problems.append(f"expected no tracking, found {clicks} tracked links and {opens} pixels")
if algorithms != want:
    problems.append(f"expected DKIM signatures {want or 'none'}, found {algorithms or 'none'}")
if problems:
    print("; ".join(problems))
    sys.exit(1)
print(f"{clicks} links rewritten to {base}/c/, {opens} open pixel, DKIM {'+'.join(algorithms) or 'none'}")
