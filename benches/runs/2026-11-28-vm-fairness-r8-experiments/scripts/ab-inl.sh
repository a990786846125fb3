#!/bin/bash
cd /work/main
for i in 1 2 3; do
  for v in A B; do
    if [ $v = B ]; then export CORERELAY_INLINE=1; else unset CORERELAY_INLINE; fi
    benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-inline2 --out /tmp/ab-inl2-$v-$i > /tmp/ab-inl2-$v-$i.log 2>&1
    echo "$v $i $(date +%T)"
  done
done
