#!/usr/bin/env bash
# The fairness benchmark (issue 6), one command:
#
#   corerelay load (big + 5 small accounts, each from its own 127.0.0.x) ──▶ relay ──▶ corerelay sink
#
# One big account sends 50,000 messages as fast as the relay takes them while 5 small
# accounts each send a steady trickle (5 messages/s). The sink measures, per account, the
# end-to-end latency from the load's send time (X-Load-Sent-Us) to arrival, and the rate;
# the small accounts are one group (X-Load-Group), so their p99 is over all their messages.
# For each placement — the big account on a core of its own (`dedicated = true`, the small
# ones on the other core) and every account on core 0 — three runs:
#   idle   the small trickle alone: the small accounts' baseline latency;
#   solo   the big account alone: its baseline throughput;
#   mixed  both at once, the trickle lasting as long as the big run took solo (+2 s).
# Targets: small accounts' p99 ≤ 2 × idle, big ≥ 90 % of solo throughput. The same three
# runs through Postfix (Debian's package, a dedicated instance relaying to the same kind of
# sink) show a FIFO relay for contrast.
#
# Writes benches/runs/<date>-<host>-fairness/: machine.txt, commands.txt, raw.jsonl (one
# line per run: the sink's and the load's JSON reports), summary.md (benches/fairness_summary.py).
#
# Every process this script starts is stopped by it (trap); traffic goes only to 127.0.0.x;
# Postfix listens only on a loopback port. The Postfix rows need root (apt-get, postfix -c).
#
# usage: benches/fairness.sh [--big N] [--big-conns C] [--small-rate R] [--smalls K]
#                            [--size BYTES] [--repeat R] [--no-postfix] [--tools-cpus LIST]
#                            [--relay-extra TOML] [--big-rate R] [--placements LIST] [--bin PATH]
#                            [--big-nice N] [--instruments-nice N] [--max-steal P] [--out DIR]
#   --tools-cpus LIST  run the load generators and the sink under `taskset -c LIST` (e.g. 1:
#                      the CPU of corerelay's core 1, so core 0, where the small accounts
#                      live in both placements, runs only the relay). Default: not pinned.
#   --big-rate R       the big account sends R messages/s instead of as fast as taken (how
#                      the small accounts' latency grows with the big one's load).
#   --placements LIST  only these of "dedicated same-core" (e.g. same-core).
#   --bin PATH         run this corerelay binary (relay, load and sink) instead of building
#                      the work tree: for A/B runs of two builds, interleaved.
#   --big-nice N       run the big account's load generator under `nice -n N`, so on a CPU
#                      it shares with the sink and the small accounts' load generator those
#                      two measuring tools get the CPU first when they wake (round nine's
#                      r10; it also starves that generator where a relay core shares its
#                      CPU, as in the dedicated placement).
#   --instruments-nice N  run the sink and the small accounts' load generator (the tools
#                      that stamp the send and arrival times) under `nice -n N` (negative
#                      needs root), so on the tools CPU they get the CPU first when they wake,
#                      and the big account's generator competes with the relay as before.
#   --max-steal P      a repeat of a placement (its solo, idle and mixed runs) during which the
#                      hypervisor stole P % or more of a CPU's time in any of its runs (the
#                      host's other tenants; /proc/stat) is kept in raw.jsonl, marked disturbed
#                      in the summary, left out of its verdicts, and run again, up to --repeat
#                      extra times per placement. Default 0: no repeat is rerun or left out.
#   --relay-extra TOML put before the accounts in corerelay's configuration (an experiment,
#                      e.g. $'[fairness]\ndelivery_shares = 1000'); recorded in commands.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

