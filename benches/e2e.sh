#!/usr/bin/env bash
# End-to-end load runs, corerelay and Postfix side by side in one session on one machine:
#
#   corerelay load ──▶ relay under test ──▶ corerelay sink        (all on 127.0.0.1)
#
# where the relay under test is `corerelay serve --smarthost` (on all cores and on one core)
# in one of four modes — plain relay, open/click tracking, tracking + DKIM Ed25519, tracking
# + DKIM RSA-2048 — or a dedicated Postfix instance relaying to the same kind of sink
# (optionally with OpenDKIM as a milter). Every message is the same HTML newsletter
# (`corerelay load --body html`) in every mode and through Postfix, so the modes differ only
# in what the relay does. Each run of the matrix (message size × connections × mode × system,
# repeated) gets a fresh relay, spool/queue and sink. Before the matrix, one message per
# mode goes through into a sink that stores it, to show it arrives rewritten and signed.
# Extra rows at a fixed offered rate (`corerelay load --rate`) measure the 250 reply's
# latency below capacity, where a closed loop at saturation says nothing about it. Writes
# benches/runs/<date>-<host>/: machine.txt, commands.txt, raw.jsonl (one line per run),
# summary.md (medians and ratios; see benches/summarize.py).
#
# Every process this script starts is stopped by it (trap), traffic goes only to 127.0.0.1,
# and Postfix listens only on a loopback port (never on port 25). Installing Postfix needs
# root and apt-get; Postfix's own system instance is never started, and stopped if running.
#
# usage: benches/e2e.sh [--messages N] [--mode-messages N] [--postfix-messages N]
#                       [--sizes "2048 20480 102400"] [--conns "1 10 50"] [--cores "all 1"]
#                       [--modes "plain tracking ed25519 rsa"] [--systems "corerelay postfix"]
#                       [--repeat R] [--mode-repeat R] [--dkim] [--body html|text]
#                       [--rates "1000 2000"] [--postfix-rates "300"] [--rate-sizes "2048 20480"]
#                       [--rate-conns 50] [--rate-seconds S] [--rate-modes "plain"]
#                       [--no-smtp-source] [--spread-accounts N] [--relay-extra TOML] [--out DIR]
#   --messages N      messages per corerelay run in plain mode (default 6000).
#   --mode-messages N the same in the tracking, ed25519 and rsa modes (default 3000: they
#                     are slower, and the full matrix must fit in about half an hour).
#   --postfix-messages N  messages per Postfix run, plain and + OpenDKIM (default 3000).
#   --repeat R        runs of each row (default 3); --mode-repeat R the same for the tracking,
#                     ed25519 and rsa rows and Postfix + OpenDKIM (default 2, for time).
#   --modes           corerelay's modes: plain (relay only), tracking ([accounts.tracking]:
#                     links rewritten, open pixel), ed25519 and rsa (tracking + one
#                     [[accounts.dkim]] key of that algorithm, made by corerelay dkim keygen).
#   --dkim            also run Postfix + OpenDKIM (RSA-2048, relaxed/simple, milter on a UNIX
#                     socket): the baseline for corerelay's signing rows.
#   --body            the load's body (default html; text is the old plain-text filler, which
#                     gives the tracking modes nothing to rewrite).
#   --rates           offered rates (messages/s) of the fixed-rate rows for corerelay (all
#                     cores), each a row per size in --rate-sizes and mode in --rate-modes, at
#                     --rate-conns connections for --rate-seconds (default 8) seconds;
#                     --postfix-rates the same for Postfix (plain). "" skips them.
#   --no-smtp-source  skip the extra row loaded by Postfix's smtp-source instead of
#                     corerelay load (20 KB, 10 connections, corerelay all cores and Postfix).
#   --bin PATH        run this corerelay binary (relay, load, sink) instead of building the
#                     work tree: for A/B runs of two builds, interleaved.
#   --relay-extra TOML  appended to corerelay's configuration in every row (an experiment,
#                     e.g. $'[lending]\nwindow_count = 0' for a run without lending);
#                     recorded in commands.txt.
#   --spread-accounts N  extra rows (20 KB, 10 and 50 connections, plain mode, corerelay on
#                     all cores and on one) with the load spread over N accounts pinned round
#                     robin to the cores instead of one account (default 2; 0: no such rows).
#                     An account is owned by one core, so one account cannot use more than
#                     one core for its spool and deliveries.
set -euo pipefail
cd "$(dirname "$0")/.."

