#!/bin/bash
# A/B: big load generator at nice 0 vs 19, same-core, trace binary, interleaved.
cd /work/main
for i in 1 2 3; do
  for v in 0 19; do
    CORERELAY_DIAG=1 benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-trace9 --big-nice $v --out /tmp/nice-$v-$i > /tmp/nice-$v-$i.log 2>&1
    echo "nice $v pair $i: $(grep -A0 'same-core | 2 / 2' /tmp/nice-$v-$i.log | tail -1)"
  done
done