big=50000
big_conns=16
small_rate=5
smalls=5
size=2048
repeat=1
postfix=1
tools_cpus=""
relay_extra=""
big_rate=0
big_nice=0
instruments_nice=0
max_steal=0
placements="dedicated same-core"
bin=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --big) big=$2; shift 2 ;;
    --big-conns) big_conns=$2; shift 2 ;;
    --small-rate) small_rate=$2; shift 2 ;;
    --smalls) smalls=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --no-postfix) postfix=0; shift ;;
    --tools-cpus) tools_cpus=$2; shift 2 ;;
    --relay-extra) relay_extra=$2; shift 2 ;;
    --big-rate) big_rate=$2; shift 2 ;;
    --big-nice) big_nice=$2; shift 2 ;;
    --instruments-nice) instruments_nice=$2; shift 2 ;;
    --max-steal) max_steal=$2; shift 2 ;;
    --placements) placements=$2; shift 2 ;;
    --bin) bin=$(realpath "$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# The load generators and the sink run under `taskset -c $tools_cpus` when it is given.
tools=()
[ -n "$tools_cpus" ] && tools=(taskset -c "$tools_cpus")

# shellcheck source=benches/lib.sh
. benches/lib.sh

# ---------------------------------------------------------------- Postfix (as benches/e2e.sh sets it up)
if [ "$postfix" = 1 ]; then
  [ "$(id -u)" = 0 ] || { echo "the Postfix runs need root (or pass --no-postfix)" >&2; exit 1; }
  if ! command -v postfix >/dev/null; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
  fi
  stop_system_postfix
fi

bin=$(release_bin "$bin")
stamp=$(date -u +%Y-%m-%d)
out=${out:-benches/runs/$stamp-$(hostname -s)-fairness}
mkdir -p "$out"
work=$(mktemp -d -p "$PWD/target" fairness.XXXXXX)
chmod 755 "$work"
pf_dir=$work/postfix
pids=()
cleanup() {
  set +e
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  stop_bench_postfix
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (dirty)')"
  echo "binary: $bin"
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(hostname -s)"
  echo "kernel: $(uname -r)"
  echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) x $(nproc)"
  echo "memory: $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "disk (spool and queue): $(df -h "$work" | awk 'NR==2{print $1" "$2}') $(findmnt -no FSTYPE -T "$work")"
  echo "rustc: $(rustc --version)"
  [ "$postfix" = 1 ] && echo "postfix: $(postconf -d -h mail_version)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "tools (load, sink) on CPUs: ${tools_cpus:-any (not pinned)}"
  echo "nice: sink and small accounts' load $instruments_nice, big account's load $big_nice"
  echo "disturbed: $([ "$max_steal" = 0 ] && echo "not judged (no --max-steal)" || echo "a repeat with steal >= $max_steal % on a CPU in one of its runs is left out of the verdicts and rerun")"
  echo "scenario: big $big messages of $size bytes over $big_conns connections $([ "$big_rate" = 0 ] && echo "as fast as taken" || echo "at $big_rate/s"); $smalls small accounts at $small_rate messages/s each over 1 connection"
} > "$out/machine.txt"
: > "$out/commands.txt"
: > "$out/raw.jsonl"
printf '{"max_steal_pct": %s}\n' "$max_steal" > "$out/settings.json"
note() { printf '%s\n' "$*" >> "$out/commands.txt"; }

# The sink, on $1; its per-account figures go to $work/sink.json on SIGUSR1/SIGINT.
start_sink() {
  rm -f "$work/sink.json"
  local niced=()
  [ "$instruments_nice" != 0 ] && niced=(nice -n "$instruments_nice")
  note "${niced[*]:+${niced[*]} }${tools[*]} $bin sink --listen $1 --json-summary sink.json"
  : > "$work/sink.out"
  "${niced[@]}" "${tools[@]}" "$bin" sink --listen "$1" --json-summary "$work/sink.json" > "$work/sink.out" 2>&1 &
  sink_pid=$!; pids+=("$sink_pid")
  sink_addr=$(addr_of "$work/sink.out")
}

# The sink's count so far (SIGUSR1 writes its JSON summary and it carries on).
sink_count() {
  kill -USR1 "$sink_pid"
  sleep 0.1
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["messages"])' "$work/sink.json" 2>/dev/null || echo 0
}

wait_delivered() {
  local want=$1 deadline=$((SECONDS + $2)) n
  n=$(sink_count)
  while [ "$n" -lt "$want" ] && [ $SECONDS -lt $deadline ]; do sleep 0.4; n=$(sink_count); done
  delivered=$n
}

# The load's account flags for "big" or "small"; $trickle_s: the small accounts' duration.
load_args() {
  local what=$1 args=()
  if [ "$what" = big ]; then
    args+=(--account "name=big,from=load@big.example,source=127.0.0.2,messages=$big,size=$size,concurrency=$big_conns,rate=$big_rate")
  fi
  if [ "$what" = small ]; then
    for i in $(seq 1 "$smalls"); do
      # Staggered within one period, as independent senders are; one group for the sink.
      local start_s
      start_s=$(awk -v i="$i" -v k="$smalls" -v r="$small_rate" 'BEGIN{printf "%.4f", (i - 1) / (k * r)}')
      args+=(--account "name=small$i,group=small,from=load@small$i.example,source=127.0.0.$((10 + i)),messages=0,size=$size,rate=$small_rate,concurrency=1,duration_s=$trickle_s,start_s=$start_s")
    done
  fi
  printf '%s\n' "${args[@]}"
}

