#!/bin/bash
cd /work/main
for i in 1 2 3; do
  for v in off 250; do
    if [ $v = off ]; then unset CR_POLL_US; else export CR_POLL_US=$v; fi
    CORERELAY_DIAG=1 benches/fairness.sh --repeat 2 --tools-cpus 1 --no-postfix --placements same-core --bin target/ab/corerelay-poll --big-nice 19 --out /tmp/poll-$v-$i > /tmp/poll-$v-$i.log 2>&1
    echo "$v pair $i: $(grep 'same-core | 2 / 2' /tmp/poll-$v-$i.log | tail -1)"
    grep -o "big 50000, [0-9]*/s" /tmp/poll-$v-$i/summary.md | tr '\n' ' '; echo
  done
done
