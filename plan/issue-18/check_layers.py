import csv,sys
sys.path.insert(0,'/tmp/plan18')
from mapping import MODULES,NAMES
LAYERS=['cli','deploy|export','zoo','runtime','trt','quant','runners','base']
def layer(m):
    if m=='edgekit' : return None
    p=m.split('.')[1]
    for i,l in enumerate(LAYERS):
        if p in l.split('|'): return i
    return LAYERS.index('base')
def new(mod,names=''):
    m=MODULES.get(mod,mod)
    return m
desktop=('edgekit.export','edgekit.zoo.definitions','edgekit.zoo.weights','edgekit.zoo.weights_fetch','edgekit.zoo.checkpoint')
for f,l,k,s,t,n in csv.reader(open('/tmp/plan18/internal.tsv'),delimiter='\t'):
    src=f[:-3].replace('/','.'); src=src[:-9] if src.endswith('.__init__') else src
    if src=='edgekit' or t=='edgekit': continue
    ns=[x for x in n.split(',') if x]
    tgts={NAMES.get((t,x),MODULES.get(t,t)) for x in ns} or {MODULES.get(t,t)}
    S=MODULES.get(src,src)
    for T in tgts:
        ls,lt=layer(S),layer(T)
        sib = S.split('.')[1]!=T.split('.')[1] and ls==lt and '|' in LAYERS[ls]
        up = lt is not None and ls is not None and lt<ls
        dev = not S.startswith(desktop) and not S.startswith('edgekit.cli') and T.startswith(desktop)
        if up or sib or dev:
            print(f"{f}:{l} ({k}) {S} -> {T} [{n}]", 'UP' if up else '', 'SIBLING' if sib else '', 'TIER' if dev else '')
