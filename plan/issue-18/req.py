import ast,os
root='/work/main'
rows=[]
for dp,dn,fn in os.walk(root+'/edgekit'):
    if '__pycache__' in dp: continue
    for f in sorted(fn):
        if not f.endswith('.py'): continue
        p=os.path.join(dp,f); tree=ast.parse(open(p).read())
        def walk(n,scope):
            for ch in ast.iter_child_nodes(n):
                sc=scope
                if isinstance(ch,(ast.FunctionDef,ast.AsyncFunctionDef)): sc=(ch.name if scope=='top' else scope+'/'+ch.name)
                if isinstance(ch,ast.Call):
                    fnm=ch.func.attr if isinstance(ch.func,ast.Attribute) else getattr(ch.func,'id',None)
                    if fnm in ('require','available','import_module','find_spec') and ch.args:
                        a=ch.args[0]
                        val=a.value if isinstance(a,ast.Constant) else ast.unparse(a)
                        rows.append((os.path.relpath(p,root),ch.lineno,'top' if scope=='top' else 'lazy',scope,fnm,val))
                walk(ch,sc)
        walk(tree,'top')
for r in sorted(rows): print(*r,sep='\t')
