#!/bin/bash
cd /work/main
export CORERELAY_DIAG=1
for v in B A; do
  if [ $v = A ]; then extra=$'[spool]\nexpress_blocking_budget_ms = 0'; else extra=""; fi
  benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-trace ${extra:+--relay-extra "$extra"} --out /tmp/trace-$v > /tmp/trace-$v.log 2>&1
  echo "$v $(date +%T)"
done
