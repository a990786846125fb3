# Experiment: let the relay's io_uring worker threads (iou-wrk-*) run on every CPU.
import os, sys, time, subprocess
seen = set()
log = open("/tmp/iowq_aff.log", "a")
while True:
    try:
        pids = subprocess.run(["pgrep", "-f", "corerelay-527e515-trace serve"], capture_output=True, text=True).stdout.split()
    except Exception:
        pids = []
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
                except OSError:
                    continue
                if comm.startswith("iou-wrk") and (pid, tid) not in seen:
                    before = os.sched_getaffinity(int(tid))
                    os.sched_setaffinity(int(tid), {0, 1})
                    seen.add((pid, tid))
                    print(pid, tid, comm, sorted(before), "->", sorted(os.sched_getaffinity(int(tid))), file=log, flush=True)
        except OSError:
            pass
    time.sleep(0.05)
