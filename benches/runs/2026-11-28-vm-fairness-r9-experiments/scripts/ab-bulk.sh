#!/bin/bash
cd /work/main
for i in 1 2 3; do
  for v in off on; do
    if [ $v = on ]; then export CR_BULK_AFTER=4; else unset CR_BULK_AFTER; fi
    CORERELAY_DIAG=1 benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-bulk --big-nice 19 --out /tmp/bulk-$v-$i > /tmp/bulk-$v-$i.log 2>&1
    echo "bulk $v pair $i: $(grep 'same-core | 2 / 2' /tmp/bulk-$v-$i.log | tail -1)"
    grep "same-core | big\|same-core | both" /tmp/bulk-$v-$i/summary.md | grep -o "big 50000, [0-9]*/s" | tr '\n' ' '; echo
  done
done
