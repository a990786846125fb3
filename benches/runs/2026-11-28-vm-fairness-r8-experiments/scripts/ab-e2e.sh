#!/bin/bash
cd /work/main
for i in 1 2; do
  for v in A B; do
    b=$([ $v = A ] && echo 0 || echo 100)
    benches/e2e.sh --systems corerelay --modes plain --sizes "2048 20480" --conns "10 50" --cores all --repeat 2 --messages 20000 --rates "" --no-smtp-source --spread-accounts 0 --bin target/ab/corerelay-blocking --relay-extra "$(printf '[spool]\nexpress_blocking_budget_ms = %s' $b)" --out /tmp/ab-e2e-$v-$i > /tmp/ab-e2e-$v-$i.log 2>&1
    echo "$v $i $(date +%T)"
  done
done