# One message from each account first, named warm-<account> (the summary leaves them
# out): the relay's first spool segment, the outbound connection and the first commit are
# then behind us, as they are for a relay that has been running.
warm_up() {
  local target=$1 args=(--account "name=warm-big,from=load@big.example,source=127.0.0.2,messages=1,size=$size,concurrency=1")
  for i in $(seq 1 "$smalls"); do
    args+=(--account "name=warm-small$i,from=load@small$i.example,source=127.0.0.$((10 + i)),messages=1,size=$size,concurrency=1")
  done
  "${tools[@]}" "$bin" load --target "$target" --cores 1 --json "${args[@]}" > /dev/null 2>&1 || true
  wait_delivered $((smalls + 1)) 30
}

# Starts one load process (in the background) for the accounts of $2 (big|small) against $1;
# its JSON report goes to $work/load-$2.json. The big and the small accounts are separate
# processes, as separate customers are: the small senders never wait behind the big one's
# connections inside the load tool.
start_load() {
  local target=$1 what=$2 args
  mapfile -t args < <(load_args "$what")
  local niced=()
  [ "$what" = big ] && [ "$big_nice" != 0 ] && niced=(nice -n "$big_nice")
  [ "$what" = small ] && [ "$instruments_nice" != 0 ] && niced=(nice -n "$instruments_nice")
  note "${niced[*]:+${niced[*]} }${tools[*]} $bin load --target $target --cores 1 --json ${args[*]}"
  "${niced[@]}" "${tools[@]}" "$bin" load --target "$target" --cores 1 --json "${args[@]}" > "$work/load-$what.json" 2>"$work/load-$what.err" &
  load_pids+=($!)
}

# The spool disk's completed writes, their total time (ms), completed cache flushes and their
# total time (ms) since boot (/sys/class/block/<dev>/stat fields 5, 8, 16, 17); empty if unknown.
disk_stat() {
  local dev
  dev=$(basename "$(findmnt -no SOURCE -T "$work" 2>/dev/null)" 2>/dev/null)
  awk '{print $5, $8, $16, $17}' "/sys/class/block/$dev/stat" 2>/dev/null || true
}

# Runs one load against $1 ($2: big|small|both) and waits for the sink; appends a raw line.
run_one() {
  local system=$1 placement=$2 what=$3 target=$4
  warm_up "$target"
  # The relay's metrics after the warm-up: the summary subtracts them, so its relay-side
  # figures cover the measured messages only.
  [ -n "${before_file:-}" ] && [ -n "$metrics_addr" ] && curl -s "http://$metrics_addr/metrics" > "$before_file" || true
  local expect_small=0
  [ "$what" != big ] && expect_small=$(awk -v s="$smalls" -v r="$small_rate" -v d="$trickle_s" 'BEGIN{printf "%d", s*r*d*0.95}')
  rm -f "$work"/load-*.json
  load_pids=()
  local t0=$EPOCHREALTIME disk0 cpus0
  disk0=$(disk_stat)
  cpus0=$(cpu_stat)
  [ "$what" != small ] && start_load "$target" big
  [ "$what" != big ] && start_load "$target" small
  # A load that failed (nothing acknowledged, or an error) makes the repeat meaningless: stop.
  for p in "${load_pids[@]}"; do wait "$p" || { echo "a load failed: $(cat "$work"/load-*.err)" >&2; exit 1; }; done
  # One report with the accounts of both processes.
  local report
  report=$(python3 -c '
import json, pathlib, sys
reports = [json.loads(p.read_text() or "{}") for p in sorted(pathlib.Path(sys.argv[1]).glob("load-*.json"))]
print(json.dumps({"acked": sum(r.get("acked", 0) for r in reports),
                  "accounts": [a for r in reports for a in r.get("accounts", [])]}))' "$work")
  local acked
  acked=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("acked",0))' "$report")
  wait_delivered $((acked + smalls + 1)) 600
  local t1=$EPOCHREALTIME disk1 cpus1
  disk1=$(disk_stat)
  cpus1=$(cpu_stat)
  kill -USR1 "$sink_pid"; sleep 0.2
  local sink
  sink=$(cat "$work/sink.json")
  # The disk's mean time per write and per cache flush during the run: a run that another
  # tenant of the machine slowed down stands out here.
  local disk
  disk=$(awk -v x="$disk0" -v y="$disk1" 'BEGIN{
    n = split(x, a, " "); split(y, b, " ")
    if (n < 4) { print "null"; exit }
    w = b[1] - a[1]; f = b[3] - a[3]
    printf "{\"writes\":%d,\"write_ms\":%s,\"flushes\":%d,\"flush_ms\":%s}", w, (w ? sprintf("%.3f", (b[2]-a[2])/w) : "null"), f, (f ? sprintf("%.3f", (b[4]-a[4])/f) : "null") }')
  # Each CPU's steal during the run, in % of its time (the host's other tenants).
  local steal
  steal=$(steal_json "$cpus0" "$cpus1")
  printf '{"system":"%s","placement":"%s","run":"%s","repeat":%d,"seconds":%s,"delivered":%d,"expect_small_min":%d,"disk":%s,"steal_pct":%s,"sink":%s,"load":%s}\n' \
    "$system" "$placement" "$what" "$r" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')" "$delivered" "$expect_small" "$disk" "$steal" "$sink" "$report" >> "$out/raw.jsonl"
  echo "$system $placement $what (run $r): delivered $delivered in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
}

