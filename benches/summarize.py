#!/usr/bin/env python3
"""Summarises a benches/e2e.sh run folder: medians of the repeated runs, the ratios of corerelay
to Postfix measured in the same session, and the issue's targets. Writes <dir>/summary.md.

usage: benches/summarize.py benches/runs/<date>-<host>
"""

import collections
import json
import statistics
import sys

out = sys.argv[1]
rows = [json.loads(line) for line in open(f"{out}/raw.jsonl") if line.strip()]
groups = collections.defaultdict(list)
for r in rows:
    groups[(r["system"], r["loader"], r.get("accounts", 1), r["cores"], r["size"], r["conns"])].append(r)


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


def baseline(loader, size, conns):
    return S.get(("postfix", loader, 1, "-", size, conns))


def corerelay(cores, size, conns, accounts=1):
    return S.get(("corerelay", "corerelay", accounts, cores, size, conns))


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
lines += [
    "```",
    "",
    "Medians of the repeated runs. *accepted*: messages acknowledged per second by the relay "
    "(the load generator's count over its run time). *e2e*: messages counted by the sink per "
    "second, from the first send until the sink had them all. *250 p50/p99*: the latency of "
    "the reply to the end of DATA. *relay CPU*: CPU time of the relay (Postfix: every Postfix "
    "process; + OpenDKIM) per 1,000 messages; *tools CPU*: the same for the load generator and "
    "the sink, which share the cores. *peak PSS*: the largest summed proportional set size of "
    "the relay's processes, sampled every 0.5 s. *× Postfix*: corerelay over Postfix in the "
    "same session (throughput), Postfix over corerelay (CPU). *lost*: messages the sink had not "
    "counted when the run's wait ended; *failed runs*: runs in which nothing was acknowledged "
    "(explained in failures.txt), left out of the medians.",
    "",
    "| system | loader | size | conns | accepted msg/s | e2e msg/s | 250 p50 ms | 250 p99 ms "
    "| relay CPU ms / 1k | tools CPU ms / 1k | peak PSS MiB | e2e × Postfix | CPU ÷ Postfix | lost | failed runs |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
order = {"corerelay": 0, "postfix": 1, "postfix+opendkim": 2}
keys = sorted(S, key=lambda k: (k[1] != "corerelay", k[2], k[4], k[5], order.get(k[0], 9), k[3] != "all"))
for k in keys:
    system, loader, accounts, cores, size, conns = k
    s = S[k]
    b = baseline(loader, size, conns)
    e2e_x = ratio(s["e2e"], b and b["e2e"]) if system == "corerelay" else None
    cpu_x = ratio(b and b["cpu"], s["cpu"]) if system == "corerelay" else None
    lines.append(
        f"| {system_name(system, accounts, cores)} | {loader} | {size_name(size)} | {conns} | {fmt(s['accepted'], '.0f')} "
        f"| {fmt(s['e2e'], '.0f')} | {fmt(s['p50'], '.2f')} | {fmt(s['p99'], '.2f')} | {fmt(s['cpu'], '.0f')} "
        f"| {fmt(s['tools'], '.0f')} | {fmt(s['mem'], '.0f')} | {fmt(e2e_x, '.1f')} | {fmt(cpu_x, '.1f')} | {s['lost']} | {s['failed']} |"
    )

def target(text, value, goal, better_low=False, unit=""):
    if value is None:
        return f"- {text}: not measured in this run"
    met = value <= goal if better_low else value >= goal
    return f"- {text}: **{value:.2f}{unit}** (target {'≤' if better_low else '≥'} {goal}{unit}) — {'met' if met else 'missed'}"


def targets():
    """The issue's targets, from the same medians."""
    out = ["", "## Targets", ""]
    conns_20k = sorted({k[5] for k in S if k[4] == 20480})
    spreads = sorted({k[2] for k in S if k[2] > 1})
    for conns in conns_20k:
        c, b = corerelay("all", 20480, conns), baseline("corerelay", 20480, conns)
        out.append(target(f"plain relay, 20 KB, {conns} conns, e2e corerelay ÷ Postfix", ratio(c and c["e2e"], b and b["e2e"]), 8, unit="×"))
        for n in spreads:
            c = corerelay("all", 20480, conns, n)
            if c:
                out.append(target(f"the same, load over {n} accounts", ratio(c["e2e"], b and b["e2e"]), 8, unit="×"))
    for conns in conns_20k:
        for n in [1] + spreads:
            a, o = corerelay("all", 20480, conns, n), corerelay("1", 20480, conns, n)
            if a or n == 1:
                what = "one account" if n == 1 else f"{n} accounts"
                out.append(target(f"20 KB, {conns} conns, {what}: all cores ÷ one core (e2e)", ratio(a and a["e2e"], o and o["e2e"]), 1.8, unit="×"))
    for size in sorted({k[4] for k in S}):
        a = corerelay("all", size, 50)
        out.append(target(f"250 p99 under 50 conns, {size_name(size)}, all cores", a and a["p99"], 5, better_low=True, unit=" ms"))
    return out


if any(k[0] == "corerelay" for k in S):
    lines += targets()
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
