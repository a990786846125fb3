#!/usr/bin/env python3
"""Self cost (instructions) per function from a callgrind output file, per message.

usage: benches/callgrind_top.py callgrind.out MESSAGES [COUNT]

callgrind counts instructions, not time, and sees only user space, but it is exact and
repeatable on a noisy machine: the tool for before/after comparisons of user-space changes.
"""

import collections
import re
import sys

names = {}


def name(token):
    m = re.match(r"\((\d+)\)(?: (.*))?", token)
    if not m:
        return token
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), token)


def main():
    path, messages = sys.argv[1], int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    cost = collections.Counter()
    fn, after_call = None, False
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("fn="):
            fn = name(line[3:])
        elif line.startswith("cfn="):
            name(line[4:])
        elif line.startswith("calls="):
            after_call = True
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            parts = line.split()
            # The line after `calls=` is the callee's inclusive cost, not this function's.
            if len(parts) >= 2 and not after_call:
                cost[fn] += int(parts[1])
            after_call = False
        elif "=" in line and line.split("=", 1)[0] in ("fl", "fi", "fe", "ob", "cob", "cfi", "cfl"):
            name(line.split("=", 1)[1])
    total = sum(cost.values())
    print(f"{total / messages:,.0f} instructions per message ({total:,} for {messages} messages)\n")
    print("| function | share | instructions per message |")
    print("|---|---:|---:|")
    for f, c in cost.most_common(count):
        print(f"| `{f[:100]}` | {c / total * 100:.1f}% | {c / messages:,.0f} |")


if __name__ == "__main__":
    main()