accounts_toml() {
  local placement=$1
  printf '[[accounts]]\nid = "big"\nnetworks = ["127.0.0.2/32"]\nsender_domains = ["big.example"]\n'
  [ "$placement" = dedicated ] && printf 'dedicated = true\n'
  [ "$placement" = same-core ] && printf 'core = 0\n'
  printf '\n'
  for i in $(seq 1 "$smalls"); do
    printf '[[accounts]]\nid = "small%d"\nnetworks = ["127.0.0.%d/32"]\nsender_domains = ["small%d.example"]\n' "$i" $((10 + i)) "$i"
    [ "$placement" = same-core ] && printf 'core = 0\n'
    printf '\n'
  done
}

run_corerelay() {
  local placement=$1 what=$2
  rm -rf "$work/spool" "$work/log"
  start_sink 127.0.0.1:0
  { [ -n "$relay_extra" ] && printf '%s\n\n' "$relay_extra"; accounts_toml "$placement"; } > "$work/accounts.toml"
  [ "$r" = 1 ] && [ "$what" = idle ] && sed "s/^/# $placement accounts.toml: /" "$work/accounts.toml" >> "$out/commands.txt"
  local cmd=("$bin" serve --config "$work/accounts.toml" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0
             --smarthost "$sink_addr" --spool-dir "$work/spool" --log-dir "$work/log")
  note "${cmd[*]}"
  : > "$work/relay.out"
  "${cmd[@]}" > "$work/relay.out" 2>&1 &
  local relay_pid=$!; pids+=("$relay_pid")
  local relay_addr
  relay_addr=$(addr_of "$work/relay.out")
  grep 'account big on' "$work/relay.out" >> "$out/commands.txt" || true
  metrics_addr=""
  for _ in $(seq 1 50); do
    metrics_addr=$(sed -n 's|.*metrics and health on http://\([0-9.]*:[0-9]*\)/metrics.*|\1|p' "$work/relay.out" | head -1)
    [ -n "$metrics_addr" ] && break
    sleep 0.1
  done
  before_file="$out/metrics-corerelay-$placement-$what-$r-before.txt"
  case $what in
    idle) run_one corerelay "$placement" small "$relay_addr" ;;
    solo) run_one corerelay "$placement" big "$relay_addr" ;;
    mixed) run_one corerelay "$placement" both "$relay_addr" ;;
  esac
  before_file=""
  # The relay's own view of the run (stage latencies per account, commit sizes, lateness).
  [ -n "$metrics_addr" ] && curl -s "http://$metrics_addr/metrics" > "$out/metrics-corerelay-$placement-$what-$r.txt" || true
  # With benches/stage-trace.patch built in and CORERELAY_DIAG=1, the per-message stage
  # trace of the small accounts (benches/stage_trace.py reads it), with the sink's arrivals.
  cat "$work/relay.out" "$work/sink.out" 2>/dev/null | grep "^DIAG" > "$out/diag-$placement-$what-$r.txt" \
    || rm -f "$out/diag-$placement-$what-$r.txt"
  kill -9 "$relay_pid" 2>/dev/null || true
  kill -INT "$sink_pid" 2>/dev/null || true
  wait "$relay_pid" "$sink_pid" 2>/dev/null || true
  note ""
}