messages=6000
mode_messages=3000
postfix_messages=3000
sizes="2048 20480 102400"
conns="1 10 50"
cores_list="all 1"
modes="plain tracking ed25519 rsa"
systems="corerelay postfix"
repeat=3
mode_repeat=2
dkim=0
body=html
rates="1000 2000"
postfix_rates="300"
rate_sizes="2048 20480"
rate_conns=50
rate_seconds=8
rate_modes="plain"
smtp_source=1
spread_accounts=2
relay_extra=""
bin=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) messages=$2; shift 2 ;;
    --mode-messages) mode_messages=$2; shift 2 ;;
    --postfix-messages) postfix_messages=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --cores) cores_list=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    --body) body=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --postfix-rates) postfix_rates=$2; shift 2 ;;
    --rate-sizes) rate_sizes=$2; shift 2 ;;
    --rate-conns) rate_conns=$2; shift 2 ;;
    --rate-seconds) rate_seconds=$2; shift 2 ;;
    --rate-modes) rate_modes=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --mode-repeat) mode_repeat=$2; shift 2 ;;
    --dkim) dkim=1; shift ;;
    --no-smtp-source) smtp_source=0; shift ;;
    --spread-accounts) spread_accounts=$2; shift 2 ;;
    --relay-extra) relay_extra=$2; shift 2 ;;
    --bin) bin=$(realpath "$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$dkim" = 1 ] && systems="$systems postfix+opendkim"
for m in $modes $rate_modes; do
  case "$m" in plain|tracking|ed25519|rsa) ;; *) echo "unknown mode $m (plain tracking ed25519 rsa)" >&2; exit 2 ;; esac
done
case "$body" in html|text) ;; *) echo "unknown body $body (html or text)" >&2; exit 2 ;; esac
has() { case " $systems " in *" $1 "*) return 0 ;; esac; return 1; }
uses_postfix() { has postfix || has postfix+opendkim; }
proctree() { python3 benches/proctree.py "$@"; }
# shellcheck source=benches/lib.sh
. benches/lib.sh

# ---------------------------------------------------------------- the system's own instances
# The Debian package may start Postfix's default instance and OpenDKIM's service; neither
# may run during or after a benchmark.
stop_system_instances() {
  local p
  stop_system_postfix
  p=$(cat /run/opendkim/opendkim.pid 2>/dev/null || true)
  if pid_is "$p" opendkim; then kill "$p" 2>/dev/null || true; fi
}

