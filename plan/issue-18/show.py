import json,os
d=json.load(open('/tmp/plan18/imports.json'))
mods=set()
for dp,dn,fn in os.walk('/work/main/edgekit'):
    for f in fn:
        if f.endswith('.py'):
            r=os.path.relpath(os.path.join(dp,f),'/work/main')[:-3].replace('/','.')
            mods.add(r[:-9] if r.endswith('.__init__') else r)
def resolve(e):
    t=e['target']
    res=[]
    if t in mods and t in ('edgekit','edgekit.zoo','edgekit.runners','edgekit.trt'):
        for n in e['names']:
            if t+'.'+n in mods: res.append(t+'.'+n)
            else: res.append(t)
        return sorted(set(res)) or [t]
    return [t]
lines=[]
for e in d:
    if not (e['target'] or '').startswith('edgekit'): continue
    for t in resolve(e):
        lines.append((e['file'],e['line'],e['kind'],e['scope'],t,','.join(e['names'])))
for l in sorted(lines): print(*l, sep='\t')
