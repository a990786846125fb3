#!/bin/bash
# e2e throughput A/B: d63088b (a send per piece of the BDAT flight) against da42237 (one sendmsg).
cd /work/main
for i in 1 2; do
  for v in d63088b da42237; do
    benches/e2e.sh --systems corerelay --modes plain --sizes "2048 20480" --conns "10 50" --cores all --repeat 2 --messages 20000 --rates "" --no-smtp-source --spread-accounts 0 --bin target/ab/corerelay-$v --out /tmp/e2e-vec-$v-$i > /tmp/e2e-vec-$v-$i.log 2>&1
    echo "$v $i $(date +%T)"
  done
done