install_incumbents() {
  local need=()
  command -v postfix >/dev/null || need+=(postfix)
  if [ "$dkim" = 1 ]; then
    command -v opendkim >/dev/null || need+=(opendkim)
    command -v opendkim-genkey >/dev/null || need+=(opendkim-tools)
  fi
  [ ${#need[@]} = 0 ] && return 0
  [ "$(id -u)" = 0 ] || { echo "installing ${need[*]} needs root" >&2; exit 1; }
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  stop_system_instances
}

if uses_postfix; then
  [ "$(id -u)" = 0 ] || { echo "the Postfix rows need root (postfix -c DIR start)" >&2; exit 1; }
  install_incumbents
  stop_system_instances
fi

bin=$(release_bin "$bin")
stamp=$(date -u +%Y-%m-%d)
out=${out:-benches/runs/$stamp-$(hostname -s)}
mkdir -p "$out"
# Under target/: on the build disk (never tmpfs), and in a root-owned tree, which OpenDKIM
# requires of its key and configuration (it refuses world-writable parents such as /tmp).
work=$(mktemp -d -p "$PWD/target" e2e.XXXXXX)
chmod 755 "$work"
pf_dir=$work/postfix
pids=()
cleanup() {
  set +e
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  stop_bench_postfix
  uses_postfix && stop_system_instances
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
  echo "disk (spool and queue): $(df -h "$work" | awk 'NR==2{print $1" "$2}') $(findmnt -no FSTYPE -T "$work") ($(cat /sys/block/$(basename "$(findmnt -no SOURCE -T "$work")")/queue/write_cache 2>/dev/null || echo "?") cache)"
  echo "rustc: $(rustc --version)"
  uses_postfix && echo "postfix: $(postconf -d -h mail_version)"
  [ "$dkim" = 1 ] && opendkim -V 2>&1 | head -1
  echo "memlock: $(ulimit -l)  nofile: $(ulimit -n)  somaxconn: $(cat /proc/sys/net/core/somaxconn)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "messages per run: corerelay $messages (tracking, ed25519, rsa: $mode_messages), postfix $postfix_messages; repeats: $repeat (tracking, ed25519, rsa and postfix+opendkim: $mode_repeat)"
  echo "corerelay modes: $modes"
  echo "body: $body$([ "$body" = html ] && echo " (corerelay load --body html: a multipart/alternative newsletter, quoted-printable HTML with a link every ~400 bytes; the same in every mode and through Postfix)")"
  [ -n "$rates$postfix_rates" ] && echo "fixed-rate rows: corerelay ${rates:-none}/s, postfix ${postfix_rates:-none}/s; sizes $rate_sizes; $rate_conns connections; $rate_seconds s each; modes $rate_modes"
} > "$out/machine.txt"
: > "$out/commands.txt"
: > "$out/raw.jsonl"
note_cmd() { [ "$r" = 1 ] && printf '%s\n' "$*" >> "$out/commands.txt"; return 0; }

# ---------------------------------------------------------------- shared pieces of a run
start_sink() {
  : > "$work/sink.out"
  "$bin" sink --listen "$1" > "$work/sink.out" 2>&1 &
  sink_pid=$!; pids+=("$sink_pid")
  sink_addr=$(addr_of "$work/sink.out")
}

# The sink's count so far: SIGUSR1 makes it print its summary line and carry on.
sink_count() {
  kill -USR1 "$sink_pid"
  sleep 0.02
  local lines
  mapfile -t lines < <(grep 'messages=' "$work/sink.out")
  local last=${lines[-1]:-messages=0}
  last=${last#*messages=}
  echo "${last%% *}"
}

# Waits until the sink has counted $1 messages (at most $2 seconds); sets delivered and
# e2e_done (the time the count was seen).
wait_delivered() {
  local deadline=$((SECONDS + $2))
  delivered=$(sink_count)
  while [ "$delivered" -lt "$1" ] && [ $SECONDS -lt $deadline ]; do
    delivered=$(sink_count)
  done
  e2e_done=$EPOCHREALTIME
}

start_sampler() {
  python3 benches/proctree.py sample "$work/peak" "$@" &
  sampler_pid=$!; pids+=("$sampler_pid")
}

stop_sampler() {
  kill "$sampler_pid" 2>/dev/null || true
  wait "$sampler_pid" 2>/dev/null || true
  peak_kib=$(cat "$work/peak" 2>/dev/null || echo 0)
  rm -f "$work/peak"
}

# Runs the load generator ($loader: corerelay or smtp-source) against $1 with $2 messages,
# $3 connections, $4 bytes, at $5 messages/s offered (0: as fast as they go); sets report
# (JSON), load_cpu_s, t_start.
run_load() {
  local target=$1 n=$2 c=$3 size=$4 rate=${5:-0}
  t_start=$EPOCHREALTIME
  if [ "$loader" = corerelay ]; then
    local cmd=("$bin" load --target "$target" --messages "$n" --concurrency "$c" --size "$size" --from "$senders"
               --body "$body" --json)
    [ "$rate" != 0 ] && cmd+=(--rate "$rate")
    note_cmd "${cmd[*]}"
    # A failed run is recorded (its row shows it) and explained in failures.txt; the
    # matrix goes on.
    report=$(proctree run "$work/load.cpu" "${cmd[@]}" 2>"$work/load.err") || {
      { echo "== $(date -u +%T) load against $target failed: $report $(cat "$work/load.err")"
        echo "-- relay output:"; tail -20 "$work/relay.out" 2>/dev/null
        echo "-- sink output:"; tail -5 "$work/sink.out"; } >> "$out/failures.txt"
      case "$report" in "{"*) ;; *) report='{"acked":0,"messages_per_second":0,"p50_ms":null,"p99_ms":null}' ;; esac
    }
  else
    local cmd=(smtp-source -s "$c" -m "$n" -l "$size" -d -f "$senders" -t sink@sink.example "$target")
    note_cmd "${cmd[*]}"
    proctree run "$work/load.cpu" "${cmd[@]}" > "$work/smtp-source.out" 2>&1 || true
    local secs
    secs=$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b-a}')
    report=$(awk -v n="$n" -v s="$secs" 'BEGIN{printf "{\"sent\":%d,\"seconds\":%s,\"messages_per_second\":%.1f,\"p50_ms\":null,\"p99_ms\":null}", n, s, n/s}')
  fi
  load_cpu_s=$(cat "$work/load.cpu" 2>/dev/null || echo 0)
  # What the sink must see: every acknowledged message (smtp-source does not say: all).
  expected=$(sed -n 's/.*"acked":\([0-9]*\).*/\1/p' <<< "$report")
  expected=${expected:-$n}
}

