#!/bin/bash
cd /work/main
for i in 1 2 3; do
  for v in A B; do
    if [ $v = B ]; then export CR_EXPRESS_INGRESS=1; else unset CR_EXPRESS_INGRESS; fi
    benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-exping --out /tmp/ab-ing-$v-$i > /tmp/ab-ing-$v-$i.log 2>&1
    echo "$v $i $(date +%T)"
  done
done
