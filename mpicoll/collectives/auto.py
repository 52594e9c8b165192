"""``algorithm="auto"``: pick an algorithm by collective, message size and rank count.

The choice comes from a JSON table, the first that exists of: the file named by
``config.auto_table`` (env ``MPICOLL_AUTO_TABLE``); the user table
``$XDG_CONFIG_HOME/mpicoll/auto_table.json`` (``~/.config/...``), which ``mpicoll-bench tune``
writes by default after measuring this machine; the bundled ``auto_table.json``. Format::

    {"format": 1,
     "allreduce": {"2": [[8192, "recursive_doubling"], [null, "ring"]],
                   "default": [[4096, "recursive_doubling"], [null, "ring"]]},
     ...}

Each rule list is sorted by its byte limit; the first rule whose limit is at least the message
size wins, ``null`` meaning no limit. Rank counts without their own list use ``"default"``.

This module is the one home of the collectives' ``auto`` decisions: :func:`choose_for` adds to the
table the rule "across hosts, all-reduce hierarchically" (:func:`across_hosts`), and
:func:`resolve` is what every public collective calls. (The compressed paths have their own
home one layer up, :mod:`mpicoll.aggregation.choice`, which uses these.)
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import config
from ..errors import ConfigError
from ..transport.watchdog import refine
from .registry import COLLECTIVES, algorithm_names, get_algorithm

if TYPE_CHECKING:
    from ..transport import Comm

FORMAT = 1

OWN_FLAT = ("ring", "tree", "recursive_doubling", "rabenseifner")
"""mpicoll's own all-reduce algorithms on one flat communicator: results bitwise identical on
every rank, and any reduction object works (a compressed path's wire sum, which MPI cannot do)."""


def bundled_table_text() -> str:
    """The text of the table shipped with the package."""
    return resources.files(__package__).joinpath("auto_table.json").read_text(encoding="utf-8")


@lru_cache(maxsize=8)
def _load(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8") if path else bundled_table_text()
        table = json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the auto-algorithm table {path or '(bundled)'}: {exc}; "
                          "fix it, rerun `mpicoll-bench tune`, or unset MPICOLL_AUTO_TABLE") from None
    check_table(table, path or "(bundled)")
    return table


def check_table(table: Any, where: str) -> None:
    """Raise :class:`ConfigError` unless ``table`` is a well-formed table naming known algorithms."""
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        raise ConfigError(f"auto-algorithm table {where}: expected an object with \"format\": {FORMAT}")
    for collective in COLLECTIVES:
        for key, rules in table.get(collective, {}).items():
            if not isinstance(rules, list) or not rules:
                raise ConfigError(f"auto-algorithm table {where}: {collective}[{key!r}] must be a non-empty list")
            for rule in rules:
                ok = (isinstance(rule, list) and len(rule) == 2 and (rule[0] is None or isinstance(rule[0], int))
                      and rule[1] in algorithm_names(collective))
                if not ok:
                    raise ConfigError(
                        f"auto-algorithm table {where}: bad rule {rule!r} in {collective}[{key!r}]; expected "
                        f"[max_bytes or null, one of {algorithm_names(collective)}]")
            if rules[-1][0] is not None:
                raise ConfigError(f"auto-algorithm table {where}: the last rule of {collective}[{key!r}] "
                                  "must have limit null (it covers every larger size)")


def format_table(table: dict[str, Any]) -> str:
    """JSON text with one line per rule list, so a table reads like the docstring's example."""
    lines = ["{", f' "format": {json.dumps(table.get("format", FORMAT))},']
    if "source" in table:
        lines.append(f' "source": {json.dumps(table["source"])},')
    if "model" in table:
        lines.append(f' "model": {json.dumps(table["model"])},')
    blocks = []
    for collective in COLLECTIVES:
        if collective in table:
            rows = [f'  {json.dumps(k)}: {json.dumps(v)}' for k, v in table[collective].items()]
            blocks.append(f' {json.dumps(collective)}: {{\n' + ",\n".join(rows) + "\n }")
    lines.append(",\n".join(blocks))
    lines.append("}")
    return "\n".join(lines) + "\n"


def user_table_path() -> Path:
    """Where ``mpicoll-bench tune`` writes by default and ``auto`` looks second."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mpicoll" / "auto_table.json"


def table_path() -> str:
    """The path of the table ``auto`` reads now; ``""`` for the bundled one."""
    configured = config.get("auto_table")
    if configured:
        return configured
    user = user_table_path()
    return str(user) if user.exists() else ""


def current_table() -> dict[str, Any]:
    """The table ``auto`` reads now (see the module docstring for the order)."""
    return _load(table_path())


_resolved: dict[str, str] = {}
_choices: dict[tuple[str, str, int, int], str] = {}


def reset() -> None:
    """Forget the cached table location, contents and choices (after writing a new table); plans
    of repeated calls (:mod:`.repeat`), which hold an earlier choice, become stale."""
    _resolved.clear()
    _choices.clear()
    _load.cache_clear()
    config.touch()


def choose(collective: str, nbytes: int, nranks: int) -> str:
    """The algorithm ``auto`` uses for a message of ``nbytes`` bytes on ``nranks`` ranks.

    Memoized: a training loop asks the same question every step, and the answer must cost
    nothing next to a small all-reduce.
    """
    configured = config.get("auto_table")
    key = (configured, collective, nbytes, nranks)
    name = _choices.get(key)
    if name is None:
        if len(_choices) > 4096:
            _choices.clear()
        name = _choices[key] = _lookup(configured, collective, nbytes, nranks)
    return name


def _lookup(configured: str, collective: str, nbytes: int, nranks: int) -> str:
    path = _resolved.get(configured)
    if path is None:  # look for the user table once, not on every call
        path = _resolved[configured] = table_path()
    rules_by_size = _load(path).get(collective, {})
    rules = rules_by_size.get(str(nranks)) or rules_by_size.get("default")
    if not rules:
        return "native"
    for limit, name in rules:
        if limit is None or nbytes <= limit:
            return name
    return rules[-1][1]


def across_hosts(comm: Comm) -> bool:
    """The rule "take hierarchical across hosts": the ranks span several hosts and some host runs
    several of them. Then one crossing of the network per host beats one per rank."""
    found = comm.cache.get("across_hosts")  # the hosts never change: asked once per communicator
    if found is None:
        found = comm.cache["across_hosts"] = comm.several_ranks_on_several_hosts
    return found


def choose_for(collective: str, nbytes: int, comm: Comm, *, own: bool = False, flat: bool = False,
               host: bool = True) -> str:
    """``auto``'s algorithm for ``nbytes`` (the same on every rank) on ``comm``.

    Args:
        collective: the collective's name.
        nbytes: the message size the table is read with.
        comm: the communicator (its size and host layout).
        own: only algorithms of :data:`OWN_FLAT` (the table's choice when it is one, else ``ring``),
            for reductions MPI cannot do or results that must be bitwise identical everywhere.
        flat: ignore the hosts (no ``hierarchical``).
        host: the arrays are in host memory; ``shm`` (which reads host memory directly) is taken
            only then, ``ring`` in its place otherwise.
    """
    if collective == "allreduce" and not flat:
        several = comm.cache.get("across_hosts")  # memoized by across_hosts: no call on the hot path
        if several if several is not None else across_hosts(comm):
            return "hierarchical"
    name = choose(collective, nbytes, comm.size)
    if (own and name not in OWN_FLAT) or (name == "shm" and not host):
        return "ring"
    return name


def resolve(collective: str, algorithm: str, nbytes: int, comm: Comm, host: bool = True) -> tuple[str, Any]:
    """The algorithm to run (``"auto"`` resolved by :func:`choose_for`; ``host``: the arrays are
    in host memory) and its function; the name is given to the watchdog's report and the timeline."""
    name = choose_for(collective, nbytes, comm, host=host) if algorithm == "auto" else algorithm
    refine(name)
    return name, get_algorithm(collective, name)
