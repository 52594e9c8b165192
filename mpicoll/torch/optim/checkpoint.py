"""What the optimizers of this package add to ``state_dict()``, and the world-size check on load.

Residuals and momenta are per rank, and the two-phase residuals are cut into ``p`` chunks: a
checkpoint restored at another world size would give ranks residuals of the wrong shapes (an
error on some ranks only, or silently wrong sums). So the saved state names its world size, and
loading it anywhere else raises the same :class:`~mpicoll.errors.ArgumentError` on every rank
(every rank loads its own file; the ranks agree on them first), before anything is changed.

The saved state also names the optimizer class that saved it (another class's state is refused:
a OneBitAdam checkpoint means something else to ZeroOneAdam) and its **format**: an optimizer
whose residuals changed meaning (units) raises its ``CHECKPOINT_FORMAT``, and a checkpoint of
another format is refused the same way rather than loaded into the wrong units. A checkpoint
without the field is format 1.
"""

from __future__ import annotations

from typing import Any

from ...errors import ArgumentError

STATE_KEY = "mpicoll"


def split(state: dict[str, Any], optimizer: Any, owner: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``state`` without, and with only, mpicoll's part; refuses another world size, another
    optimizer class than ``owner``, another format than ``optimizer``'s (:func:`_format`) or a
    missing part. Collective over ``optimizer.comm``: the ranks agree first, so a set of files of
    which one is wrong (another job's, another version's) is refused on every rank, never loaded
    on some."""
    state = dict(state)
    ours = state.pop(STATE_KEY, None)
    comm = optimizer.comm
    problems = comm.mpi.allgather(_problem(ours, owner, comm.size, _format(optimizer)))
    for rank, problem in enumerate(problems):
        if problem:
            where = "" if all(p == problem for p in problems) else f" (rank {rank}'s checkpoint)"
            raise ArgumentError(f"{owner}.load_state_dict: {problem}{where}")
    return state, ours


def _format(optimizer: Any) -> int:
    """The format ``optimizer`` saves and loads: its ``CHECKPOINT_FORMAT``, 1 if it has none."""
    return getattr(optimizer, "CHECKPOINT_FORMAT", 1)


def _problem(ours: Any, owner: str, size: int, fmt: int) -> str | None:
    """Why this rank's part of a checkpoint cannot be loaded here, or ``None``."""
    if not isinstance(ours, dict):
        return (f"the state has no {STATE_KEY!r} entry (residuals, step, world size); load a state_dict() "
                f"saved by {owner}")
    saved = ours.get("world_size")
    if saved != size:
        return (f"the checkpoint was taken on {saved} ranks, this job has {size}; residuals and momenta are per "
                f"rank and cannot be redistributed, so restart on {saved} ranks (or start the optimizer afresh)")
    saved_owner = ours.get("owner", owner)  # checkpoints from before the field: trust the caller
    if saved_owner != owner:
        return (f"the checkpoint was saved by {saved_owner}, whose state (residuals, schedule) means something "
                f"else; load it into a {saved_owner}")
    saved_fmt = ours.get("format", 1)
    if saved_fmt != fmt:
        return (f"the checkpoint's residuals are in format {saved_fmt!r}, this version of {owner} keeps them in "
                f"format {fmt} ({owner}.CHECKPOINT_FORMAT, 1 when unset; a checkpoint without the field is "
                f"format 1); they cannot be converted, so resume from a checkpoint saved by this version (or start "
                f"the optimizer afresh)")
    return None


def attach(state: dict[str, Any], optimizer: Any, owner: str) -> dict[str, Any]:
    """Add mpicoll's part to torch's ``state``: world size, ``owner`` (the class name that
    :func:`split` will be given on load), step count, bytes sent and this rank's compressor state
    (residuals), and the format of those (``optimizer.CHECKPOINT_FORMAT``, 1 if it has none).
    ``optimizer`` has ``comm``, ``steps``, ``traffic_bytes`` and ``compressor``."""
    state[STATE_KEY] = {"world_size": optimizer.comm.size, "owner": owner,
                        "format": _format(optimizer),
                        "steps": optimizer.steps,
                        "traffic_bytes": optimizer.traffic_bytes, "compressor": optimizer.compressor.state_dict()}
    return state


def apply(optimizer: Any, ours: dict[str, Any]) -> None:
    """Restore the part :func:`attach` saved (after :func:`split` has checked it)."""
    optimizer.steps, optimizer.traffic_bytes = int(ours["steps"]), float(ours["traffic_bytes"])
    optimizer.compressor.load_state_dict(ours["compressor"])
