#!/usr/bin/env python3
"""Summarises a benches/e2e.sh run folder: medians of the repeated runs grouped by corerelay's
mode (plain relay, tracking, tracking + DKIM Ed25519, tracking + DKIM RSA-2048), the ratios
of corerelay to Postfix (and to Postfix + OpenDKIM for the signing modes) measured in the same
session, the fixed-rate rows, and the issue's targets. Writes <dir>/summary.md.

Runs recorded before modes and rates existed read as plain relay (Postfix + OpenDKIM as its
RSA signing), closed loop, plain-text body.

usage: benches/summarize.py benches/runs/<date>-<host>
"""

import collections
import json
import statistics
import sys

MODES = {
    "plain": "Plain relay",
    "tracking": "Tracking (links rewritten, open pixel)",
    "ed25519": "Tracking + DKIM Ed25519",
    "rsa": "Tracking + DKIM RSA-2048",
}
SIGNING = ("ed25519", "rsa")

out = sys.argv[1]
rows = [json.loads(line) for line in open(f"{out}/raw.jsonl") if line.strip()]
for r in rows:
    r.setdefault("mode", "rsa" if r["system"] == "postfix+opendkim" else "plain")
    r.setdefault("rate", 0)
    r.setdefault("body", "text")
    r.setdefault("accounts", 1)

# One group per row of the tables: (system, mode, rate, loader, accounts, cores, size, conns).
groups = collections.defaultdict(list)
for r in rows:
    groups[(r["system"], r["mode"], r["rate"], r["loader"], r["accounts"], r["cores"], r["size"], r["conns"])].append(r)


def med(rs, f):
    vals = [v for v in (f(r) for r in rs) if v is not None]
    return statistics.median(vals) if vals else None


def stats(rs):
    return {
        "runs": len(rs),
        "accepted": med(rs, lambda r: r["load"]["messages_per_second"]),
        "e2e": med(rs, lambda r: r["e2e_per_second"]),
        "p50": med(rs, lambda r: r["load"].get("p50_ms")),
        "p99": med(rs, lambda r: r["load"].get("p99_ms")),
        "max": med(rs, lambda r: r["load"].get("max_ms")),
        "cpu": med(rs, lambda r: r["relay_cpu_ms_per_1k"]),
        "tools": med(rs, lambda r: r["tools_cpu_ms_per_1k"]),
        "mem": med(rs, lambda r: r["peak_pss_kib"] / 1024),
        "lost": sum(r["messages"] - r["delivered"] for r in rs),
    }


def usable(rs):
    """Runs in which the load was acknowledged; a run that failed (see failures.txt) is
    counted in the table's `failed` column, not in the medians."""
    return [r for r in rs if r["load"].get("acked", 1) != 0] or rs


S = {k: dict(stats(usable(v)), failed=len(v) - len(usable(v))) for k, v in groups.items()}


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def ratio(a, b):
    return None if a is None or not b else a / b


def size_name(size):
    return f"{size // 1024} KB" if size % 1024 == 0 else f"{size} B"


def system_name(system, accounts, cores):
    if system != "corerelay":
        return system
    spread = f", {accounts} accounts" if accounts > 1 else ""
    return f"corerelay, {cores} core{'s' if cores != '1' else ''}{spread}"


def postfix(size, conns, loader="corerelay", dkim=False):
    """Postfix's closed-loop row (plain, or + OpenDKIM) for the same size and connections."""
    if dkim:
        return S.get(("postfix+opendkim", "rsa", 0, loader, 1, "-", size, conns))
    return S.get(("postfix", "plain", 0, loader, 1, "-", size, conns))


def corerelay(mode, cores, size, conns, accounts=1):
    return S.get(("corerelay", mode, 0, "corerelay", accounts, cores, size, conns))


def closed_loop(k):
    system, mode, rate, loader, accounts = k[:5]
    return rate == 0 and loader == "corerelay" and accounts == 1


