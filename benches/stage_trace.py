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

and, when the trace also has the load's send stamps and the sink's arrivals (the patch as
refreshed in round nine; the sink's DIAG lines are kept with the relay's):

  load->eod        the load tool's send stamp to the end of data at the relay (the client's
                   write, the session task's turn to read it, the SMTP parsing)
  start->arrived   the transaction's start to the message's arrival at the sink
  end to end       the load's send stamp to the arrival (what the sink's latencies are)

and for the slowest 2% end to end, each message's stages one by one.

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
    load_sent, arrived = {}, {}
    for line in open(path):
        w = line.split()
        if len(w) < 5 or w[0] != "DIAG":
            continue
        if w[1] == "append":
            append[w[3]] = int(w[4])
            if len(w) > 5 and w[5] != "0":
                load_sent[w[3]] = (w[2], w[5])
        elif w[1] == "arrived" and len(w) > 4:
            arrived[(w[2], w[3])] = int(w[4])
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
                           "durable->start", "transaction", "total", "load->eod", "start->arrived",
                           "end to end")}
    slow = []
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
        if key in load_sent and load_sent[key] in arrived:
            sent_us, came = int(load_sent[key][1]), arrived[load_sent[key]]
            out["load->eod"].append(end_of_data - sent_us)
            out["start->arrived"].append(came - start)
            out["end to end"].append(came - sent_us)
            row = {"end to end": came - sent_us, "load->eod": end_of_data - sent_us,
                   "submit->append": appended - end_of_data, "append->durable": done - appended,
                   "durable->start": start - done, "start->arrived": came - start}
            if i < len(commits):
                del row["append->durable"]
                row.update({"append->commit": t0 - appended, "write": written - t0,
                            "fsync": synced[t0] - written, "synced->durable": done - synced[t0]})
            slow.append(row)
    slow.sort(key=lambda r: -r["end to end"])
    out["slowest"] = slow[: max(1, len(slow) // 50)] if slow else []
    return out


def main():
    for path in sys.argv[1:]:
        out = stages(path)
        print(f"{path}: {len(out['total'])} messages")
        for name, values in out.items():
            if name == "slowest" or not values:
                continue
            print(f"  {name:16} p50 {pct(values, 50):5.2f}  p90 {pct(values, 90):5.2f}  "
                  f"p99 {pct(values, 99):5.2f}  max {pct(values, 100):5.2f} ms")
        if out["slowest"]:
            print("  slowest 2% end to end, ms per stage:")
            for row in out["slowest"]:
                print("   " + "  ".join(f"{k} {v / 1000:.2f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
