"""Architecture rules: cheap import, layered dependencies, heavy packages only where allowed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Where each source directory installs, and its layer: a module may import mpicoll modules of
# lower layers only (siblings on one layer must not import each other). See DESIGN.md.
PACKAGES = {"mpicoll": ROOT / "mpicoll", "mpicoll.kernels": ROOT / "kernels", "mpicoll.bench": ROOT / "bench"}
LAYERS = [
    ("mpicoll.errors", 0), ("mpicoll.config", 1),
    ("mpicoll.timeline", 2),  # stdlib only (mpi4py when started): every layer above records into it
    ("mpicoll.backend", 2),
    ("mpicoll.kernels", 3),
    ("mpicoll.transport", 4),
    ("mpicoll.collectives", 5), ("mpicoll.compression", 5),
    ("mpicoll.model", 5),  # the cost model: arithmetic only
    ("mpicoll.model.probe", 6),  # ... and its measurements, which run collectives and codecs
    ("mpicoll.aggregation", 7),
    ("mpicoll", 8),  # the package facade (it exposes every layer): only the front ends may import it
    ("mpicoll.torch", 8),  # the PyTorch adapter: below the benchmark suite, whose torch-step times it
    ("mpicoll.horovod", 9),  # Horovod's API on the adapter
    ("mpicoll.bench", 9), ("mpicoll.info", 9),
    ("mpicoll.__main__", 10),
]
# third-party packages that only these modules may import (at any depth); the GPU check scripts
# drive the device themselves, compare with torch.topk and run the torch adapter on CUDA; torch-step
# times training steps against DDP; the adapter hands CUDA tensors to mpicoll as CuPy arrays (DLPack)
HEAVY = {"torch": ("mpicoll.torch", "mpicoll.horovod.torch", "mpicoll.bench.gpu_check", "mpicoll.bench.gpu_ranks",
                   "mpicoll.bench.torch_step", "mpicoll.bench.optim_step"),
         "numba": ("mpicoll.kernels",),
         "cupy": ("mpicoll.kernels", "mpicoll.bench.gpu_check", "mpicoll.bench.gpu_ranks", "mpicoll.torch.tensors")}


def module_name(path: Path) -> str:
    """The installed module name of a source file (``kernels/x.py`` -> ``mpicoll.kernels.x``)."""
    package, directory = next((p, d) for p, d in PACKAGES.items() if d in path.parents)
    rel = path.relative_to(directory).with_suffix("")
    return ".".join([package, *rel.parts]).removesuffix(".__init__")


def layer_of(module: str) -> tuple[str, int] | None:
    best = None
    for prefix, layer in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return best


def imports_of(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found.extend([target] if node.module else [f"{target}.{a.name}" for a in node.names])
            else:
                found.append(node.module or "")
    return found


def all_modules():
    for directory in PACKAGES.values():
        for path in sorted(directory.rglob("*.py")):
            yield path, module_name(path)


def test_layers_point_down():
    problems = []
    for path, module in all_modules():
        mine = layer_of(module)
        if mine is None or module == "mpicoll":
            continue
        for target in imports_of(path, module):
            theirs = layer_of(target)
            if theirs is None or theirs[0] == mine[0]:
                continue
            if theirs[1] >= mine[1]:
                problems.append(f"{module} (layer {mine[1]}) imports {target} (layer {theirs[1]})")
    assert not problems, "imports must point down the layers of DESIGN.md:\n" + "\n".join(problems)


def test_heavy_packages_only_where_allowed():
    problems = []
    for path, module in all_modules():
        for target in imports_of(path, module):
            top = target.split(".")[0]
            allowed = HEAVY.get(top)
            if allowed and not any(module == a or module.startswith(a + ".") for a in allowed):
                problems.append(f"{module} imports {target}")
    assert not problems, "\n".join(problems)


def test_import_mpicoll_is_cheap():
    code = ("import sys, mpicoll; heavy = [m for m in ('numba', 'cupy', 'torch', 'mpi4py', 'mpi4py.MPI') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_public_api_is_lazy_but_complete():
    code = ("import mpicoll; names = [n for n in mpicoll.__all__ if not hasattr(mpicoll, n)]; print(names); "
            "print(callable(mpicoll.allreduce))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.split() == ["[]", "True"], out.stdout + out.stderr


# Import cycles that are being broken elsewhere right now; remove an entry when its fix is merged.
KNOWN_CYCLES: list[set[str]] = []  # none: comm -> watchdog is one direction since transport/entry.py


def _bound_at_top(path: Path) -> set[str]:
    """Names a module binds at its top level (imports, definitions, assignments)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def import_graph() -> dict[str, set[str]]:
    """Every mpicoll module and the mpicoll modules it imports, at any depth of its code (function-level
    and late imports included): ``from pkg import name`` counts as importing the module ``pkg.name``
    when there is one and ``pkg``'s ``__init__`` does not bind ``name`` itself, else ``pkg``."""
    modules = dict((module, path) for path, module in all_modules())
    bound = {m: _bound_at_top(p) for m, p in modules.items() if p.name == "__init__.py"}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    own = alias.name in bound.get(base, ()) and not (base == module and path.name == "__init__.py")
                    targets.add(submodule if submodule in modules and not own else base)
        graph[module] = {t for t in targets if t in modules and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_cycle_finder_sees_late_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    late = ast.parse("def f():\n    from .api import choose_path\n")  # a function-level import is an edge too
    assert any(isinstance(n, ast.ImportFrom) and n.module == "api" for n in ast.walk(late))


def test_no_import_cycles():
    found = [sorted(c) for c in cycles(import_graph()) if c not in KNOWN_CYCLES]
    assert not found, "import cycles (late imports included) must be broken:\n" + "\n".join(map(str, found))


def test_other_layers_use_collectives_through_its_internal_api():
    """Outside :mod:`mpicoll.collectives`, only the package (its public ``__init__``) and its
    ``internal`` module may be imported: everything else there is private to it."""
    allowed = {"mpicoll.collectives", "mpicoll.collectives.internal"}
    problems = []
    for module, targets in import_graph().items():
        if module.startswith("mpicoll.collectives"):
            continue
        problems += [f"{module} imports {t}" for t in sorted(targets)
                     if t.startswith("mpicoll.collectives.") and t not in allowed]
    assert not problems, "use mpicoll.collectives or mpicoll.collectives.internal:\n" + "\n".join(problems)
