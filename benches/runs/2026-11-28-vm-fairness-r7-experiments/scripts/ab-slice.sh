#!/bin/bash
# A/B: executor threads with a 100 us EEVDF slice (B) or the default (A), same binary, interleaved.
cd /work/main
for i in 1 2 3; do
  for v in A B; do
    pkill -f slice.py; rm -f /tmp/slice.log
    if [ $v = B ]; then (taskset -c 1 python3 /tmp/slice.py 100000 "corerelay-527e515 serve" &); sleep 0.3; fi
    benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-527e515 --out /tmp/ab-slice-$v-$i > /tmp/ab-slice-$v-$i.log 2>&1
    pkill -f slice.py
    echo "$v $i $(tail -2 /tmp/ab-slice-$v-$i.log | head -1)"
  done
done
