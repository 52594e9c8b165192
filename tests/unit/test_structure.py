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
# third-party packages that only these modules may import (at any depth); the GPU check script
# drives the device itself and compares with torch.topk; torch-step times training steps against DDP;
# the adapter hands CUDA tensors to mpicoll as CuPy arrays (DLPack)
HEAVY = {"torch": ("mpicoll.torch", "mpicoll.horovod.torch", "mpicoll.bench.gpu_check", "mpicoll.bench.torch_step"),
         "numba": ("mpicoll.kernels",),
         "cupy": ("mpicoll.kernels", "mpicoll.bench.gpu_check", "mpicoll.torch.tensors")}


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
