import ast, os, sys, json
root='/work/main'
HEAVY={'torch','torchvision','timm','tensorflow','tensorrt','tensorrt_rtx','pycuda','cuda','cv2','onnxruntime','openvino','onnx','onnxsim','onnxslim','PIL','yaml','click','numpy','scipy','matplotlib','psutil','fastapi','uvicorn','cupy','polygraphy','modelopt'}
def modname(path):
    rel=os.path.relpath(path,root)[:-3].replace('/','.')
    if rel.endswith('.__init__'): rel=rel[:-9]
    return rel
out=[]
for dp,dn,fn in os.walk(os.path.join(root,'edgekit')):
    if '__pycache__' in dp: continue
    for f in sorted(fn):
        if not f.endswith('.py'): continue
        p=os.path.join(dp,f); m=modname(p)
        tree=ast.parse(open(p).read())
        ispkg=f=='__init__.py'
        # find scope for each node
        def walk(node, scope, intc):
            for ch in ast.iter_child_nodes(node):
                sc=scope; tc=intc
                if isinstance(ch,(ast.FunctionDef,ast.AsyncFunctionDef)): sc='fn:'+ch.name if scope=='top' else scope+'/'+ch.name
                if isinstance(ch,ast.If):
                    t=ch.test
                    if (isinstance(t,ast.Name) and t.id=='TYPE_CHECKING') or (isinstance(t,ast.Attribute) and t.attr=='TYPE_CHECKING'):
                        for c in ch.body: handle(c, scope, True); walk(c,scope,True)
                        for c in ch.orelse: handle(c,scope,intc); walk(c,scope,intc)
                        continue
                handle(ch, sc if not isinstance(ch,(ast.FunctionDef,ast.AsyncFunctionDef)) else scope, tc)
                walk(ch, sc, tc)
        def handle(ch, scope, tc):
            kind='typecheck' if tc else ('top' if scope=='top' else 'lazy')
            if isinstance(ch,ast.Import):
                for a in ch.names:
                    out.append(dict(mod=m,file=os.path.relpath(p,root),line=ch.lineno,target=a.name,names=[],kind=kind,scope=scope))
            elif isinstance(ch,ast.ImportFrom):
                if ch.level:
                    base=m.split('.') if ispkg else m.split('.')[:-1]
                    base=base[:len(base)-(ch.level-1)]
                    tgt='.'.join(base+([ch.module] if ch.module else []))
                else: tgt=ch.module
                out.append(dict(mod=m,file=os.path.relpath(p,root),line=ch.lineno,target=tgt,names=[a.name for a in ch.names],kind=kind,scope=scope))
        walk(tree,'top',False)
json.dump(out,open('/tmp/plan18/imports.json','w'),indent=1)
print(len(out))
