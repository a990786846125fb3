#!/usr/bin/env python3
"""CPU and memory accounting for benches/e2e.sh, read from /proc.

  proctree.py cpu PID...             CPU seconds used so far by each PID and every process below
                                     it, including children that have already exited (the kernel
                                     adds a reaped child's time to its parent's cutime/cstime), so
                                     a multi-process server like Postfix is measured whole by
                                     reading it before and after a run.
  proctree.py sample OUT PID...      every 0.5 s, the summed PSS of the PIDs and every process
                                     below them; writes the peak (KiB) to OUT after each sample,
                                     until killed. PSS splits shared pages among the processes
                                     that map them, so a process tree is not counted twice.
  proctree.py run OUT CMD...         runs CMD, passes its stdout through, writes the CPU seconds
                                     it used (user + system, children included) to OUT.
  proctree.py free-port              a free TCP port on 127.0.0.1.
"""

import os
import socket
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def children():
    """ppid -> [pid] for every process now."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def tree(roots):
    kids = children()
    seen, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(kids.get(pid, []))
    return seen


def cpu_seconds(pid):
    """utime + stime + cutime + cstime of one process (all its threads and reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" field 0 is the state (stat field 3): utime..cstime are stat fields 14-17.
    return sum(int(x) for x in fields[11:15]) / HZ


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "cpu":
        print(f"{sum(cpu_seconds(p) for p in tree(int(a) for a in args)):.3f}")
    elif cmd == "sample":
        out, roots, peak = args[0], [int(a) for a in args[1:]], 0
        while True:
            peak = max(peak, sum(pss_kib(p) for p in tree(roots)))
            with open(out + ".tmp", "w") as f:
                f.write(f"{peak}\n")
            os.replace(out + ".tmp", out)
            time.sleep(0.5)
    elif cmd == "run":
        out = args[0]
        pid = os.fork()
        if pid == 0:
            os.execvp(args[1], args[1:])
        _, status, usage = os.wait4(pid, 0)
        with open(out, "w") as f:
            f.write(f"{usage.ru_utime + usage.ru_stime:.3f}\n")
        sys.exit(os.waitstatus_to_exitcode(status))
    elif cmd == "free-port":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
        s.close()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