# Appends one run's line to raw.jsonl: $1 system, $2 cores, $3 size, $4 connections, $5
# messages, $6 relay CPU seconds, $7 mode, $8 offered rate (0: closed loop).
record() {
  local system=$1 cores=$2 size=$3 c=$4 n=$5 cpu_s=$6 mode=$7 rate=$8
  local sink_cpu_s e2e_s what=$body
  [ "$loader" = smtp-source ] && what=smtp-source
  sink_cpu_s=$(proctree cpu "$sink_pid")
  e2e_s=$(awk -v a="$t_start" -v b="$e2e_done" 'BEGIN{printf "%.3f", b-a}')
  local line
  line=$(printf '{"system":"%s","mode":"%s","rate":%s,"body":"%s","loader":"%s","accounts":%d,"cores":"%s","size":%d,"conns":%d,"run":%d,"messages":%d,"delivered":%d,"e2e_seconds":%s,"e2e_per_second":%.1f,"relay_cpu_ms_per_1k":%.1f,"tools_cpu_ms_per_1k":%.1f,"peak_pss_kib":%d,"loadavg_before":"%s","io_full_avg10_before":"%s","steal_pct":%s,"load":%s}' \
    "$system" "$mode" "$rate" "$what" "$loader" "$accounts" "$cores" "$size" "$c" "$r" "$n" "$delivered" "$e2e_s" \
    "$(awk -v n="$delivered" -v s="$e2e_s" 'BEGIN{print (s > 0 ? n / s : 0)}')" \
    "$(awk -v c="$cpu_s" -v n="$n" 'BEGIN{print c * 1e6 / n}')" \
    "$(awk -v a="$load_cpu_s" -v b="$sink_cpu_s" -v n="$n" 'BEGIN{print (a + b) * 1e6 / n}')" \
    "$peak_kib" "$loadavg" "$io_pressure" "$(steal_json "$stat0" "$stat1")" "$report")
  echo "$line" >> "$out/raw.jsonl"
  echo "$system mode=$mode rate=$rate loader=$loader accounts=$accounts cores=$cores size=$size conns=$c run=$r: delivered $delivered in ${e2e_s}s, relay CPU $cpu_s s, $report"
}

# ---------------------------------------------------------------- corerelay
# One account (`local`, any sender from 127.0.0.0/8, as in the embedded default), or
# $accounts accounts a0… with their own sender domains a0.load.example…, pinned round robin
# to the relay's cores; the load's messages take the senders in turn. In the tracking modes
# each account has [accounts.tracking]; in ed25519 and rsa also a DKIM key for its domain.
accounts=1
senders=load@load.example
set_accounts() {
  accounts=$1
  senders=load@load.example
  if [ "$accounts" -gt 1 ]; then
    senders=$(for i in $(seq 0 $((accounts - 1))); do printf 'load@a%d.load.example,' "$i"; done)
    senders=${senders%,}
  fi
}

