#!/bin/bash
cd /work/main
for i in 1 2 3; do
  for v in A B; do
    if [ $v = B ]; then export CR_SYNC_EXPRESS=1; else unset CR_SYNC_EXPRESS; fi
    benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-syncexp --out /tmp/ab-sync-$v-$i > /tmp/ab-sync-$v-$i.log 2>&1
    echo "$v $i $(date +%T)"
  done
done
