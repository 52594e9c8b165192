"""The torch adapter raises mpicoll's error classes, each still the builtin user code may catch."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

from mpicoll import errors

TORCH = Path(__file__).resolve().parents[2] / "mpicoll" / "torch"
# every module of the adapter is checked (the optimizers joined once converted)
NOT_YET: tuple[str, ...] = ()
# Raising these is the protocol, not an error report (attribute lookup, abstract methods).
PROTOCOL = {"AttributeError", "NotImplementedError", "StopIteration"}


def bare_raises(path: Path) -> list[str]:
    """``file:line name`` of every ``raise <builtin exception>(...)`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        name = target.id if isinstance(target, ast.Name) else None
        builtin = getattr(builtins, name, None) if name else None
        if isinstance(builtin, type) and issubclass(builtin, BaseException) and name not in PROTOCOL:
            found.append(f"{path.relative_to(TORCH)}:{node.lineno} {name}")
    return found


def test_the_adapter_raises_no_bare_builtin_errors():
    files = [p for p in sorted(TORCH.rglob("*.py"))
             if not str(p.relative_to(TORCH)).startswith(NOT_YET)]
    assert len(files) > 10
    assert [hit for p in files for hit in bare_raises(p)] == []


@pytest.mark.parametrize("cls,builtin", [(errors.RendezvousError, RuntimeError),
                                         (errors.WaitTimeoutError, TimeoutError),
                                         (errors.PeerError, RuntimeError),
                                         (errors.ArgumentError, ValueError)])
def test_error_classes_are_also_the_builtin(cls, builtin):
    assert issubclass(cls, errors.MpicollError) and issubclass(cls, builtin)


def test_a_non_contiguous_tensor_is_an_argument_error():
    torch = pytest.importorskip("torch")
    from mpicoll.torch.tensors import as_array

    with pytest.raises(errors.ArgumentError, match="contiguous"):
        as_array(torch.zeros(4, 4).t())
