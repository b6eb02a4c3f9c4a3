import ast,sys
for p in sys.argv[1:]:
    src=open(p).read(); t=ast.parse(src); n=len(src.splitlines())
    print(f"== {p} ({n} lines)")
    doc=ast.get_docstring(t); print("   doc:", (doc or '').splitlines()[0] if doc else None)
    for node in t.body:
        if isinstance(node,(ast.FunctionDef,ast.ClassDef,ast.AsyncFunctionDef)):
            print(f"   {node.lineno:4d}-{node.end_lineno:4d} {'class' if isinstance(node,ast.ClassDef) else 'def'} {node.name}")
        elif isinstance(node,(ast.Assign,ast.AnnAssign)) and node.end_lineno-node.lineno>3:
            print(f"   {node.lineno:4d}-{node.end_lineno:4d} const {ast.unparse(node.targets[0] if isinstance(node,ast.Assign) else node.target)}")
