#!/usr/bin/env bash
# The full-size variant of tests/hostile.rs's idle-connection test: 10,000 concurrent idle
# connections (CI uses 2,000) against a 2-core relay, printing the relay's RSS and open
# descriptors before, with them open, and after they left.
#
# Usage: scripts/hostile-idle.sh [--connections 10000]
set -euo pipefail
cd "$(dirname "$0")/.."

connections=10000
while [ $# -gt 0 ]; do
    case "$1" in
        --connections) connections="$2"; shift 2 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
# The test process and the relay each hold one descriptor per connection.
ulimit -n $((connections * 2 + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
ulimit -l unlimited 2>/dev/null || true
CORERELAY_IDLE_CONNECTIONS="$connections" \
    cargo test --quiet --test tests hostile::thousands_of_idle_connections -- --nocapture 2>&1 |
    grep -E "^hostile:|test result|panicked"
