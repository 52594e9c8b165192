"""The CUDA C sources of the CuPy provider: they compile cleanly, and the kernels match the Python side.

The provider (``kernels/cupy_provider/``, one module per family) compiles each family file of ``kernels/cuda`` with the
prelude ``common.cu`` in front, through NVRTC, on first use. Here nvcc compiles the same
translation units to PTX for two architectures with warnings as errors, and the kernel names the
provider asks for are checked against the ``extern "C" __global__`` definitions, per file, both
ways: a renamed, moved or dropped kernel fails here instead of at the first call on a GPU.

Everything is read from the sources (``ast`` for the provider), so none of this needs CuPy or a GPU;
only the compile tests need nvcc.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "kernels" / "cuda"
PROVIDER = ROOT / "kernels" / "cupy_provider"
ARCHS = ["sm_80", "sm_90"]
KERNEL_DEF = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(')
KERNEL_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
# host scalar constructors of the provider -> the C type a kernel must declare for them
SCALAR_TYPES = {"int64": "long long", "int32": "int", "float32": "float", "float64": "double",
                "uint64": "unsigned long long", "u64": "unsigned long long"}
COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
KERNEL_NAME = re.compile(r"mpicoll_\w+")


def provider_tree() -> ast.Module:
    """Every module of the provider package as one tree (a constant or a launch may sit in any family)."""
    body = []
    for path in sorted(PROVIDER.glob("*.py")):
        body.extend(ast.parse(path.read_text(encoding="utf-8"), str(path)).body)
    return ast.Module(body=body, type_ignores=[])


def provider_constants(tree: ast.Module) -> dict[str, object]:
    """Module-level ``NAME = <literal>`` assignments of the provider."""
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return constants


def requested_kernels() -> dict[str, set[str]]:
    """Family file -> kernel names, from every ``launch("file.cu", name, ...)`` and ``get_kernel("file.cu", name)``
    call: ``name`` a string, or a subscript of a module-level dict of names (one per word size)."""
    tree = provider_tree()
    constants = provider_constants(tree)
    requested: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("launch", "get_kernel") and len(node.args) >= 2):
            continue
        family, name = node.args[:2]
        if isinstance(family, ast.Name) and isinstance(name, ast.Name):
            continue  # launch forwarding its own parameters to get_kernel
        assert isinstance(family, ast.Constant) and isinstance(family.value, str), \
            f"line {node.lineno}: the family file must be a literal"
        if isinstance(name, ast.Constant):
            names = {name.value}
        else:
            assert isinstance(name, ast.Subscript) and isinstance(name.value, ast.Name), \
                f"line {node.lineno}: a kernel name must be a literal or a lookup in a module-level dict"
            table = constants.get(name.value.id)
            assert isinstance(table, dict), f"line {node.lineno}: {name.value.id} is not a dict literal"
            names = set(table.values())
        requested.setdefault(family.value, set()).update(names)
    for node in ast.walk(tree):  # any direct RawModule lookup must use a literal too
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get_function"
                and node.args and isinstance(node.args[0], ast.Constant)):
            requested.setdefault("<any>", set()).add(node.args[0].value)
    return requested


def defined_kernels() -> dict[str, list[str]]:
    """File name -> ``extern "C" __global__`` kernel names defined in it (comments ignored)."""
    return {path.name: KERNEL_DEF.findall(COMMENTS.sub("", path.read_text(encoding="utf-8")))
            for path in sorted(CUDA_DIR.glob("*.cu"))}


def kernel_parameters() -> dict[str, list[str]]:
    """Kernel name -> its parameter types (``"float*"``, ``"long long"``, ...)."""
    params = {}
    for path in sorted(CUDA_DIR.glob("*.cu")):
        for name, plist in KERNEL_SIGNATURE.findall(COMMENTS.sub("", path.read_text(encoding="utf-8"))):
            types = [" ".join(p.split()).rsplit(" ", 1)[0].replace("const ", "").replace(" *", "*")
                     for p in plist.split(",")]
            params[name] = types
    return params


def host_type(arg: ast.expr) -> str | None:
    """The C type a launch argument is built for (``np.int64(n)`` -> ``long long``), None if not evident."""
    if isinstance(arg, ast.Call):
        func = arg.func
        fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        return SCALAR_TYPES.get(fname)
    return None


def prelude() -> str:
    return provider_constants(provider_tree())["PRELUDE"]


def translation_unit(name: str) -> str:
    """What the provider compiles for one file: the prelude, then the family (the prelude alone for itself)."""
    parts = [prelude()] if name == prelude() else [prelude(), name]
    return "".join(f'#line 1 "{part}"\n{(CUDA_DIR / part).read_text(encoding="utf-8")}\n' for part in parts)


def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return None


# ---------------------------------------------------------------- names


def test_sources_exist():
    files = defined_kernels()
    assert prelude() in files, f"the prelude {prelude()} is missing from {CUDA_DIR}"
    assert not files[prelude()], f"the prelude must hold helpers only, it defines {files[prelude()]}"
    families = set(requested_kernels()) - {"<any>"}
    assert families, "the provider requests no kernel at all: the parser no longer understands it"
    assert families <= set(files), f"missing family files: {sorted(families - set(files))}"
    unused = set(files) - families - {prelude()}
    assert not unused, f"CUDA files the provider never compiles: {sorted(unused)}"


def test_every_requested_kernel_is_defined_in_its_file():
    defined = defined_kernels()
    everywhere = {name for names in defined.values() for name in names}
    missing = [f"{family}: {name}" for family, names in requested_kernels().items() for name in sorted(names)
               if name not in (everywhere if family == "<any>" else defined.get(family, []))]
    assert not missing, "kernels the provider asks for but no .cu file defines there:\n" + "\n".join(missing)


def test_every_defined_kernel_is_requested_and_unique():
    requested = {name for names in requested_kernels().values() for name in names}
    seen: dict[str, str] = {}
    problems = []
    for file, names in defined_kernels().items():
        for name in names:
            if not KERNEL_NAME.fullmatch(name):
                problems.append(f"{file}: {name} lacks the mpicoll_ prefix")
            if name in seen:
                problems.append(f"{file}: {name} is also defined in {seen[name]}")
            seen[name] = file
            if name not in requested:
                problems.append(f"{file}: {name} is never requested by the provider")
    assert not problems, "\n".join(problems)


def test_kernel_names_in_provider_are_all_known():
    """A kernel name anywhere in the provider (say a table not used through launch) must exist."""
    everywhere = {name for names in defined_kernels().values() for name in names}
    names = {node.value for node in ast.walk(provider_tree())
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and KERNEL_NAME.fullmatch(node.value)}
    assert names, "no kernel name found in the provider"
    assert names <= everywhere, f"unknown kernels: {sorted(names - everywhere)}"


def test_launch_arguments_match_kernel_parameters():
    """Each literal ``launch`` passes as many arguments as the kernel takes, scalars of the declared
    C type (``np.int64`` for ``long long``...) and no typed scalar where a pointer is expected."""
    tree = provider_tree()
    constants = provider_constants(tree)
    params = kernel_parameters()
    problems = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "launch"
                and len(node.args) >= 3 and not any(isinstance(a, ast.Starred) for a in node.args)):
            continue
        name = node.args[1]
        if isinstance(name, ast.Constant):
            names = [name.value]
        elif isinstance(name, ast.Subscript) and isinstance(name.value, ast.Name):
            names = list(constants[name.value.id].values())
        else:
            continue
        args = node.args[3:]
        for kernel in names:
            types = params[kernel]
            if len(types) != len(args):
                problems.append(f"line {node.lineno}: {kernel} takes {len(types)} arguments, given {len(args)}")
                continue
            for i, (arg, ctype) in enumerate(zip(args, types, strict=True)):
                given = host_type(arg)
                if given is not None and given != ctype:
                    problems.append(f"line {node.lineno}: {kernel} argument {i} is {ctype}, given {given}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- compiling


@pytest.mark.slow  # nvcc: 3-8 s per file and architecture
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(p.name for p in CUDA_DIR.glob("*.cu")))
def test_compiles_with_nvcc(tmp_path, name, arch):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (on PATH, $CUDA_HOME/bin or /usr/local/cuda/bin): cannot compile the CUDA sources")
    options = [o for o in provider_constants(provider_tree())["NVRTC_OPTIONS"] if o != "--fmad=false"]
    source = tmp_path / name
    source.write_text(translation_unit(name), encoding="utf-8")
    ptx = tmp_path / f"{source.stem}.{arch}.ptx"
    cmd = [nvcc, "-ptx", f"-arch={arch}", "--fmad=false", "-Werror", "all-warnings", *options, str(source),
           "-o", str(ptx)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}{result.stderr}"
    fused = re.findall(r"^\s*fma\.\S+", ptx.read_text(), re.MULTILINE)
    assert not fused, f"{name}: fused multiply-adds in the PTX, which round differently than the reference: {fused[:3]}"
    flushed = re.findall(r"^\s*\S+\.ftz\S*", ptx.read_text(), re.MULTILINE)
    assert not flushed, f"{name}: instructions that flush subnormals to zero: {flushed[:3]}"


def test_the_provider_compiles_with_nvrtc_itself():
    """CuPy's ``RawModule(code=...)`` and ``RawKernel`` append ``-ftz=true`` to the caller's options,
    which flushed float32 subnormals on the H200 (sign bits lost, zero scales): the provider must
    compile through its own :func:`compile_source` and load the result by path."""
    offenders = [f"{path.name}:{n}" for path in sorted(PROVIDER.glob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"RawModule\(\s*code|RawKernel\(|ElementwiseKernel\(|ReductionKernel\(", line)]
    assert not offenders, f"CuPy compiles these with -ftz=true: {offenders}"


def test_arch_option_prefers_machine_code_and_falls_back_to_ptx():
    pytest.importorskip("cupy", reason="cupy is not installed")
    from mpicoll.kernels.cupy_provider.common import arch_option

    assert arch_option(90, (80, 86, 90)) == ("-arch=sm_90", "cubin")
    assert arch_option(100, (80, 86, 90)) == ("-arch=compute_90", "ptx")
    with pytest.raises(RuntimeError, match="none at or below"):
        arch_option(70, (80, 90))


@pytest.mark.parametrize("name", sorted(p.name for p in CUDA_DIR.glob("*.cu") if p.name != "common.cu"))
def test_nvrtc_compiles_every_family_without_flushing_subnormals(name):
    """The provider's own NVRTC route (no GPU needed, only NVRTC's library): no ``.ftz``, no FMA."""
    pytest.importorskip("cupy", reason="cupy is not installed")
    from mpicoll.kernels.cupy_provider.common import compile_source, family_source

    try:
        ptx = compile_source(family_source(name), name, "-arch=compute_90", "ptx").decode()
    except Exception as exc:  # no libnvrtc on this machine (a CPU-only install): nothing to compile with
        if "nvrtc" in f"{type(exc).__name__} {exc}".lower() and "could not compile" not in str(exc):
            pytest.skip(f"NVRTC is not available here: {type(exc).__name__}: {exc}")
        raise
    assert not re.findall(r"^\s*\S+\.ftz\S*", ptx, re.MULTILINE), f"{name}: flushes subnormals"
    assert not re.findall(r"^\s*fma\.\S+", ptx, re.MULTILINE), f"{name}: fused multiply-adds"


# ---------------------------------------------------------------- the module itself


def test_provider_imports_without_a_gpu_and_mirrors_the_reference():
    """Importing the provider allocates and compiles nothing; its table has the reference's ops and signatures."""
    pytest.importorskip("cupy", reason="cupy is not installed")
    from mpicoll.kernels import cupy_provider, reference

    assert set(cupy_provider.OPS) == set(reference.OPS)
    for name, fn in reference.OPS.items():
        want = list(inspect.signature(fn).parameters)
        assert list(inspect.signature(cupy_provider.OPS[name]).parameters) == want, name


