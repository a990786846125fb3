#!/usr/bin/env bash
# The long variant of tests/crash.rs: runs the kill -9 test for several rounds, each with
# more messages and kills than CI uses and its own random seed, and prints one line of
# figures per round plus the totals. A round fails if any acknowledged message is lost.
#
# Usage: scripts/crash-loop.sh [--rounds 5] [--kills 10] [--messages 20000] [--minutes 30]
# Stops after --rounds rounds or once --minutes have passed (checked between rounds).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 kills=10 messages=20000 minutes=30
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --kills) kills="$2"; shift 2 ;;
        --messages) messages="$2"; shift 2 ;;
        --minutes) minutes="$2"; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
ulimit -n 65536 2>/dev/null || true
ulimit -l unlimited 2>/dev/null || true

report=$(mktemp /tmp/corerelay-crash.XXXXXX)
trap 'rm -f "$report"' EXIT
end=$(( $(date +%s) + minutes * 60 ))
failed=0
for round in $(seq "$rounds"); do
    [ "$(date +%s)" -lt "$end" ] || break
    seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
    if ! CORERELAY_CRASH_SEED="$seed" CORERELAY_CRASH_KILLS="$kills" CORERELAY_CRASH_MESSAGES="$messages" \
        CORERELAY_CRASH_REPORT="$report" \
        cargo test --quiet --test tests crash::acknowledged_messages_survive -- --nocapture >/dev/null 2>&1; then
        echo "round $round (seed $seed): FAILED; rerun with CORERELAY_CRASH_SEED=$seed"
        failed=1
    fi
    tail -n 1 "$report" | sed "s/^/round $round: /"
done
python3 - "$report" <<'PY'
import re, sys
rows = [dict(re.findall(r"(\w+)=([\d.]+)", l)) for l in open(sys.argv[1]) if l.startswith("crash:")]
total = lambda k: sum(float(r.get(k, 0)) for r in rows)
print(f"crash-loop: {len(rows)} rounds, {int(total('kills'))} kills, {int(total('acked'))} acknowledged, "
      f"{int(total('lost'))} lost, {int(total('duplicates'))} duplicates "
      f"({int(total('redelivered'))} redelivered, {int(total('resubmitted'))} resubmitted)")
PY
exit $failed
