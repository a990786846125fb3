#!/usr/bin/env bash
# Where a message's CPU time goes in the relay: one load run (sink ← relay --smarthost ← load,
# on 127.0.0.1) with the relay profiled.
#
#   perf (default): `perf record -e cpu-clock -g` on the relay's threads, split by
#     benches/perf_split.py into user functions and kernel entry paths, in µs per message.
#     Needs perf; a software clock is used because VMs often have no hardware counters.
#   --callgrind: the relay under valgrind's callgrind (slow: ~30× fewer messages per second),
#     counters zeroed when the load starts, self instructions per function per message from
#     benches/callgrind_top.py. Exact and repeatable: for before/after comparisons.
#
# usage: benches/profile.sh [--size BYTES] [--conns C] [--cores all|N] [--messages N]
#                           [--callgrind] [--out DIR]
# Writes DIR (default target/profile) with the raw data and split.md. Every process it starts
# is stopped by it.
set -euo pipefail
cd "$(dirname "$0")/.."

size=20480
conns=10
cores=all
messages=20000
mode=perf
out=target/profile
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    --callgrind) mode=callgrind; shift ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ "$mode" = callgrind ]; then
  # glommio's start-up stalls under valgrind with more than one executor; one core, fewer messages.
  cores=1
  [ "$messages" -gt 3000 ] && messages=3000
fi

cargo build --release --quiet
bin=$PWD/target/release/corerelay
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d -p "$PWD/target" profile.XXXXXX)
pids=()
cleanup() {
  set +e
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=benches/lib.sh
. benches/lib.sh

"$bin" sink --listen 127.0.0.1:0 > "$work/sink.out" 2>&1 &
sink_pid=$!; pids+=("$sink_pid")
sink_addr=$(addr_of "$work/sink.out" 1200)
relay=("$bin" serve --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --cores "$cores" --smarthost "$sink_addr"
       --spool-dir "$work/spool" --log-dir "$work/log")
if [ "$mode" = callgrind ]; then
  relay=(valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" "${relay[@]}")
fi
"${relay[@]}" > "$work/relay.out" 2>&1 &
relay_pid=$!; pids+=("$relay_pid")
relay_addr=$(addr_of "$work/relay.out" 1200)

if [ "$mode" = perf ]; then
  perf record -e cpu-clock -F 2000 -g -p "$relay_pid" -o "$out/perf.data" 2> "$work/perf.err" &
  perf_pid=$!; pids+=("$perf_pid")
  sleep 0.5
else
  callgrind_control -z "$relay_pid" >/dev/null
fi
cpu0=$(python3 benches/proctree.py cpu "$relay_pid")
load=("$bin" load --target "$relay_addr" --messages "$messages" --concurrency "$conns" --size "$size")
"${load[@]}" | tee "$out/load.txt"
for _ in $(seq 1 1200); do
  kill -USR1 "$sink_pid"; sleep 0.05
  grep -q "messages=$messages " "$work/sink.out" && break
done
cpu1=$(python3 benches/proctree.py cpu "$relay_pid")
cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{print b-a}')
{
  echo "# profile: $mode, size $size, $conns connections, cores $cores, $messages messages"
  echo "commit $(git rev-parse --short HEAD); $(date -u +%FT%TZ); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "relay: ${relay[*]}"; echo "load: ${load[*]}"; echo
} > "$out/split.md"
if [ "$mode" = perf ]; then
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  perf script -i "$out/perf.data" -F comm,tid,ip,sym 2>/dev/null | python3 benches/perf_split.py "$cpu_s" "$messages" >> "$out/split.md"
else
  callgrind_control -d "$relay_pid" >/dev/null
  sleep 2
  python3 benches/callgrind_top.py "$(ls -t "$out"/callgrind.out.* | head -1)" "$messages" 30 >> "$out/split.md"
fi
cat "$out/split.md"
