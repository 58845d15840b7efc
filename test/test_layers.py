"""The package's layers point one way, and no module imports itself back through others.

Every import counts, function-local ones included (a circle hidden inside functions is still a
circle). Layers from the bottom up; each may import only the layers listed for it.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'sgdfuse_ros'
ROOT = 'sgdfuse_ros'

#: layer -> the layers it may import (itself included).
ALLOWED = {
    'core': {'core'},
    'models': {'core', 'models'},
    'runtime': {'core', 'models', 'runtime'},
    'masks': {'core', 'models', 'runtime', 'masks'},
    'fusion': {'core', 'models', 'runtime', 'masks', 'fusion'},
    'training': {'core', 'models', 'runtime', 'masks', 'fusion', 'training'},
    'params': {'core', 'runtime', 'masks', 'fusion', 'params'},
    'ros': {'core', 'runtime', 'masks', 'fusion', 'params', 'ros'},
    'fleet': {'core', 'runtime', 'masks', 'fusion', 'params', 'ros', 'fleet'},
    'tools': {'core', 'models', 'runtime', 'masks', 'fusion', 'training', 'params', 'ros',
              'fleet', 'tools'},
}
#: Modules that are no layer: the package root (its version only).
ROOT_MODULES = {ROOT}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob('*.py'):
        rel = path.relative_to(PACKAGE.parent).with_suffix('')
        parts = list(rel.parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        mods['.'.join(parts)] = path
    return mods


MODULES = _modules()


def _imports(mod: str, path: Path) -> set[str]:
    """Package modules that ``mod`` imports (resolved to modules where a name is one)."""
    is_pkg = path.name == '__init__.py'
    package = mod if is_pkg else mod.rpartition('.')[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split('.')[0] == ROOT)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if target.split('.')[0] != ROOT:
                continue
            for alias in node.names:
                sub = f'{target}.{alias.name}'
                out.add(sub if sub in MODULES else target)
    while True:  # a dotted name that is no module: its nearest existing parent
        fixed = {m if m in MODULES else m.rpartition('.')[0] for m in out}
        if fixed == out:
            return out - {''}
        out = fixed


def layer_of(mod: str) -> str | None:
    if mod in ROOT_MODULES:
        return None
    return mod.split('.')[1]


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    unknown = sorted(m for m in MODULES if m not in ROOT_MODULES and layer_of(m) not in ALLOWED)
    assert not unknown, f'modules outside the known layers: {unknown}'


def test_imports_point_down_only():
    bad = []
    for mod, targets in GRAPH.items():
        layer = layer_of(mod)
        for t in targets:
            tl = layer_of(t)
            if tl is None:
                continue
            allowed = ALLOWED.get(layer, set()) if layer else set()
            if tl not in allowed:
                bad.append(f'{mod} -> {t}')
    assert not bad, 'upward or sideways imports:\n' + '\n'.join(sorted(bad))


def test_no_import_circle():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w == v or w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f'import circles: {cycles}'


def test_no_overgrown_module():
    long = {m: n for m, p in MODULES.items()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f'modules over {MAX_LINES} lines: {long}'


def test_core_and_method_layers_import_no_ros():
    for mod, path in MODULES.items():
        if layer_of(mod) in ('core', 'models', 'runtime', 'masks', 'fusion', 'params',
                             'training'):
            text = path.read_text()
            assert 'import rclpy' not in text and 'from rclpy' not in text, mod
