#!/bin/bash
cd /work/main
for i in 1 2; do
  for v in A C B; do
    case $v in A) unset PREZERO;; B) export PREZERO=1;; C) export PREZERO=falloc;; esac
    benches/fairness.sh --repeat 1 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-527e515 --out /tmp/ab-fa-$v-$i > /tmp/ab-fa-$v-$i.log 2>&1
    echo "$v $i $(sed -n '/^| corerelay | same-core | [0-9]/p' /tmp/ab-fa-$v-$i/summary.md | head -1 | awk -F'|' '{print "big solo", $10, "mixed", $11, "small p99 idle/mixed", $5, $7}')"
  done
done
