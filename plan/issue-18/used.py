import ast,os,sys,collections
root='/work/main'
targets=sys.argv[1:]
use=collections.defaultdict(lambda: collections.defaultdict(set))
files=[]
for d in ('edgekit','tests','benchmarks','examples'):
    for dp,dn,fn in os.walk(os.path.join(root,d)):
        if '__pycache__' in dp: continue
        files+= [os.path.join(dp,f) for f in fn if f.endswith('.py')]
for p in files:
    try: t=ast.parse(open(p).read())
    except Exception: continue
    rel=os.path.relpath(p,root)
    alias={}
    for n in ast.walk(t):
        if isinstance(n,ast.ImportFrom) and n.module and n.level==0:
            if n.module in targets:
                for a in n.names: use[n.module][a.name].add(rel)
            for a in n.names:
                full=n.module+'.'+a.name
                if full in targets: alias[a.asname or a.name]=full
        if isinstance(n,ast.Import):
            for a in n.names:
                if a.name in targets and a.asname: alias[a.asname]=a.name
    for n in ast.walk(t):
        if isinstance(n,ast.Attribute):
            v=n.value
            if isinstance(v,ast.Name) and v.id in alias:
                use[alias[v.id]][n.attr].add(rel)
            # edgekit.x.y attr chains
            s=None
            try: s=ast.unparse(v)
            except Exception: pass
            if s in targets: use[s][n.attr].add(rel)
for m in targets:
    print('==',m)
    for name,fs in sorted(use[m].items()):
        ext=sorted(f for f in fs if f!=m.replace('.','/')+'.py')
        if ext: print('  ',name,':',', '.join(ext))
