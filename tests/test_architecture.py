"""The package's house rules, read off its source: imports, layers and the one training loop.

Each module of ``astrokin`` is parsed (nothing is imported) and every import
statement, at module level or inside a function, becomes an edge of the
module graph. The rules are those of ``docs/developer.rst``.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "astrokin"


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_package(name):
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve(importer, node):
    """``(module, names)`` an import statement reads from (absolute, astrokin's only)."""
    if isinstance(node, ast.Import):
        return [(a.name, []) for a in node.names if a.name.startswith("astrokin")]
    base = node.module or ""
    if node.level:
        here = importer if _is_package(importer) else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            here = here.rpartition(".")[0]
        base = f"{here}.{base}" if base else here
    if not base.startswith("astrokin"):
        return []
    return [(base, [a.name for a in node.names])]


def _imports():
    """``(importer, imported module, imported name or None, line)`` of every import."""
    out = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for module, names in _resolve(name, node):
                if not names:
                    out.append((name, module, None, node.lineno))
                for imported in names:
                    sub = f"{module}.{imported}"
                    if sub in MODULES:  # ``from package import submodule``
                        out.append((name, sub, None, node.lineno))
                    else:
                        out.append((name, module, imported, node.lineno))
    return out


IMPORTS = _imports()


def _subpackage(module):
    """The first-level part a module belongs to (``astrokin.fitting``, ``astrokin.beams``)."""
    return ".".join(module.split(".")[:2])


def _private(part):
    return part.startswith("_") and not part.startswith("__")


def test_the_parser_sees_the_imports_it_should():
    # A check that finds nothing because it reads nothing would pass for ever.
    assert len(MODULES) > 40
    edges = {(a, b) for a, b, _, _ in IMPORTS}
    assert ("astrokin.fitting.fitter", "astrokin.fitting.training") in edges  # lazy
    assert ("astrokin.fitting", "astrokin.fitting.fitter") in edges  # relative import
    assert ("astrokin.fitting.pretraining", "astrokin.synthetic") in edges  # inside a function
    assert ("astrokin.survey.distributed", "astrokin.fitting.training") in edges


def test_no_module_reaches_into_another_subpackage_s_private_names():
    """Shared helpers are public or live in top-level private modules (``astrokin._io``...)."""
    bad = []
    for importer, module, name, line in IMPORTS:
        if _subpackage(importer) == _subpackage(module):
            continue
        # Below the top level (astrokin._io is shared), no private module...
        inner = [part for part in module.split(".")[2:] if _private(part)]
        # ... and no private name of any module.
        if inner or (name is not None and _private(name)):
            bad.append(f"{importer}:{line} imports {name or module} from {module}")
    assert not bad, "\n".join(bad)


def test_the_module_graph_has_no_cycle():
    graph = {}
    for importer, module, _, _ in IMPORTS:
        if module != importer and module in MODULES:
            graph.setdefault(importer, set()).add(module)
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(MODULES):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("lower, upper", [
    ("astrokin.models", "astrokin.fitting"),
    ("astrokin.models", "astrokin.survey"),
    ("astrokin.rendering", "astrokin.models"),
    ("astrokin.rendering", "astrokin.fitting"),
    ("astrokin.fitting", "astrokin.survey"),
    ("astrokin.fitting", "astrokin.cli"),
    ("astrokin.fitting", "astrokin.visualization"),
])
def test_lower_layers_do_not_import_higher_ones(lower, upper):
    bad = [f"{a}:{line} imports {b}" for a, b, _, line in IMPORTS
           if _subpackage(a) == lower and _subpackage(b) == upper]
    assert not bad, "\n".join(bad)


def test_one_training_loop():
    """``loss.backward()`` is called in one place: the guarded loop of fitting/training.py."""
    calls = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "backward":
                calls.append(f"{name}:{node.lineno}")
    assert calls == [c for c in calls if c.startswith("astrokin.fitting.training:")]
    assert len(calls) == 1, calls
