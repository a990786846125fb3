#!/usr/bin/env bash
# Soak test: `corerelay load` → `corerelay serve` → `corerelay sink`, all on 127.0.0.1, for a
# bounded time with faults injected, then a check that nothing acknowledged was lost.
#
# Faults: the sink refuses --fail PCT percent of messages at random (451 or 550), the sink
# is restarted at 1/4 and 3/4 of the run (down 5 s each time), and the relay is killed
# with SIGKILL and restarted at 1/2. After the load stops, the sink comes back without
# random failures and the relay drains its queue (at most --drain-minutes).
#
# The check: every message acknowledged with 250 (the load tool's ack logs) ended as
# delivered (in the sink's maildir) or failed (refused with 5xx, noted by the sink); none
# is missing. Copies beyond one (at-least-once across the kill) are counted. The relay's
# RSS and open descriptors are sampled every 5 s from /proc. Flat means: at the last sample
# of each run of the relay (drained, for the final run) fds are within +32 and RSS within
# 1.5x + 32 MiB of the first sample after a 30 s warm-up, and fds never exceed that first
# sample plus the configured bound on outbound connections (256 per core) plus 64.
#
# Usage: scripts/soak.sh [--minutes 10] [--rate 200] [--fail 10] [--cores 2]
#                        [--drain-minutes 5] [--bin path/to/corerelay] [--keep]
# Prints the figures and exits non-zero when the check fails. Everything it starts stops
# with it; its work directory is removed unless --keep is given.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=10 rate=200 fail=10 cores=2 drain_minutes=5 bin="" keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --rate) rate="$2"; shift 2 ;;
        --fail) fail="$2"; shift 2 ;;
        --cores) cores="$2"; shift 2 ;;
        --drain-minutes) drain_minutes="$2"; shift 2 ;;
        --bin) bin="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin=target/release/corerelay
fi
ulimit -n 65536 2>/dev/null || true
ulimit -l unlimited 2>/dev/null || true

work=$(mktemp -d /tmp/corerelay-soak.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -f "$work/relay.pid" ] && kill -9 "$(cat "$work/relay.pid")" 2>/dev/null || true
    [ -f "$work/sink.pid" ] && kill -9 "$(cat "$work/sink.pid")" 2>/dev/null || true
    if [ "$keep" = 1 ]; then echo "soak: work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
relay_port=$(free_port)
sink_port=$(free_port)
cat > "$work/relay.toml" <<EOF
[server]
cores = $cores
pin = false
hostname = "soak.relay"
io_memory_bytes = 1048576
[smtp]
listen = "127.0.0.1:$relay_port"
[spool]
dir = "$work/spool"
[log]
dir = "$work/log"
[delivery]
smarthost = "127.0.0.1:$sink_port"
connect_timeout_ms = 2000
retry_schedule_ms = [1000, 2000, 5000]
idle_connection_ms = 1000
[[accounts]]
id = "soak"
networks = ["127.0.0.0/8"]
sender_domains = ["*"]
EOF

# Starts a server in the background, records its pid in $work/<name>.pid, waits for it to
# listen.
start() {
    local name=$1; shift
    # In a subshell, so the server is not a job of this shell (no "Killed" notices).
    ( "$@" > "$work/$name.out" 2>&1 & echo $! > "$work/$name.pid" )
    # Up to 60 s: a relay restarted after kill -9 first recovers its spool.
    for _ in $(seq 600); do
        grep -q "listening on" "$work/$name.out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "soak: $name did not start:" >&2; cat "$work/$name.out" >&2; exit 1
}
start_sink() { start sink "$bin" sink --listen "127.0.0.1:$sink_port" --maildir "$work/maildir" --random-fail "$1"; }
start_relay() { start relay "$bin" serve --config "$work/relay.toml"; }

start_sink "$fail"
start_relay
echo "soak: relay 127.0.0.1:$relay_port ($cores cores) → sink 127.0.0.1:$sink_port; $minutes min at $rate msg/s, sink refusing $fail%"

# The sampler: one line per 5 s: time, relay pid, RSS KiB, open fds.
(
    while true; do
        p=$(cat "$work/relay.pid" 2>/dev/null || true)
        if [ -n "$p" ] && [ -d "/proc/$p" ]; then
            rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
            fds=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
            echo "$(date +%s) $p $rss $fds" >> "$work/samples"
        fi
        sleep 5
    done
) &
pids+=($!)
disown $!

