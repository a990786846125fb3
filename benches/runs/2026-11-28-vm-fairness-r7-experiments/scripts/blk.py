import sys, re, collections
ev=[]
for line in open(sys.argv[1]):
    m=re.match(r'\s*\[(\d+)\]\s+([\d.]+):\s+block:block_rq_(\w+): (.*)$', line)
    if not m: continue
    cpu,t,e,rest=int(m[1]),float(m[2]),m[3],m[4]
    tok=rest.split()
    rwbs=tok[1]
    i=tok.index('()')
    sector=int(tok[i+1]); nsect=int(tok[i+3]); comm=tok[-1]
    ev.append((t,e,rwbs,sector,nsect,comm,cpu))
t_end=ev[-1][0]; win=float(sys.argv[2])
ev=[x for x in ev if t_end-win-1 < x[0] < t_end-1]
def kind(rwbs,nsect):
    if 'F' in rwbs and nsect==0: return 'flush'
    if 'W' in rwbs: return 'write<=16K' if nsect*512<=16384 else 'write>16K'
    return 'read'
ins={}; iss=collections.defaultdict(list); svc=collections.defaultdict(list); qd=collections.defaultdict(list)
inflight=0; depth=collections.Counter(); issuer=collections.Counter()
for t,e,rwbs,sector,nsect,comm,cpu in ev:
    k=kind(rwbs,nsect); key=(sector,k)
    if e=='insert': ins[key]=t
    elif e=='issue':
        depth[min(inflight,4)]+=1; inflight+=1; iss[key].append(t)
        if k=='flush': issuer[(comm.split('/')[0]+'/'+comm.split('/')[1].split(':')[0] if '/' in comm else comm)]+=1
        if key in ins: qd[k].append(t-ins.pop(key))
    elif e=='complete':
        if iss[key]:
            svc[k].append(t-iss[key].pop(0)); inflight=max(0,inflight-1)
def p(v,x):
    v=sorted(v); return v[min(len(v)-1,int(len(v)*x))]*1000 if v else 0
for k in sorted(svc):
    v=svc[k]; print(f"{k:11s} n={len(v):5d}  issue->complete p50 {p(v,.5):.2f} p90 {p(v,.9):.2f} p99 {p(v,.99):.2f} ms | insert->issue p50 {p(qd[k],.5):.3f} p90 {p(qd[k],.9):.3f} p99 {p(qd[k],.99):.3f} (n={len(qd[k])})")
tot=sum(depth.values()); print("requests in flight at issue:", {d: round(c/tot,2) for d,c in sorted(depth.items())})
print("flush issuers:", issuer.most_common(6))