def test_numba_cuda_kernels_do_not_call_builtin_min_or_max():
    """On the H200 image (numba 0.68.0, numba-cuda 0.30.4, Python 3.12) every ``@cuda.jit`` function
    that called the builtin ``min``/``max`` on two scalars failed to compile ("Signature mismatch:
    2 argument types given, but function takes 1 arguments"); ``common.lesser``/``greater`` replace them."""
    offenders = []
    for path in sorted((ROOT / "kernels" / "numba_cuda").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef) or not any("cuda.jit" in ast.unparse(d) for d in fn.decorator_list):
                continue
            offenders += [f"{path.name}:{node.lineno} {fn.name}" for node in ast.walk(fn)
                          if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                          and node.func.id in ("min", "max")]
    assert not offenders, f"builtin min/max in CUDA kernels: {offenders}"


def test_compiled_modules_are_written_atomically(tmp_path, monkeypatch):
    """The disk cache of compiled modules: a complete file or none, and no temporary file left,
    also when the write fails half-way."""
    pytest.importorskip("cupy", reason="cupy is not installed")
    from mpicoll.kernels.cupy_provider import common

    target = tmp_path / "quantize-abc.cubin"
    common._write(target, b"\x7fELF binary")
    assert target.read_bytes() == b"\x7fELF binary" and [p.name for p in tmp_path.iterdir()] == [target.name]

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(common.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        common._write(tmp_path / "other.cubin", b"data")
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_the_tile_of_the_scale_kernels_has_one_value():
    """``TILE`` in the provider and ``MPICOLL_TILE`` in quantize.cu: the provider checks the lanes
    against the size the kernels stage."""
    defined = re.search(r"#define\s+MPICOLL_TILE\s+(\d+)", (CUDA_DIR / "quantize.cu").read_text(encoding="utf-8"))
    assert defined is not None
    assert provider_constants(provider_tree())["TILE"] == int(defined.group(1))
