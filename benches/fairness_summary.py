#!/usr/bin/env python3
"""Summarizes a benches/fairness.sh run directory: raw.jsonl -> summary.md.

For each system and placement: the small accounts' end-to-end p50/p99 (sent -> arrived at
the sink) when they trickle alone (idle) and beside the big account (mixed), over all the
small accounts' messages (their X-Load-Group), and the big account's delivered throughput (the sink's rate
between its first and last arrival) alone (solo) and beside the trickle (mixed). Medians
over repeats. Targets: small p99 mixed <= 2 x idle; big mixed >= 90 % of solo.
A second table pools the small accounts' latencies over all repeats (the sink writes the
group's samples), so its p99 rests on every repeat's messages rather than on the median of
per-repeat p99s, each of which is one of a few hundred messages' three slowest.

With fairness.sh --max-steal P (settings.json), a repeat of a placement (its solo, idle and
mixed runs) during which the hypervisor stole P % or more of a CPU's time in one of its runs is
disturbed: the verdict tables leave it out (fairness.sh ran it again), a pooled table of
every repeat shows what it would have changed, and the per-run table marks it.
"""

import json
import re
import statistics
import sys
from pathlib import Path

BUCKET = re.compile(
    r'^corerelay_account_delivery_seconds_bucket\{core="\d+",account="(?P<account>[^"]+)",le="(?P<le>[^"]+)"\} (?P<n>\d+)'
)


def disk(row):
    """The spool disk's mean time per write and per cache flush during a run, in ms; runs
    recorded before fairness.sh measured it show a dash."""
    d = row.get("disk") or {}

    def ms(key):
        return "–" if d.get(key) is None else f"{d[key]:.2f}"

    return f"{ms('write_ms')} / {ms('flush_ms')}"


def steal(row):
    """Each CPU's steal during a run, in % (the host's other tenants took that share of
    the CPU's time); runs recorded before fairness.sh measured it show a dash."""
    st = row.get("steal_pct")
    if not st:
        return "–"
    return " / ".join(f"{st[cpu]:.1f}" for cpu in sorted(st, key=lambda c: int(c[3:])))


def smalls(row):
    return [a for a in row["sink"].get("accounts", []) if a["account"].startswith("small")]


def small_group(row):
    """All small accounts' messages together (X-Load-Group), else the worst account."""
    group = [a for a in row["sink"].get("accounts", []) if a["account"] == "group:small"]
    if group:
        return group[0]
    worst = max(smalls(row), key=lambda a: a["p99_ms"], default=None)
    return worst


def big(row):
    return next((a for a in row["sink"].get("accounts", []) if a["account"] == "big"), None)


def load_account(row, name):
    return next((a for a in row["load"].get("accounts", []) if a["account"] == name), None)


def delivery_buckets(path, prefix):
    """corerelay_account_delivery_seconds' cumulative buckets of a saved /metrics page, summed
    over the accounts named `prefix`* and the cores; empty when the file is missing."""
    buckets = {}
    if not path.exists():
        return buckets
    for line in path.read_text().splitlines():
        m = BUCKET.match(line)
        if m and m["account"].startswith(prefix):
            le = float("inf") if m["le"] == "+Inf" else float(m["le"])
            buckets[le] = buckets.get(le, 0) + int(m["n"])
    return buckets


def relay_quantiles(path, before, prefix="small"):
    """p50 and p99 (ms) of the relay's own time for the accounts named `prefix`*:
    corerelay_account_delivery_seconds (end of data at the relay to the sink's 2xx) at the end
    of the run minus what the warm-up left in it (`before`, saved after the warm-up),
    interpolated within a bucket as Prometheus' histogram_quantile does. None when the
    series is missing."""
    buckets = delivery_buckets(path, prefix)
    warm = delivery_buckets(before, prefix)
    buckets = {le: n - warm.get(le, 0) for le, n in buckets.items()}
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return None
    total = buckets[bounds[-1]]

    def quantile(q):
        rank, lower, below = q * total, 0.0, 0
        for le in bounds:
            if buckets[le] >= rank:
                if le == float("inf"):
                    return lower * 1000
                share = (rank - below) / max(buckets[le] - below, 1)
                return (lower + (le - lower) * share) * 1000
            lower, below = le, buckets[le]
        return lower * 1000

    return quantile(0.5), quantile(0.99)


def pooled(rows):
    """Every small-group latency (ms) of these runs together; None when a run has no samples
    (recorded before the sink wrote them)."""
    samples = []
    for r in rows:
        group = small_group(r) or {}
        if "latencies_us" not in group:
            return None
        samples += [v / 1000 for v in group["latencies_us"]]
    return sorted(samples) if samples else None


