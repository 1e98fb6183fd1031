"""
bench/house.py: the layout's promises, measured. The import graph of the project's modules (imports
inside functions included), its cycles, the same graph folded by folder; the imports still inside
functions and what they import; the sys.path hacks; every .py file's length. tests/test_house.py
asserts the promises (README: "Files"); this prints them.

    python -m bench.house              # the report, for the repository it runs in
    python -m bench.house --root=DIR   # another checkout (e.g. a worktree of an older commit)
"""
import argparse
import ast
import os
import sys
from collections import Counter

PACKAGES = ('core', 'training', 'inference', 'bench')
# packages that stay imported where they are needed: optional, or seconds to import (see the README)
HEAVY = {'matplotlib', 'datasets', 'music21', 'abctoolkit', 'huggingface_hub', 'pyarrow', 'pypdfium2',
         'resvg_py', 'verovio', 'wandb', 'timm', 'lilypond', 'augraphy', 'albumentations',
         'torch.ao.quantization'}  # deprecated: imported under a warnings filter (quant.py)


def python_files(root):
    """{module name: path relative to root} of every .py file but tests/ and config/ (config files are
    exec'd, not imported). data/'s scripts are named data.<folder>.<file>."""
    out = {}
    for dp, dn, fn in os.walk(root):
        dn[:] = sorted(d for d in dn if not d.startswith('.') and d not in ('__pycache__', 'tests', 'config', 'results'))
        for f in sorted(fn):
            if f.endswith('.py'):
                rel = os.path.relpath(os.path.join(dp, f), root)
                name = rel[:-3].replace(os.sep, '.')
                out[name[:-len('.__init__')] if name.endswith('.__init__') else name] = rel
    return out


def import_graph(root):
    """{module: set of project modules it imports}. data/'s builders import their neighbours by bare
    name (their folders are on sys.path), so a bare name from a data/ module resolves there first."""
    mods = python_files(root)
    bare = {n.split('.')[-1]: n for n in mods if n.startswith('data.')}

    def resolve(mod, src):
        if src.startswith('data.') and mod in bare and mod != 'data':
            return bare[mod]
        return mod if mod in mods else None

    edges = {m: set() for m in mods}
    for name, rel in mods.items():
        for node in ast.walk(ast.parse(open(os.path.join(root, rel)).read())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [resolve(a.name, name) or resolve(a.name.split('.')[0], name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                subs = [resolve(f'{node.module}.{a.name}', name) for a in node.names]
                targets = [s for s in subs if s] or [resolve(node.module, name)]
            edges[name].update(t for t in targets if t and t != name)
    return edges


def cycles(edges):
    """strongly connected components of more than one node (Tarjan): the import circles."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def folder(m):
    """a module's node in the folded graph: its package, 'data/' for the corpus builders, else itself."""
    top = m.split('.')[0]
    if top in PACKAGES:
        return top + '/'
    return 'data/' if m.startswith('data.') else m


def folded(edges):
    out = {}
    for a, bs in edges.items():
        for b in bs:
            if folder(a) != folder(b):
                out.setdefault(folder(a), set()).add(folder(b))
    return {a: out.get(a, set()) for a in {folder(m) for m in edges}}


def inner_imports(root):
    """[(path, line, package)] of the imports inside functions (or any block): the top-level package,
    or the whole module name where HEAVY names it (torch.ao.quantization)."""
    out = []
    for rel in python_files(root).values():
        tree = ast.parse(open(os.path.join(root, rel)).read())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top and not getattr(node, 'level', 0):
                mod = node.names[0].name if isinstance(node, ast.Import) else node.module
                out.append((rel, node.lineno, mod if mod in HEAVY else mod.split('.')[0]))
    return out


def path_hacks(root):
    """[(path, line)] of every call of sys.path.insert / sys.path.append."""
    out = []
    for rel in python_files(root).values():
        for node in ast.walk(ast.parse(open(os.path.join(root, rel)).read())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ('sys.path.insert', 'sys.path.append'):
                out.append((rel, node.lineno))
    return out


def lengths(root):
    return {rel: sum(1 for _ in open(os.path.join(root, rel))) for rel in python_files(root).values()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument('--root', default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    root = ap.parse_args().root
    edges = import_graph(root)
    print(f"module import cycles: {cycles(edges) or 'none'}")
    fold = folded(edges)
    print(f"folder import cycles: {cycles(fold) or 'none'}")
    for a in sorted(fold):
        if fold[a]:
            print(f"  {a} -> {', '.join(sorted(fold[a]))}")
    inner = inner_imports(root)
    print(f"imports inside functions: {len(inner)}: " + ', '.join(f'{k} {n}' for k, n in Counter(p for _, _, p in inner).most_common()))
    for rel, line, pkg in inner:
        if pkg not in HEAVY:
            print(f"  not an optional/heavy package: {rel}:{line} {pkg}")
    hacks = path_hacks(root)
    print(f"sys.path hacks: {len(hacks)}: " + ', '.join(f'{r}:{i}' for r, i in hacks))
    n = lengths(root)
    top = sorted(r for r in n if os.sep not in r)
    print(f"top-level .py files: {len(top)}: {' '.join(top)}")
    print('longest files: ' + ', '.join(f'{r} {k}' for r, k in sorted(n.items(), key=lambda x: -x[1])[:6]))


if __name__ == '__main__':
    sys.exit(main())
