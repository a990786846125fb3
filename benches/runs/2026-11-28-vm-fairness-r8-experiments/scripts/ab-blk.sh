#!/bin/bash
cd /work/main
for i in 1 2 3; do
  for v in A B; do
    if [ $v = A ]; then extra=$'[spool]\nexpress_blocking_budget_ms = 0'; else extra=""; fi
    benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-blocking ${extra:+--relay-extra "$extra"} --out /tmp/ab-blk-$v-$i > /tmp/ab-blk-$v-$i.log 2>&1
    echo "$v $i $(date +%T)"
  done
done
