import csv,collections,sys
edges=collections.defaultdict(set); kinds={}
for f,l,k,s,t,n in csv.reader(open('/tmp/plan18/internal.tsv'),delimiter='\t'):
    src=f[:-3].replace('/','.'); src=src[:-9] if src.endswith('.__init__') else src
    if t=='edgekit' and n=='__version__': t='edgekit.__version__'
    if src==t: continue
    edges[src].add(t); kinds.setdefault((src,t),[]).append(f"{f}:{l}({k})")
nodes=set(edges)|{t for v in edges.values() for t in v}
# tarjan
idx={};low={};st=[];on=set();res=[];i=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=i[0];i[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        c=[]
        while True:
            w=st.pop();on.discard(w);c.append(w)
            if w==v:break
        res.append(c)
for v in sorted(nodes):
    if v not in idx: sc(v)
for c in res:
    if len(c)>1:
        print(len(c),sorted(c))
        for a in c:
            for b in edges.get(a,()):
                if b in c: print('   ',a,'->',b,kinds[(a,b)])
