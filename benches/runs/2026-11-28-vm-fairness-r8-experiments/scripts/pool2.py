import json,sys,glob,math
def pct(v,p):
    v=sorted(v); k=max(1,math.ceil(p/100*len(v))); return v[k-1]/1000
def collect(pats):
    idle=[];mixed=[]
    for pat in pats:
        for f in sorted(glob.glob(pat+'/raw.jsonl')):
            for line in open(f):
                r=json.loads(line)
                if r['system']!='corerelay': continue
                for a in r['sink']['accounts']:
                    if a['account']=='group:small':
                        (idle if r['run']=='small' else mixed).extend(a.get('latencies_us',[]))
    return idle,mixed
for name,pats in [('off',['/tmp/ab-sync-A-*','/tmp/ab-blk-A-*']),('on',['/tmp/ab-sync-B-*','/tmp/ab-blk-B-*','/tmp/ab-inl2-A-*','/tmp/ab-yield-A-*'])]:
    i,m=collect(pats)
    print(name, len(i), len(m), ' '.join(f"p{p} {pct(i,p):.2f}/{pct(m,p):.2f}" for p in (50,90,95,99)), f"ratio {pct(m,99)/pct(i,99):.2f}")
