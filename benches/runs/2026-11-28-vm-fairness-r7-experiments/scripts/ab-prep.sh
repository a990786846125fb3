#!/bin/bash
cd /work/main
for i in 1 2 3; do
  for v in 527e515 prep; do
    benches/fairness.sh --repeat 1 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-$v --out /tmp/ab-prep-$v-$i > /tmp/ab-prep-$v-$i.log 2>&1
    echo "$v $i $(sed -n '/^| corerelay | same-core | [0-9]/p' /tmp/ab-prep-$v-$i/summary.md | head -1 | awk -F'|' '{print "big solo", $10, "mixed", $11, "small p99 idle/mixed", $5, $7}') prepared=$(grep -h '^corerelay_spool_segments_prepared_total' /tmp/ab-prep-$v-$i/metrics-corerelay-same-core-solo-1.txt | awk '{s+=$2} END{print s}') fresh=$(grep -h '^corerelay_spool_segments_fresh_total' /tmp/ab-prep-$v-$i/metrics-corerelay-same-core-solo-1.txt | awk '{s+=$2} END{print s}')"
  done
done
