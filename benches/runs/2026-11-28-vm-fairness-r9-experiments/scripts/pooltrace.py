import sys,glob,statistics
src=open('/work/main/benches/stage_trace.py').read().replace('slow[: max(1, len(slow) // 50)]','slow')
ns={}; exec(compile(src,'x','exec'),ns)
keys=["load->eod","append->commit","write","fsync","synced->durable","durable->start","start->arrived","end to end"]
def q(v,p):
    v=sorted(v); return v[min(len(v)-1,int(p*len(v)))]/1000 if v else 0
for pat in sys.argv[1:]:
    rows=sum((ns['stages'](f)['slowest'] for f in sorted(glob.glob(pat))),[])
    print(pat, len(rows))
    for k in keys:
        v=[r[k] for r in rows if r.get(k) is not None]
        print(f"   {k:16} p50 {q(v,.5):5.2f} p90 {q(v,.9):5.2f} p99 {q(v,.99):5.2f}")
