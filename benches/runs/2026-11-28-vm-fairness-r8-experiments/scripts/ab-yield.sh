#!/bin/bash
cd /work/main
export CORERELAY_DIAG=1
for i in 1 2 3; do
  for v in A B; do
    if [ $v = B ]; then export CR_YIELD=1; else unset CR_YIELD; fi
    benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-yield --out /tmp/ab-yield-$v-$i > /tmp/ab-yield-$v-$i.log 2>&1
    echo "$v $i $(date +%T)"
  done
done