# ---------------------------------------------------------------- header
lines = ["# End-to-end results", "", "```"]
lines += open(f"{out}/machine.txt").read().rstrip().splitlines()
loads = sorted(float(r["loadavg_before"]) for r in rows if r.get("loadavg_before"))
if loads:
    lines.append(
        f"load average before each run (other tenants of the machine included): min {loads[0]:.1f}, "
        f"median {statistics.median(loads):.1f}, max {loads[-1]:.1f}"
    )
ios = sorted(float(r["io_full_avg10_before"]) for r in rows if r.get("io_full_avg10_before"))
if ios:
    lines.append(
        f"I/O pressure before each run (% of time all tasks waited for I/O, 10 s average): min {ios[0]:.1f}, "
        f"median {statistics.median(ios):.1f}, max {ios[-1]:.1f}"
    )
steals = sorted(max(r["steal_pct"].values()) for r in rows if r.get("steal_pct"))
if steals:
    lines.append(
        f"steal during each run (% of a CPU's time the hypervisor gave other tenants, the more stolen CPU): "
        f"min {steals[0]:.1f}, median {statistics.median(steals):.1f}, max {steals[-1]:.1f}; "
        f"runs at 1% or more: {sum(s >= 1 for s in steals)} of {len(steals)}"
    )
bodies = sorted({r["body"] for r in rows if r["loader"] == "corerelay"})
body_note = {
    "html": "the HTML newsletter of `corerelay load --body html` (multipart/alternative, a quoted-printable "
    "HTML part with a link every ~400 bytes)",
    "text": "plain-text filler (`corerelay load --body text`), which gives the tracking rewrite nothing to do",
}
lines += [
    "```",
    "",
    "Every message loaded by `corerelay load` has the same body in every mode and through Postfix: "
    + "; ".join(body_note.get(b, b) for b in bodies)
    + ". The modes differ only in what the relay does with it.",
    "",
    "Medians of the repeated runs. *accepted*: messages acknowledged per second by the relay "
    "(the load generator's count over its run time). *e2e*: messages counted by the sink per "
    "second, from the first send until the sink had them all. *250 p50/p99*: the latency of "
    "the reply to the end of DATA (in a closed loop at saturation this is mostly queueing; see "
    "the fixed-rate rows for the latency below capacity). *relay CPU*: CPU time of the relay "
    "(Postfix: every Postfix process; + OpenDKIM) per 1,000 messages; *tools CPU*: the same for "
    "the load generator and the sink, which share the cores. *peak PSS*: the largest summed "
    "proportional set size of the relay's processes, sampled every 0.5 s. *× Postfix*: corerelay's "
    "e2e over Postfix's (plain relay) in the same session; *× P+OpenDKIM*: over Postfix + OpenDKIM "
    "(RSA-2048); *CPU ÷*: the baseline's relay CPU over corerelay's (Postfix + OpenDKIM in the "
    "signing modes when measured, else Postfix). *lost*: messages the sink had not counted when "
    "the run's wait ended; *failed runs*: runs in which nothing was acknowledged (explained in "
    "failures.txt), left out of the medians.",
]


# ---------------------------------------------------------------- closed-loop tables by mode
def mode_table(mode):
    signing = mode in SIGNING
    keys = [k for k in S if closed_loop(k) and k[1] == mode and k[0] == "corerelay"]
    baselines = {"plain": ["postfix"], "rsa": ["postfix+opendkim"]}.get(mode, [])
    keys += [k for k in S if closed_loop(k) and k[0] in baselines]
    if not keys:
        return []
    has_dkim_baseline = signing and any(k[0] == "postfix+opendkim" for k in S)
    order = {"corerelay": 0, "postfix": 1, "postfix+opendkim": 2}
    keys.sort(key=lambda k: (k[6], k[7], order.get(k[0], 9), k[5] != "all"))
    head = (
        "| system | size | conns | accepted msg/s | e2e msg/s | 250 p50 ms | 250 p99 ms | relay CPU ms / 1k "
        "| tools CPU ms / 1k | peak PSS MiB | e2e × Postfix |"
    )
    head += " e2e × P+OpenDKIM |" if has_dkim_baseline else ""
    head += " CPU ÷ baseline | lost | failed runs |"
    out = ["", f"## {MODES[mode]}", "", head, "|---|" + "---:|" * (head.count("|") - 2)]
    for k in keys:
        system, _, _, _, accounts, cores, size, conns = k
        s, p, d = S[k], postfix(size, conns), postfix(size, conns, dkim=True)
        mine = system == "corerelay"
        base = d if has_dkim_baseline and d else p
        cells = [
            system_name(system, accounts, cores),
            size_name(size),
            str(conns),
            fmt(s["accepted"], ".0f"),
            fmt(s["e2e"], ".0f"),
            fmt(s["p50"], ".2f"),
            fmt(s["p99"], ".2f"),
            fmt(s["cpu"], ".0f"),
            fmt(s["tools"], ".0f"),
            fmt(s["mem"], ".0f"),
            fmt(ratio(s["e2e"], p and p["e2e"]) if mine else None, ".1f"),
        ]
        if has_dkim_baseline:
            cells.append(fmt(ratio(s["e2e"], d and d["e2e"]) if mine else None, ".1f"))
        cells += [fmt(ratio(base and base["cpu"], s["cpu"]) if mine else None, ".1f"), str(s["lost"]), str(s["failed"])]
        out.append("| " + " | ".join(cells) + " |")
    return out