# The tracking endpoint's address in rewritten links (nothing fetches them during a run).
tracking_base=https://t.load.example

# The key of domain $1 for algorithm $2 (made once per session); echoes its path.
dkim_key() {
  local file=$work/keys/bench.$1.$2.key
  if [ ! -f "$file" ]; then
    mkdir -p "$work/keys"
    "$bin" dkim keygen --domain "$1" --selector bench --algorithm "$2" --out "$file" > /dev/null
  fi
  echo "$file"
}

# The [accounts.tracking] and [[accounts.dkim]] blocks of mode $1 for domain $2.
mode_blocks() {
  local mode=$1 domain=$2
  [ "$mode" = plain ] && return 0
  printf '[accounts.tracking]\nbase_url = "%s"\n' "$tracking_base"
  case "$mode" in
    ed25519|rsa) printf '[[accounts.dkim]]\ndomain = "%s"\nselector = "bench"\nkey_file = "%s"\n' \
                   "$domain" "$(dkim_key "$domain" "$mode")" ;;
  esac
}

# The configuration for mode $1 on $2 cores; empty (the embedded default) for one account
# in plain mode.
relay_config() {
  local mode=$1 cores=$2 n
  n=$([ "$cores" = all ] && nproc || echo "$cores")
  if [ -n "$relay_extra" ]; then printf '%s\n' "$relay_extra"; fi
  if [ "$accounts" = 1 ]; then
    [ "$mode" = plain ] && [ -z "$relay_extra" ] && return 0
    printf '[[accounts]]\nid = "local"\nnetworks = ["127.0.0.0/8", "::1/128"]\nsender_domains = ["*"]\n'
    mode_blocks "$mode" load.example
    return 0
  fi
  for i in $(seq 0 $((accounts - 1))); do
    printf '[[accounts]]\nid = "a%d"\nnetworks = ["127.0.0.0/8"]\nsender_domains = ["a%d.load.example"]\ncore = %d\n' \
      "$i" "$i" $((i % n))
    mode_blocks "$mode" "a$i.load.example"
    echo
  done
}

# Starts the relay for mode $1 on $2 cores, delivering to $sink_addr; sets relay_pid and
# relay_addr.
start_corerelay() {
  local mode=$1 cores=$2
  rm -rf "$work/spool" "$work/log"
  local relay_cmd=("$bin" serve --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --cores "$cores" --smarthost "$sink_addr"
                   --spool-dir "$work/spool" --log-dir "$work/log")
  relay_config "$mode" "$cores" > "$work/relay.toml"
  if [ -s "$work/relay.toml" ]; then
    relay_cmd+=(--config "$work/relay.toml")
    [ "$r" = 1 ] && sed 's/^/#   relay.toml: /' "$work/relay.toml" >> "$out/commands.txt"
  fi
  note_cmd "${relay_cmd[*]}"
  : > "$work/relay.out"
  "${relay_cmd[@]}" > "$work/relay.out" 2>&1 &
  relay_pid=$!; pids+=("$relay_pid")
  relay_addr=$(addr_of "$work/relay.out")
}

# One run: mode $1, $2 cores, $3 bytes, $4 connections, offered rate $5 (0: closed loop).
run_corerelay() {
  local mode=$1 cores=$2 size=$3 c=$4 rate=${5:-0} n=$messages
  [ "$mode" != plain ] && n=$mode_messages
  [ "$rate" != 0 ] && n=$((rate * rate_seconds))
  note_cmd "# corerelay, mode $mode$([ "$rate" != 0 ] && echo ", offered $rate/s")"
  note_cmd "$bin sink --listen 127.0.0.1:0"
  start_sink 127.0.0.1:0
  start_corerelay "$mode" "$cores"
  loadavg=$(cut -d' ' -f1 /proc/loadavg)
  # The share of time every task waited for I/O, last 10 s (other tenants' disk use shows here).
  io_pressure=$(sed -n 's/^full avg10=\([0-9.]*\).*/\1/p' /proc/pressure/io 2>/dev/null)
  local cpu0 cpu1
  cpu0=$(proctree cpu "$relay_pid")
  stat0=$(cpu_stat)
  start_sampler "$relay_pid"
  run_load "$relay_addr" "$n" "$c" "$size" "$rate"
  wait_delivered "$expected" 120
  stat1=$(cpu_stat)
  cpu1=$(proctree cpu "$relay_pid")
  stop_sampler
  record corerelay "$cores" "$size" "$c" "$n" "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{print b-a}')" "$mode" "$rate"
  kill -9 "$relay_pid" 2>/dev/null || true
  kill -INT "$sink_pid" 2>/dev/null || true
  wait "$relay_pid" "$sink_pid" 2>/dev/null || true
  [ "$r" = 1 ] && echo >> "$out/commands.txt"
  return 0
}