# A dedicated Postfix instance in $pf_dir relaying everything to the sink: configure_postfix
# of benches/lib.sh, the same instance benches/e2e.sh measures.
pf_port=$(free_port)
pf_sink_port=$(free_port)
run_postfix() {
  local what=$1
  postfix -c "$pf_dir" stop >/dev/null 2>&1 || true
  postsuper -c "$pf_dir" -d ALL >/dev/null 2>&1 || true
  # The sink first: Postfix takes a refused connection as a dead destination for minutes.
  start_sink "127.0.0.1:$pf_sink_port"
  note "postfix -c $pf_dir start"
  postfix -c "$pf_dir" start >/dev/null 2>&1 || { echo "postfix did not start:" >&2; tail "$pf_dir/postfix.log" >&2; exit 1; }
  postqueue -c "$pf_dir" -f >/dev/null 2>&1 || true
  local master
  master=$(tr -d ' ' < "$pf_dir/queue/pid/master.pid")
  case $what in
    idle) run_one postfix - small "127.0.0.1:$pf_port" ;;
    solo) run_one postfix - big "127.0.0.1:$pf_port" ;;
    mixed) run_one postfix - both "127.0.0.1:$pf_port" ;;
  esac
  postfix -c "$pf_dir" stop >/dev/null 2>&1 || true
  for _ in $(seq 1 100); do pid_is "$master" master || break; sleep 0.05; done
  kill -INT "$sink_pid" 2>/dev/null || true
  wait "$sink_pid" 2>/dev/null || true
  note ""
}

# Seconds from a raw line of a solo run: the time until the sink had every big message.
solo_seconds() {
  python3 - "$out/raw.jsonl" "$1" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
row = [r for r in rows if r["system"] == sys.argv[2].split("/")[0] and r["placement"] == sys.argv[2].split("/")[1] and r["run"] == "big"][-1]
print(int(row["seconds"]) + 2)
EOF
}

# Whether the last three raw lines (one repeat of a placement) were disturbed: the summary's
# rule (fairness_summary.disturbed_repeats), so the script reruns what the summary leaves out.
# Exit 10: disturbed, 0: not; anything else (a Python error) stops the script rather than
# passing for "not disturbed".
disturbed() {
  [ "$max_steal" = 0 ] && return 1
  local rc=0
  tail -n 3 "$out/raw.jsonl" | python3 -c '
import json, sys
sys.path.insert(0, "benches")
from fairness_summary import disturbed_repeats
rows = [json.loads(line) for line in sys.stdin if line.strip()]
sys.exit(10 if disturbed_repeats(rows, float(sys.argv[1])) else 0)' "$max_steal" || rc=$?
  case $rc in
    0) return 1 ;;
    10) return 0 ;;
    *) echo "cannot judge the repeat's steal (exit $rc)" >&2; exit 1 ;;
  esac
}

# One repeat of a placement ("corerelay dedicated", "corerelay same-core" or "postfix -"):
# its solo, idle and mixed runs, again while disturbed (--max-steal), at most --repeat extra
# times per placement. $r numbers a placement's repeats as run, reruns included.
declare -A trials
run_repeat() {
  local system=$1 placement=$2 key="$1 $2"
  while :; do
    trials[$key]=$((${trials[$key]:-0} + 1)); r=${trials[$key]}
    [ "$system" = postfix ] && [ "$r" = 1 ] && configure_postfix
    for what in solo idle mixed; do
      # The trickle lasts as long as the big account took alone (+2 s); 20 s for the solo run.
      [ "$what" = solo ] && trickle_s=20 || trickle_s=$(solo_seconds "$system/$placement")
      if [ "$system" = corerelay ]; then run_corerelay "$placement" "$what"; else run_postfix "$what"; fi
    done
    disturbed || return 0
    if [ "$r" -ge $((2 * repeat)) ]; then echo "$key: repeat $r disturbed, no reruns left" >&2; return 0; fi
    echo "$key: repeat $r disturbed (steal >= $max_steal % on a CPU), running it again"
  done
}

started=$SECONDS
for _ in $(seq 1 "$repeat"); do
  for placement in $placements; do run_repeat corerelay "$placement"; done
  if [ "$postfix" = 1 ]; then run_repeat postfix -; fi
done
echo "took $((SECONDS - started)) s; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
python3 benches/fairness_summary.py "$out"
echo "results in $out"
