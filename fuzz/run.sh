#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each (default 60 s), starting
# from its checked-in corpus, and prints one line per target: runs, corpus growth, result.
# New inputs go to a scratch directory, not into the repository; a crash leaves its input
# in fuzz/artifacts/<target>/ and makes the script exit non-zero. Copy a crash input into
# fuzz/corpus/<target>/ once it is fixed: `cargo test` replays that directory, so it stays
# a regression test.
#
# Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
#
# Usage: fuzz/run.sh [--seconds N] [--jobs N] [target ...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")"

seconds=60
jobs=1
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build -O
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "corpus/$t"
    log="$scratch/$t.log"
    # Segment images are larger than libFuzzer's default 4 KiB inputs.
    max_len=16384
    parallel=()
    # libFuzzer's -jobs writes fuzz-N.log files into the working directory: only with --jobs.
    if [ "$jobs" -gt 1 ]; then parallel=(-jobs="$jobs" -workers="$jobs"); fi
    if cargo +nightly fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len="$max_len" "${parallel[@]}" \
        -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result="CRASH (see fuzz/artifacts/$t/)"
        failed=1
    fi
    runs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}')
    added=$(find "$scratch/$t" -type f | wc -l)
    seeds=$(find "corpus/$t" -type f | wc -l)
    printf '%-28s %6ss %12s runs  %4s seeds  %5s new inputs  %s\n' "$t" "$seconds" "$runs" "$seeds" "$added" "$result"
    if [ "$result" != ok ]; then tail -40 "$log"; fi
done
exit $failed
