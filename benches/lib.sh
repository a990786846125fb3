# Shared by benches/e2e.sh and benches/fairness.sh (sourced, not run): process helpers and
# the Postfix instance both benchmarks measure corerelay against.
# Needs: $out (the results folder, with commands.txt), and for configure_postfix $pf_dir,
# $pf_port and $pf_sink_port.

# The corerelay binary to measure: $bin when given (--bin, an A/B of prebuilt binaries),
# else the work tree's release build, built now.
release_bin() {
  if [ -n "$1" ]; then
    echo "$1"
  else
    cargo build --release --quiet >&2 || return 1
    echo "$PWD/target/release/corerelay"
  fi
}

# Each CPU's jiffies since boot from /proc/stat: "cpuN total steal" per line. Steal is the
# time the hypervisor ran someone else while this VM's CPU had work: a run that another
# tenant of the host slowed down shows it (zero on bare metal).
cpu_stat() {
  awk '/^cpu[0-9]/ { t = 0; for (i = 2; i <= NF; i++) t += $i; print $1, t, $9 }' /proc/stat
}

# Each CPU's steal between two cpu_stat readings ($1, $2), in % of its time, as JSON
# ({"cpu0":0.12,...}); null when /proc/stat had no per-CPU lines.
steal_json() {
  paste -d' ' <(printf '%s\n' "$1") <(printf '%s\n' "$2") | awk '
    NF >= 6 { t = $5 - $2; printf "%s\"%s\":%.2f", (n++ ? "," : "{"), $1, (t > 0 ? 100 * ($6 - $3) / t : 0) }
    END { print (n ? "}" : "null") }'
}

# True when process $1 exists and its command name is $2 (a pid file can be stale).
pid_is() { [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]; }

# The Debian package may start Postfix's default instance (/etc/postfix, queue in
# /var/spool/postfix); it may not run during or after a benchmark.
stop_system_postfix() {
  local p
  p=$(tr -d ' ' 2>/dev/null < /var/spool/postfix/pid/master.pid || true)
  if pid_is "$p" master; then postfix stop >/dev/null 2>&1 || kill "$p" 2>/dev/null || true; fi
}

# Stops the benchmark's own Postfix instance in $pf_dir, if one was configured.
stop_bench_postfix() {
  [ -f "$pf_dir/main.cf" ] || return 0
  local m
  m=$(tr -d ' ' 2>/dev/null < "$pf_dir/queue/pid/master.pid")
  postfix -c "$pf_dir" stop >/dev/null 2>&1
  pid_is "$m" master && kill -9 "$m" 2>/dev/null
  return 0
}

# A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
free_port() { python3 benches/proctree.py free-port; }

# Waits for a process to print its "listening on ADDR" line in file $1 and echoes ADDR;
# $2: how many 50 ms polls (default 400: 20 s). The caller empties the file before it starts
# the process: a background process's redirection may not have truncated it yet, and the
# previous process's address would be read instead.
addr_of() {
  local file=$1 tries=${2:-400} addr
  for _ in $(seq 1 "$tries"); do
    addr=$(sed -n 's/.*listening on \([0-9.]*:[0-9][0-9]*\).*/\1/p' "$file" 2>/dev/null | head -1)
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    sleep 0.05
  done
  echo "no listening line in $file:" >&2; cat "$file" >&2; return 1
}

# A dedicated instance in $pf_dir: its own main.cf/master.cf, queue and data directories on
# the same disk as corerelay's spool, smtpd only on 127.0.0.1:$pf_port, everything relayed
# to the sink at 127.0.0.1:$pf_sink_port, no local delivery, no chroot, no DNS.
configure_postfix() {
  mkdir -p "$pf_dir/queue" "$pf_dir/data"
  chown postfix:postfix "$pf_dir/data"
  cat > "$pf_dir/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $pf_dir/queue
data_directory = $pf_dir/data
maillog_file = $pf_dir/postfix.log
maillog_file_prefixes = $pf_dir
myhostname = postfix-bench.localhost
mydestination =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$pf_sink_port
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
default_process_limit = 200
minimal_backoff_time = 2s
maximal_backoff_time = 10s
queue_run_delay = 2s
smtpd_tls_security_level = none
smtp_tls_security_level = none
smtputf8_enable = no
biff = no
EOF
  cat > "$pf_dir/master.cf" <<EOF
127.0.0.1:$pf_port inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
  postfix -c "$pf_dir" set-permissions >/dev/null 2>&1
  postfix -c "$pf_dir" check >/dev/null 2>&1 || { echo "postfix check failed for $pf_dir" >&2; exit 1; }
  {
    echo "# Postfix instance ($pf_dir; ports vary per session)"
    sed 's/^/#   main.cf: /' "$pf_dir/main.cf"
    sed 's/^/#   master.cf: /' "$pf_dir/master.cf"
  } >> "$out/commands.txt"
}