# Before the matrix: one message per mode through corerelay into a sink that stores it, to
# show each mode does what its rows claim (links rewritten to $tracking_base/c/…, one open
# pixel, a DKIM-Signature of the mode's algorithm; none of these in plain mode). A mode
# that does not would make its rows meaningless, so the script stops.
check_mode() {
  local mode=$1 maildir=$work/check-$1
  : > "$work/sink.out"
  "$bin" sink --listen 127.0.0.1:0 --maildir "$maildir" > "$work/sink.out" 2>&1 &
  sink_pid=$!; pids+=("$sink_pid")
  sink_addr=$(addr_of "$work/sink.out")
  r=0 start_corerelay "$mode" all
  "$bin" load --target "$relay_addr" --messages 1 --concurrency 1 --size 20480 --from "$senders" --body "$body" > /dev/null
  local file=""
  for _ in $(seq 1 100); do
    file=$(find "$maildir/new" -type f 2>/dev/null | head -1)
    [ -n "$file" ] && break
    sleep 0.1
  done
  kill -9 "$relay_pid" 2>/dev/null || true
  kill -INT "$sink_pid" 2>/dev/null || true
  wait "$relay_pid" "$sink_pid" 2>/dev/null || true
  if [ -z "$file" ]; then
    echo "mode $mode: the check message did not arrive; the relay's output ends:" >&2
    tail "$work/relay.out" >&2
    exit 1
  fi
  local verdict
  if ! verdict=$(python3 benches/check_message.py "$file" "$mode" "$body" "$tracking_base"); then
    cp "$file" "$out/check-$mode.eml"
    echo "mode $mode: the check message is wrong: $verdict (kept in $out/check-$mode.eml)" >&2
    exit 1
  fi
  echo "mode check $mode: a 20 KB message through corerelay arrived with $verdict" | tee -a "$out/machine.txt"
}

# ---------------------------------------------------------------- Postfix
pf_port=$(free_port)
pf_sink_port=$(free_port)
# configure_postfix (benches/lib.sh): a dedicated instance in $pf_dir, smtpd on $pf_port,
# everything relayed to the sink on $pf_sink_port.


# OpenDKIM as Postfix's milter: RSA-2048, relaxed/simple, on a UNIX socket (over loopback
# TCP the milter dialogue stalls on Nagle and delayed ACKs).
configure_opendkim() {
  mkdir -p "$work/dkim"
  opendkim-genkey -b 2048 -d load.example -s bench -D "$work/dkim"
  cat > "$work/dkim/opendkim.conf" <<EOF
Syslog no
Mode s
Canonicalization relaxed/simple
SignatureAlgorithm rsa-sha256
Domain load.example
Selector bench
KeyFile $work/dkim/bench.private
Socket local:$work/dkim/opendkim.sock
UMask 0000
InternalHosts 127.0.0.1
EOF
  postconf -c "$pf_dir" -e "milter_default_action = tempfail" "milter_protocol = 6"
  sed 's/^/#   opendkim.conf: /' "$work/dkim/opendkim.conf" >> "$out/commands.txt"
}