for mode in MODES:
    lines += mode_table(mode)


# ---------------------------------------------------------------- other loaders, spread accounts
def other_table():
    keys = [k for k in S if k[2] == 0 and not closed_loop(k)]
    if not keys:
        return []
    keys.sort(key=lambda k: (k[3], k[4], k[6], k[7], k[0] != "corerelay", k[5] != "all"))
    out = [
        "",
        "## Other loads (plain relay)",
        "",
        "The same relay driven by Postfix's smtp-source (its own body, so corerelay's figures do not rest "
        "on its own load tool), and corerelay with the load spread over several accounts pinned to "
        "different cores.",
        "",
        "| system | loader | size | conns | accepted msg/s | e2e msg/s | 250 p50 ms | 250 p99 ms "
        "| relay CPU ms / 1k | peak PSS MiB | e2e × Postfix | lost | failed runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in keys:
        system, _, _, loader, accounts, cores, size, conns = k
        s, p = S[k], postfix(size, conns, loader)
        x = ratio(s["e2e"], p and p["e2e"]) if system == "corerelay" else None
        out.append(
            f"| {system_name(system, accounts, cores)} | {loader} | {size_name(size)} | {conns} "
            f"| {fmt(s['accepted'], '.0f')} | {fmt(s['e2e'], '.0f')} | {fmt(s['p50'], '.2f')} | {fmt(s['p99'], '.2f')} "
            f"| {fmt(s['cpu'], '.0f')} | {fmt(s['mem'], '.0f')} | {fmt(x, '.1f')} | {s['lost']} | {s['failed']} |"
        )
    return out


lines += other_table()


# ---------------------------------------------------------------- fixed offered rate
def rate_keys():
    order = {"corerelay": 0, "postfix": 1, "postfix+opendkim": 2}
    keys = [k for k in S if k[2] != 0]
    return sorted(keys, key=lambda k: (k[6], k[7], order.get(k[0], 9), list(MODES).index(k[1]), k[2]))


def falls_behind(k):
    s = S[k]
    return s["accepted"] is not None and s["accepted"] < 0.95 * k[2]


def rate_table():
    keys = rate_keys()
    if not keys:
        return []
    out = [
        "",
        "## Fixed offered rate",
        "",
        "The load starts messages at a fixed rate (`corerelay load --rate`) over its connections, below "
        "the relay's capacity, so the 250 reply's latency is the relay's own and not queueing behind a "
        "saturated closed loop. *achieved*: messages acknowledged per second; below 95% of the offered "
        "rate the relay fell behind and its latency is queueing again.",
        "",
        "| system | mode | size | conns | offered msg/s | achieved msg/s | e2e msg/s | 250 p50 ms | 250 p99 ms "
        "| 250 max ms | relay CPU ms / 1k | lost | failed runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in keys:
        system, mode, rate, _, accounts, cores, size, conns = k
        s = S[k]
        achieved = fmt(s["accepted"], ".0f") + (" (fell behind)" if falls_behind(k) else "")
        out.append(
            f"| {system_name(system, accounts, cores)} | {mode} | {size_name(size)} | {conns} | {rate} | {achieved} "
            f"| {fmt(s['e2e'], '.0f')} | {fmt(s['p50'], '.2f')} | {fmt(s['p99'], '.2f')} | {fmt(s['max'], '.2f')} "
            f"| {fmt(s['cpu'], '.0f')} | {s['lost']} | {s['failed']} |"
        )
    return out


lines += rate_table()


# ---------------------------------------------------------------- targets
def target(text, value, goal, better_low=False, unit=""):
    if value is None:
        return f"- {text}: not measured in this run"
    met = value <= goal if better_low else value >= goal
    return f"- {text}: **{value:.2f}{unit}** (target {'≤' if better_low else '≥'} {goal}{unit}) — {'met' if met else 'missed'}"


def e2e(s):
    return s and s["e2e"]


def targets():
    """The issue's targets, from the same medians (throughput: e2e, 20 KB, all cores)."""
    out = ["", "## Targets", ""]
    conns_20k = sorted({k[7] for k in S if k[6] == 20480 and closed_loop(k)})
    spreads = sorted({k[4] for k in S if k[4] > 1})
    for conns in conns_20k:
        p = postfix(20480, conns)
        out.append(target(f"plain relay, 20 KB, {conns} conns: corerelay ÷ Postfix", ratio(e2e(corerelay("plain", "all", 20480, conns)), e2e(p)), 8, unit="×"))
        for n in spreads:
            c = corerelay("plain", "all", 20480, conns, n)
            if c:
                out.append(target(f"the same, load over {n} accounts", ratio(e2e(c), e2e(p)), 8, unit="×"))
    measured = {k[1] for k in S if k[0] == "corerelay"}
    for conns in conns_20k if "ed25519" in measured else []:
        c = corerelay("ed25519", "all", 20480, conns)
        out.append(target(f"tracking + Ed25519, 20 KB, {conns} conns: corerelay ÷ Postfix (plain)", ratio(e2e(c), e2e(postfix(20480, conns))), 4, unit="×"))
    for conns in conns_20k if "rsa" in measured else []:
        c = corerelay("rsa", "all", 20480, conns)
        d = postfix(20480, conns, dkim=True)
        out.append(target(f"tracking + RSA-2048, 20 KB, {conns} conns: corerelay ÷ Postfix + OpenDKIM", ratio(e2e(c), e2e(d)), 3, unit="×"))
    for conns in conns_20k:
        for n in [1] + spreads:
            a, o = corerelay("plain", "all", 20480, conns, n), corerelay("plain", "1", 20480, conns, n)
            if a or n == 1:
                what = "one account" if n == 1 else f"{n} accounts"
                out.append(target(f"plain, 20 KB, {conns} conns, {what}: all cores ÷ one core", ratio(e2e(a), e2e(o)), 1.8, unit="×"))
    if conns_20k:
        conns = conns_20k[-1]
        for mode in [m for m in MODES if m != "plain"]:
            a, o = corerelay(mode, "all", 20480, conns), corerelay(mode, "1", 20480, conns)
            if a or o:
                out.append(target(f"{mode}, 20 KB, {conns} conns: all cores ÷ one core", ratio(e2e(a), e2e(o)), 1.8, unit="×"))
    fixed = [k for k in rate_keys() if k[0] == "corerelay" and k[7] == 50]
    for k in fixed:
        _, mode, rate, _, _, cores, size, conns = k
        s = S[k]
        behind = ", fell behind" if falls_behind(k) else ""
        out.append(
            target(
                f"250 p99 under 50 conns, {mode}, {size_name(size)}, offered {rate}/s (achieved {fmt(s['accepted'], '.0f')}/s{behind})",
                s["p99"],
                5,
                better_low=True,
                unit=" ms",
            )
        )
    if not fixed:
        out.append("- 250 p99 under 50 conns: not measured in this run (it needs the fixed-rate rows, `--rates`)")
    return out


if any(k[0] == "corerelay" for k in S):
    lines += targets()
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
