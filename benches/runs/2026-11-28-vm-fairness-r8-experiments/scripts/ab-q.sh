#!/bin/bash
cd /work/main
for i in 1 2 3; do
  for v in A B; do
    b=$([ $v = A ] && echo target/ab/corerelay-blocking || echo target/ab/corerelay-d63088b)
    benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin $b --out /tmp/ab-q-$v-$i > /tmp/ab-q-$v-$i.log 2>&1
    echo "$v $i $(date +%T)"
  done
done