# One run: $1 postfix or postfix+opendkim, $2 bytes, $3 connections, offered rate $4 (0:
# closed loop).
run_postfix() {
  local system=$1 size=$2 c=$3 rate=${4:-0} n=$postfix_messages
  local milter_pid="" mode=plain
  [ "$system" = postfix+opendkim ] && mode=rsa
  [ "$rate" != 0 ] && n=$((rate * rate_seconds))
  note_cmd "# $system$([ "$rate" != 0 ] && echo ", offered $rate/s")"
  postfix -c "$pf_dir" stop >/dev/null 2>&1 || true
  postsuper -c "$pf_dir" -d ALL >/dev/null 2>&1 || true
  # The sink first: Postfix takes a refused connection as a dead destination for minutes.
  note_cmd "$bin sink --listen 127.0.0.1:$pf_sink_port"
  start_sink "127.0.0.1:$pf_sink_port"
  # The milter is configured only for the rows that sign.
  local milter=""
  [ "$system" = postfix+opendkim ] && milter="unix:$work/dkim/opendkim.sock"
  postconf -c "$pf_dir" -e "smtpd_milters = $milter"
  if [ "$system" = postfix+opendkim ]; then
    note_cmd "postconf -c $pf_dir -e 'smtpd_milters = $milter'"
    rm -f "$work/dkim/opendkim.sock"
    note_cmd "opendkim -f -x $work/dkim/opendkim.conf"
    opendkim -f -x "$work/dkim/opendkim.conf" > "$work/opendkim.out" 2>&1 &
    milter_pid=$!; pids+=("$milter_pid")
    for _ in $(seq 1 100); do [ -S "$work/dkim/opendkim.sock" ] && break; sleep 0.05; done
    [ -S "$work/dkim/opendkim.sock" ] || { echo "opendkim did not start:" >&2; cat "$work/opendkim.out" >&2; exit 1; }
  fi
  note_cmd "postfix -c $pf_dir start"
  postfix -c "$pf_dir" start >/dev/null 2>&1 || { echo "postfix did not start:" >&2; tail "$pf_dir/postfix.log" >&2; exit 1; }
  postqueue -c "$pf_dir" -f >/dev/null 2>&1 || true
  local master
  master=$(tr -d ' ' < "$pf_dir/queue/pid/master.pid")
  loadavg=$(cut -d' ' -f1 /proc/loadavg)
  # The share of time every task waited for I/O, last 10 s (other tenants' disk use shows here).
  io_pressure=$(sed -n 's/^full avg10=\([0-9.]*\).*/\1/p' /proc/pressure/io 2>/dev/null)
  local cpu0 cpu1
  cpu0=$(proctree cpu "$master" $milter_pid)
  stat0=$(cpu_stat)
  start_sampler "$master" $milter_pid
  run_load "127.0.0.1:$pf_port" "$n" "$c" "$size" "$rate"
  wait_delivered "$expected" 180
  stat1=$(cpu_stat)
  [ "$delivered" -lt "$expected" ] && { echo "Postfix delivered only $delivered; its log ends:" >&2; tail -5 "$pf_dir/postfix.log" >&2; }
  cpu1=$(proctree cpu "$master" $milter_pid)
  stop_sampler
  record "$system" - "$size" "$c" "$n" "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{print b-a}')" "$mode" "$rate"
  postfix -c "$pf_dir" stop >/dev/null 2>&1 || true
  for _ in $(seq 1 100); do pid_is "$master" master || break; sleep 0.05; done
  kill -INT "$sink_pid" 2>/dev/null || true
  [ -n "$milter_pid" ] && kill "$milter_pid" 2>/dev/null
  wait "$sink_pid" $milter_pid 2>/dev/null || true
  [ "$r" = 1 ] && echo >> "$out/commands.txt"
  return 0
}

