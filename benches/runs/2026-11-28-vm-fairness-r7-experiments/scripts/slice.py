# Experiment: give the relay's executor threads a short EEVDF slice (sched_setattr sched_runtime).
import ctypes, os, struct, sys, time, subprocess
libc = ctypes.CDLL(None, use_errno=True)
SLICE_NS = int(sys.argv[1]); pattern = sys.argv[2]
def setattr_slice(tid):
    attr = struct.pack("IIQiIQQQII", 56, 0, 0, 0, 0, SLICE_NS, 0, 0, 0, 0)
    buf = ctypes.create_string_buffer(attr, 56)
    r = libc.syscall(314, tid, buf, 0)
    return r, ctypes.get_errno()
def getattr_slice(tid):
    buf = ctypes.create_string_buffer(56)
    r = libc.syscall(315, tid, buf, 56, 0)
    return struct.unpack("IIQiIQQQII", buf.raw)[5]
seen=set(); log=open("/tmp/slice.log","a")
while True:
    pids = subprocess.run(["pgrep","-f",pattern],capture_output=True,text=True).stdout.split()
    for pid in pids:
        try: tids=os.listdir(f"/proc/{pid}/task")
        except OSError: continue
        for tid in tids:
            if (pid,tid) in seen: continue
            try: comm=open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            except OSError: continue
            if comm.startswith("corerelay-"):
                seen.add((pid,tid)); r=setattr_slice(int(tid))
                print(pid,tid,comm,"set",r,"now",getattr_slice(int(tid)),file=log,flush=True)
    time.sleep(0.05)
