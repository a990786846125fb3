#!/usr/bin/env bash
# End-to-end load run: `corerelay sink` ← `corerelay serve --smarthost` ← `corerelay load`, all on
# loopback, for a matrix of message sizes and connection counts. Writes a results folder
# benches/runs/<date>-<host>/ with the exact commands, the commit, CPU, kernel, raw JSON lines and
# a summary table. Every process is started and stopped by this script; it never leaves anything
# running and sends traffic only to 127.0.0.1.
#
# usage: benches/e2e.sh [--messages N] [--sizes "2048 20480"] [--conns "1 10 50"] [--cores "all 1"]
#                       [--repeat R] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

messages=20000
sizes="2048 20480 102400"
conns="1 10 50"
cores_list="all 1"
repeat=3
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --cores) cores_list=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

cargo build --release --quiet
bin=$PWD/target/release/corerelay
stamp=$(date -u +%Y-%m-%d)
out=${out:-benches/runs/$stamp-$(hostname -s)}
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

{
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
  echo "date: $(date -u +%FT%TZ)"
  echo "kernel: $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) x $(nproc)"
  echo "memory: $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "disk (spool): $(df -h "$work" | awk 'NR==2{print $1" "$2}')"
  echo "memlock: $(ulimit -l)  nofile: $(ulimit -n)  somaxconn: $(cat /proc/sys/net/core/somaxconn)"
} > "$out/machine.txt"
: > "$out/commands.txt"
: > "$out/raw.jsonl"

# Waits for a process to print its "listening on ADDR" line and echoes ADDR.
addr_of() {
  local file=$1
  for _ in $(seq 1 200); do
    if grep -q "listening on" "$file" 2>/dev/null; then
      grep -m1 "listening on" "$file" | sed 's/.*listening on \([^ ]*\).*/\1/'
      return 0
    fi
    sleep 0.05
  done
  echo "no listening line in $file:" >&2; cat "$file" >&2; return 1
}

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

for cores in $cores_list; do
  for size in $sizes; do
    for c in $conns; do
      for r in $(seq 1 "$repeat"); do
        rm -rf "$work/spool" "$work/log"
        "$bin" sink --listen 127.0.0.1:0 > "$work/sink.out" 2>&1 &
        sink_pid=$!; pids+=("$sink_pid")
        sink_addr=$(addr_of "$work/sink.out")
        relay_cmd=("$bin" serve --listen 127.0.0.1:0 --cores "$cores" --smarthost "$sink_addr"
                   --spool-dir "$work/spool" --log-dir "$work/log")
        "${relay_cmd[@]}" > "$work/relay.out" 2>&1 &
        relay_pid=$!; pids+=("$relay_pid")
        relay_addr=$(addr_of "$work/relay.out")
        load_cmd=("$bin" load --target "$relay_addr" --messages "$messages" --concurrency "$c" --size "$size" --json)
        [ "$r" = 1 ] && printf '%s\n%s\n%s\n\n' "sink --listen 127.0.0.1:0" "${relay_cmd[*]}" "${load_cmd[*]}" >> "$out/commands.txt"
        t0=$(cpu_ticks "$relay_pid")
        report=$("${load_cmd[@]}")
        # Wait until the sink has everything (end-to-end), at most 60 s.
        for _ in $(seq 1 1200); do
          n=$(cat "$work"/log/*.log 2>/dev/null | grep -c '"event":"delivered"' || true)
          [ "$n" -ge "$messages" ] && break
          sleep 0.05
        done
        t1=$(cpu_ticks "$relay_pid")
        rss_kb=$(awk '/VmHWM/{print $2}' "/proc/$relay_pid/status")
        hz=$(getconf CLK_TCK)
        cpu_ms_per_1k=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$messages" 'BEGIN{printf "%.1f", (b-a)*1000/hz/n*1000}')
        kill -9 "$relay_pid" 2>/dev/null || true
        kill -INT "$sink_pid" 2>/dev/null || true
        wait "$relay_pid" "$sink_pid" 2>/dev/null || true
        # The sink's rate runs from the first to the last message it received: end to end.
        e2e=$(sed -n 's/.*rate=\([0-9]*\)\/s.*/\1/p' "$work/sink.out"); e2e=${e2e:-0}
        echo "{\"system\":\"corerelay\",\"cores\":\"$cores\",\"size\":$size,\"conns\":$c,\"run\":$r,\"relay_cpu_ms_per_1k\":$cpu_ms_per_1k,\"relay_peak_rss_kb\":$rss_kb,\"delivered\":$n,\"e2e_per_second\":$e2e,\"load\":$report}" >> "$out/raw.jsonl"
        echo "cores=$cores size=$size conns=$c run=$r: $report"
      done
    done
  done
done

python3 - "$out" <<'PY'
import json, sys, statistics, collections
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/raw.jsonl")]
groups = collections.defaultdict(list)
for r in rows:
    groups[(r["system"], r["cores"], r["size"], r["conns"])].append(r)
lines = ["| system | cores | size | conns | accepted msg/s | delivered msg/s | 250 p50 ms | 250 p99 ms | relay CPU ms / 1k msgs | peak RSS MiB |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for (system, cores, size, conns), rs in sorted(groups.items()):
    med = lambda f: statistics.median(f(r) for r in rs)
    lines.append(f"| {system} | {cores} | {size} | {conns} | {med(lambda r: r['load']['messages_per_second']):.0f} | {med(lambda r: r['e2e_per_second']):.0f} | "
                 f"{med(lambda r: r['load']['p50_ms']):.2f} | {med(lambda r: r['load']['p99_ms']):.2f} | "
                 f"{med(lambda r: r['relay_cpu_ms_per_1k']):.0f} | {med(lambda r: r['relay_peak_rss_kb'])/1024:.0f} |")
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "results in $out"