# The load: 30-second batches until the time is up; each batch writes its own ack log.
end=$(( $(date +%s) + minutes * 60 ))
(
    i=0
    while [ "$(date +%s)" -lt "$end" ]; do
        "$bin" load --target "127.0.0.1:$relay_port" --messages $((rate * 30)) --concurrency 8 \
            --rate "$rate" --size 1024 --retry-ms 60000 --ack-log "$work/acked.$i" --json \
            >> "$work/load.jsonl" 2>> "$work/load.err" || true
        i=$((i + 1))
    done
) &
load_pid=$!
pids+=($load_pid)

at() { sleep $(( ($1 * minutes * 60) / 4 )); }
(
    at 1; echo "soak: restarting the sink"; kill "$(cat "$work/sink.pid")"; sleep 5; start_sink "$fail"
) &
pids+=($!)
(
    at 2; echo "soak: kill -9 of the relay, restart"; kill -9 "$(cat "$work/relay.pid")"; sleep 1; start_relay
) &
pids+=($!)
(
    at 3; echo "soak: restarting the sink"; kill "$(cat "$work/sink.pid")"; sleep 5; start_sink "$fail"
) &
pids+=($!)

wait "$load_pid"
wait "${pids[@]:2}" 2>/dev/null || true
echo "soak: load done; sink back without random failures; draining"
kill "$(cat "$work/sink.pid")"; sleep 1; start_sink 0

analyse() {
    python3 - "$work" "$1" "$cores" <<'PY'
import glob, json, os, sys
work, final, cores = sys.argv[1], sys.argv[2] == "final", int(sys.argv[3])
acked = []
for f in glob.glob(f"{work}/acked.*"):
    acked += [l.strip() for l in open(f) if l.strip()]
delivered = {}
for f in os.scandir(f"{work}/maildir/new"):
    with open(f.path, "rb") as h:
        head = h.read(4096).split(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n"):
        if line.startswith(b"X-Load-Id: "):
            i = line[11:].decode().strip()
            delivered[i] = delivered.get(i, 0) + 1
failed = set()
if os.path.exists(f"{work}/maildir/refused.log"):
    for line in open(f"{work}/maildir/refused.log"):
        code, _, i = line.strip().partition(" ")
        if code.startswith("5"):
            failed.add(i)
acked_set = set(acked)
unfinished = [i for i in acked_set if i not in delivered and i not in failed]
if not final:
    print(len(unfinished)); sys.exit(0)
dups = sum(n - 1 for n in delivered.values())
both = len([i for i in failed if i in delivered])
loads = [json.loads(l) for l in open(f"{work}/load.jsonl") if l.strip()]
samples = [l.split() for l in open(f"{work}/samples")] if os.path.exists(f"{work}/samples") else []
runs = {}
for t, pid, rss, fds in samples:
    runs.setdefault(pid, []).append((int(t), int(rss), int(fds)))
print(f"soak: acknowledged {len(acked)} ({len(acked_set)} distinct) in {len(loads)} load batches; "
      f"refused by the relay {sum(l['refused'] for l in loads)}, connection errors {sum(l['errors'] for l in loads)}, "
      f"abandoned {sum(l['abandoned'] for l in loads)}")
print(f"soak: delivered {len([i for i in acked_set if i in delivered])}, failed (5xx) {len([i for i in acked_set if i in failed and i not in delivered])}, "
      f"unfinished {len(unfinished)}; extra copies {dups}, delivered and also failed {both}")
ok = not unfinished and len(set(acked)) == len(acked)
for n, (pid, s) in enumerate(sorted(runs.items(), key=lambda kv: kv[1][0][0])):
    warm = [x for x in s if x[0] >= s[0][0] + 30] or s
    rss0, fds0 = warm[0][1], warm[0][2]
    rss_max, fds_max = max(x[1] for x in warm), max(x[2] for x in warm)
    rss_last, fds_last = s[-1][1], s[-1][2]
    flat = (fds_last <= fds0 + 32 and rss_last <= rss0 * 1.5 + 32 * 1024
            and fds_max <= fds0 + 256 * cores + 64)
    ok &= flat
    print(f"soak: relay run {n + 1} (pid {pid}, {len(s)} samples over {s[-1][0] - s[0][0]} s): "
          f"RSS after warm-up {rss0} KiB, max {rss_max} KiB, last {s[-1][1]} KiB; fds {fds0}, max {fds_max}, last {s[-1][2]}: "
          f"{'flat' if flat else 'NOT FLAT'}")
if unfinished:
    print("soak: unfinished (lost or still queued):", sorted(unfinished)[:20])
print("soak: PASS" if ok else "soak: FAIL")
sys.exit(0 if ok else 1)
PY
}

deadline=$(( $(date +%s) + drain_minutes * 60 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
    left=$(analyse check)
    [ "$left" = 0 ] && break
    sleep 10
done
sleep 10  # a last sample of the drained relay
analyse final