# Before the matrix: one message through Postfix + OpenDKIM into a sink that stores it, to
# show the signing rows really sign (a milter that is not reached would pass mail unsigned
# or refuse it, and either would make the rows meaningless).
check_dkim_signs() {
  local maildir=$work/dkim-check
  : > "$work/sink.out"
  "$bin" sink --listen "127.0.0.1:$pf_sink_port" --maildir "$maildir" > "$work/sink.out" 2>&1 &
  sink_pid=$!; pids+=("$sink_pid")
  addr_of "$work/sink.out" >/dev/null
  postconf -c "$pf_dir" -e "smtpd_milters = unix:$work/dkim/opendkim.sock"
  rm -f "$work/dkim/opendkim.sock"
  opendkim -f -x "$work/dkim/opendkim.conf" > "$work/opendkim.out" 2>&1 &
  local milter_pid=$!; pids+=("$milter_pid")
  for _ in $(seq 1 100); do [ -S "$work/dkim/opendkim.sock" ] && break; sleep 0.05; done
  postfix -c "$pf_dir" start >/dev/null 2>&1
  "$bin" load --target "127.0.0.1:$pf_port" --messages 1 --concurrency 1 --size 2048 --body "$body" >/dev/null
  local signature=""
  for _ in $(seq 1 100); do
    signature=$(cat "$maildir"/new/* 2>/dev/null | grep -A1 '^DKIM-Signature:' || true)
    [ -n "$signature" ] && break
    sleep 0.1
  done
  postfix -c "$pf_dir" stop >/dev/null 2>&1 || true
  kill "$milter_pid" 2>/dev/null; kill -INT "$sink_pid" 2>/dev/null
  wait "$milter_pid" "$sink_pid" 2>/dev/null || true
  case "$signature" in
    *"a=rsa-sha256"*"c=relaxed/simple"*|*"c=relaxed/simple"*"a=rsa-sha256"*)
      echo "opendkim check: a message through Postfix + OpenDKIM arrived signed: $(echo "$signature" | tr -d '\r\n\t' | cut -c1-120)…" >> "$out/machine.txt" ;;
    *) echo "Postfix + OpenDKIM did not sign the check message (got: ${signature:-no DKIM-Signature})" >&2; exit 1 ;;
  esac
}

uses_postfix && configure_postfix
if has postfix+opendkim; then
  configure_opendkim
  check_dkim_signs
fi

# ---------------------------------------------------------------- the matrix
if has corerelay; then
  # shellcheck disable=SC2086 # the mode lists are split on purpose
  for mode in $(printf '%s\n' $modes $rate_modes | awk '!seen[$0]++'); do check_mode "$mode"; done
fi
started=$SECONDS
loader=corerelay
for size in $sizes; do
  for c in $conns; do
    for r in $(seq 1 "$repeat"); do
      if has corerelay; then
        for mode in $modes; do
          [ "$mode" != plain ] && [ "$r" -gt "$mode_repeat" ] && continue
          for cores in $cores_list; do run_corerelay "$mode" "$cores" "$size" "$c"; done
        done
      fi
      has postfix && run_postfix postfix "$size" "$c"
      has postfix+opendkim && [ "$r" -le "$mode_repeat" ] && run_postfix postfix+opendkim "$size" "$c"
    done
  done
done
# A fixed offered rate below capacity: the 250 reply's latency as a sending service sees it
# when the relay is not saturated (in a closed loop at saturation it is only queueing).
for size in $rate_sizes; do
  for r in $(seq 1 "$repeat"); do
    if has corerelay; then
      for mode in $rate_modes; do
        [ "$mode" != plain ] && [ "$r" -gt "$mode_repeat" ] && continue
        for rate in $rates; do run_corerelay "$mode" all "$size" "$rate_conns" "$rate"; done
      done
    fi
    if has postfix; then
      for rate in $postfix_rates; do run_postfix postfix "$size" "$rate_conns" "$rate"; done
    fi
  done
done
# The same row through a second load generator, so corerelay's figures do not rest on its
# own tool alone.
if [ "$smtp_source" = 1 ] && command -v smtp-source >/dev/null; then
  loader=smtp-source
  for r in $(seq 1 "$repeat"); do
    has corerelay && run_corerelay plain all 20480 10
    has postfix && run_postfix postfix 20480 10
  done
fi
# One account is owned by one core: the same rows with the load spread over accounts on
# every core show what all cores give a sending service with many customers.
if [ "$spread_accounts" -gt 1 ] && has corerelay; then
  loader=corerelay
  set_accounts "$spread_accounts"
  for c in 10 50; do
    for r in $(seq 1 "$repeat"); do
      for cores in $cores_list; do run_corerelay plain "$cores" 20480 "$c"; done
    done
  done
  set_accounts 1
fi
echo "matrix took $((SECONDS - started)) s" | tee -a "$out/machine.txt"

python3 benches/summarize.py "$out"
echo "results in $out"
