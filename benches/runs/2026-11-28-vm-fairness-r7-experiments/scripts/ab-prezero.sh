#!/bin/bash
cd /work/main
for i in 1 2 3; do
  for v in A B; do
    if [ $v = B ]; then export PREZERO=1; else unset PREZERO; fi
    benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-527e515 --out /tmp/ab-pz-$v-$i > /tmp/ab-pz-$v-$i.log 2>&1
    echo "$v $i $(tail -2 /tmp/ab-pz-$v-$i.log | head -1)"
  done
done
