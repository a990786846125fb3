#!/usr/bin/env python3
"""Where a small account's message spends its time inside the relay, stage by stage.

Reads the per-message trace lines that benches/stage-trace.patch makes the relay print
(to stderr, with CORERELAY_DIAG=1; benches/fairness.sh keeps them as diag-<placement>-<run>-<repeat>.txt)
and prints p50 / p90 / p99 / max in ms of each stage for the messages of every account but
`big*`:

  submit->append   end of data (the message id's time) to the owner's spool append
  append->commit   waiting for the express stream's committer to start a batch with it
  write            the batch's DMA write
  fsync            the batch's fdatasync
  synced->durable  the committer's answer reaching the owner's task
  durable->start   due in delivery to its transaction's start (due line, ready queue)
  transaction      the SMTP transaction with the sink, MAIL to the reply after the data
  total            end of data to the sink's reply (what corerelay_account_delivery_seconds measures)

usage: benches/stage_trace.py diag-same-core-mixed-1.txt [more files...]
The trace is not built in: apply the patch, build, run, and revert
(git apply benches/stage-trace.patch; ...; git apply -R benches/stage-trace.patch).
"""

import bisect
import sys


def pct(values, p):
    values = sorted(values)
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] / 1000


def stages(path):
    append, durable, sent, commits, synced = {}, {}, {}, [], {}
    for line in open(path):
        w = line.split()
        if len(w) < 5 or w[0] != "DIAG":
            continue
        if w[1] == "append":
            append[w[3]] = int(w[4])
        elif w[1] == "durable":
            durable[w[3]] = int(w[4])
        elif w[1] == "sent":
            sent[w[3]] = (int(w[4]), int(w[5]))
        elif w[1] == "commit":
            commits.append((int(w[3]), int(w[4])))
        elif w[1] == "synced":
            synced[int(w[3])] = int(w[4])
    commits.sort()
    starts = [c[0] for c in commits]
    out = {k: [] for k in ("submit->append", "append->commit", "write", "fsync", "synced->durable",
                           "durable->start", "transaction", "total")}
    for key, appended in append.items():
        if key not in durable or key not in sent:
            continue
        end_of_data, done = int(key), durable[key]
        # The express batch that carried it: the first to start after the append and be
        # synced before the message was durable.
        i = bisect.bisect_left(starts, appended)
        while i < len(commits) and not (commits[i][0] in synced and synced[commits[i][0]] <= done):
            i += 1
        start, answer = sent[key]
        if i < len(commits):
            t0, written = commits[i]
            out["append->commit"].append(t0 - appended)
            out["write"].append(written - t0)
            out["fsync"].append(synced[t0] - written)
            out["synced->durable"].append(done - synced[t0])
        out["submit->append"].append(appended - end_of_data)
        out["durable->start"].append(start - done)
        out["transaction"].append(answer - start)
        out["total"].append(answer - end_of_data)
    return out


def main():
    for path in sys.argv[1:]:
        out = stages(path)
        print(f"{path}: {len(out['total'])} messages")
        for name, values in out.items():
            print(f"  {name:16} p50 {pct(values, 50):5.2f}  p90 {pct(values, 90):5.2f}  "
                  f"p99 {pct(values, 99):5.2f}  max {pct(values, 100):5.2f} ms")


if __name__ == "__main__":
    main()
