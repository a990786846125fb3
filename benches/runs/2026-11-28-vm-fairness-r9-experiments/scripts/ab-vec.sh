#!/bin/bash
cd /work/main
for i in 1 2 3; do
  for v in trace9 vec-trace; do
    CORERELAY_DIAG=1 benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-$v --big-nice 19 --out /tmp/vec-$v-$i > /tmp/vec-$v-$i.log 2>&1
    echo "$v pair $i: $(grep 'same-core | 2 / 2' /tmp/vec-$v-$i.log | tail -1)"
    grep -o "big 50000, [0-9]*/s" /tmp/vec-$v-$i/summary.md | tr '\n' ' '; echo
  done
done