def nearest_rank(sorted_values, q):
    """The sink's percentile: nearest rank."""
    rank = min(max(int(-(-len(sorted_values) * q // 1)), 1), len(sorted_values))
    return sorted_values[rank - 1]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, unit=""):
    return "–" if v is None else f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"


def disturbed_repeats(rows, limit):
    """(system, placement, repeat) of every repeat with steal >= limit % on a CPU in one of
    its runs; empty when no limit was set."""
    if not limit:
        return set()
    return {
        (r["system"], r["placement"], r["repeat"])
        for r in rows
        if max((r.get("steal_pct") or {}).values(), default=0) >= limit
    }


def main():
    out = Path(sys.argv[1])
    all_rows = [json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines() if line.strip()]
    settings = out / "settings.json"
    limit = json.loads(settings.read_text()).get("max_steal_pct") if settings.exists() else None
    disturbed = disturbed_repeats(all_rows, limit)
    rows = [r for r in all_rows if (r["system"], r["placement"], r["repeat"]) not in disturbed]
    keys = []
    for r in rows:
        k = (r["system"], r["placement"])
        if k not in keys:
            keys.append(k)
    lines = [
        "# Fairness: small accounts' latency and the big account's throughput",
        "",
        (out / "machine.txt").read_text().strip().replace("\n", "  \n"),
        "",
        "Small accounts: end-to-end latency (load send time -> arrival at the sink) over all",
        "small accounts' messages together, median over repeats. Big account: delivered messages/s at the",
        "sink (first to last arrival). The 250 columns are the small accounts' reply latency",
        "at the load tool (worst p99).",
        "",
        *(
            [
                f"Disturbed repeats (steal ≥ {limit} % of a CPU's time in one of their runs), left out of",
                "the verdicts and rerun: "
                + (", ".join(f"{s} {p} {n}" for s, p, n in sorted(disturbed)) or "none")
                + ".",
                "",
            ]
            if limit
            else []
        ),
        "| system | placement | small p50 idle | small p99 idle | small p50 mixed | small p99 mixed | p99 mixed/idle (target ≤ 2) | small 250 p99 idle / mixed | big solo msg/s | big mixed msg/s | mixed/solo (target ≥ 0.90) | small msgs (idle / mixed) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    def runs(system, placement, kind, rows=rows):
        return [r for r in rows if r["system"] == system and r["placement"] == placement and r["run"] == kind]

    for system, placement in keys:
        idle, solo, mixed = (runs(system, placement, k) for k in ("small", "big", "both"))
        worst = lambda rs, f: median([(small_group(r) or {}).get(f) for r in rs])
        p50_idle, p99_idle = worst(idle, "p50_ms"), worst(idle, "p99_ms")
        p50_mixed, p99_mixed = worst(mixed, "p50_ms"), worst(mixed, "p99_ms")
        reply = lambda rs: median(
            [max((load_account(r, a["account"]) or {}).get("p99_ms", 0) for a in smalls(r)) for r in rs if smalls(r)]
        )
        big_rate = lambda rs: median([(big(r) or {}).get("messages_per_second") for r in rs])
        solo_rate, mixed_rate = big_rate(solo), big_rate(mixed)
        count = lambda rs: median([sum(a["messages"] for a in smalls(r)) for r in rs])
        ratio = None if not p99_idle or p99_mixed is None else p99_mixed / p99_idle
        share = None if not solo_rate or mixed_rate is None else mixed_rate / solo_rate
        ok = lambda v, good: "–" if v is None else f"{v:.2f} {'✓' if good(v) else '✗'}"
        lines.append(
            f"| {system} | {placement} | {fmt(p50_idle, ' ms')} | {fmt(p99_idle, ' ms')} | {fmt(p50_mixed, ' ms')} "
            f"| {fmt(p99_mixed, ' ms')} | {ok(ratio, lambda v: v <= 2)} | {fmt(reply(idle), ' ms')} / {fmt(reply(mixed), ' ms')} "
            f"| {fmt(solo_rate)} | {fmt(mixed_rate)} | {ok(share, lambda v: v >= 0.9)} | {fmt(count(idle))} / {fmt(count(mixed))} |"
        )
    def pooled_table(rows):
        table = []
        for system, placement in keys:
            idle_runs, mixed_runs = runs(system, placement, "small", rows), runs(system, placement, "both", rows)
            idle, mixed = pooled(idle_runs), pooled(mixed_runs)
            if not idle or not mixed:
                continue
            i99, m99 = nearest_rank(idle, 0.99), nearest_rank(mixed, 0.99)
            ratio = m99 / i99 if i99 else None
            verdict = "–" if ratio is None else f"{ratio:.2f} {'✓' if ratio <= 2 else '✗'}"
            table.append(
                f"| {system} | {placement} | {len(idle_runs)} / {len(mixed_runs)} | {len(idle)} / {len(mixed)} "
                f"| {fmt(nearest_rank(idle, 0.5), ' ms')} / {fmt(nearest_rank(mixed, 0.5), ' ms')} "
                f"| {fmt(i99, ' ms')} | {fmt(m99, ' ms')} | {verdict} |"
            )
        return table

    pooled_lines = pooled_table(rows)
    pooled_all = pooled_table(all_rows) if disturbed else []
    if pooled_lines:
        lines += [
            "",
            "Pooled over repeats: every small-account message of the idle runs together and of the",
            "mixed runs together (nearest-rank percentiles, as the sink's).",
            "",
            "| system | placement | runs (idle / mixed) | messages (idle / mixed) | p50 idle / mixed | p99 idle | p99 mixed | p99 mixed/idle (target ≤ 2) |",
            "|---|---|---:|---:|---|---:|---:|---:|",
            *pooled_lines,
        ]
    if pooled_all:
        lines += [
            "",
            "The same pooled over every repeat, the disturbed ones included (not the verdict):",
            "",
            "| system | placement | runs (idle / mixed) | messages (idle / mixed) | p50 idle / mixed | p99 idle | p99 mixed | p99 mixed/idle |",
            "|---|---|---:|---:|---|---:|---:|---:|",
            *pooled_all,
        ]
    lines += [
        "",
        "The relay's own share of the small accounts' latency: corerelay_account_delivery_seconds",
        "(end of data at the relay to the sink's 2xx, so the load tool's SMTP client and the sink's",
        "arrival stamp are left out), summed over the small accounts, the warm-up messages",
        "subtracted (a snapshot after the warm-up; runs recorded before fairness.sh took it",
        "include them), median over repeats; p99 is interpolated within the histogram's buckets.",
        "",
        "| placement | relay p50 idle | relay p99 idle | relay p50 mixed | relay p99 mixed | p99 mixed/idle |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for system, placement in keys:
        if system != "corerelay":
            continue
        repeats = sorted({r["repeat"] for r in rows if r["system"] == system and r["placement"] == placement})

        def relay(what, i):
            qs = [
                relay_quantiles(
                    out / f"metrics-corerelay-{placement}-{what}-{r}.txt",
                    out / f"metrics-corerelay-{placement}-{what}-{r}-before.txt",
                )
                for r in repeats
            ]
            return median([q[i] for q in qs if q])

        p50_idle, p99_idle, p50_mixed, p99_mixed = relay("idle", 0), relay("idle", 1), relay("mixed", 0), relay("mixed", 1)
        ratio = None if not p99_idle or p99_mixed is None else p99_mixed / p99_idle
        lines.append(
            f"| {placement} | {fmt(p50_idle, ' ms')} | {fmt(p99_idle, ' ms')} | {fmt(p50_mixed, ' ms')} "
            f"| {fmt(p99_mixed, ' ms')} | {'–' if ratio is None else f'{ratio:.2f}'} |"
        )
    lines += [
        "",
        "Per run (raw.jsonl has everything). *Disk ms*: the spool disk's mean time per write and per",
        "cache flush during the run (/sys/class/block/<dev>/stat); a run another tenant of the",
        "machine slowed down stands out there. *Steal %*: each CPU's (cpu0 / cpu1 …) time the",
        "hypervisor gave to other tenants while this VM had work (/proc/stat).",
        "",
    ]
    lines.append("| system | placement | run | repeat | seconds | delivered | disk ms (write / flush) | steal % | accounts at the sink (messages, rate/s, p50/p99/max ms) |")
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---|")
    for r in all_rows:
        accts = "; ".join(
            f"{a['account']} {a['messages']}, {a['messages_per_second']:.0f}/s, {a['p50_ms']:.1f}/{a['p99_ms']:.1f}/{a['max_ms']:.1f}"
            for a in r["sink"].get("accounts", [])
        )
        mark = " (disturbed)" if (r["system"], r["placement"], r["repeat"]) in disturbed else ""
        lines.append(
            f"| {r['system']} | {r['placement']} | {r['run']} | {r['repeat']}{mark} | {r['seconds']:.1f} | {r['delivered']} "
            f"| {disk(r)} | {steal(r)} | {accts} |"
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    table_end = next(i for i, line in enumerate(lines) if line.startswith("| system | placement | small p50")) + 2 + len(keys)
    print("\n".join(lines[:table_end]))
    if pooled_lines:
        print("\n".join(["", "pooled over repeats:", *pooled_lines]))
    if pooled_all:
        print("\n".join(["", "pooled over every repeat, the disturbed ones included:", *pooled_all]))


if __name__ == "__main__":
    main()
