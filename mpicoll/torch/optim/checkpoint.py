"""What the optimizers of this package add to ``state_dict()``, and the world-size check on load.

Residuals and momenta are per rank, and the two-phase residuals are cut into ``p`` chunks: a
checkpoint restored at another world size would give ranks residuals of the wrong shapes (an
error on some ranks only, or silently wrong sums). So the saved state names its world size, and
loading it anywhere else raises the same :class:`~mpicoll.errors.ArgumentError` on every rank
(every rank loads its own copy of the same checkpoint), before anything is changed.

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


def split(state: dict[str, Any], owner: str, size: int, fmt: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """``state`` without, and with only, mpicoll's part; refuses another world size, another format
    than ``fmt`` (the loading optimizer's ``CHECKPOINT_FORMAT``) or a missing part."""
    state = dict(state)
    ours = state.pop(STATE_KEY, None)
    if ours is None:
        raise ArgumentError(f"{owner}.load_state_dict: the state has no {STATE_KEY!r} entry (residuals, step, "
                            f"world size); load a state_dict() saved by {owner}")
    saved = ours.get("world_size")
    if saved != size:
        raise ArgumentError(f"{owner}.load_state_dict: the checkpoint was taken on {saved} ranks, this job has "
                            f"{size}; residuals and momenta are per rank and cannot be redistributed, so restart "
                            f"on {saved} ranks (or start the optimizer afresh)")
    saved_owner = ours.get("owner", owner)  # checkpoints from before the field: trust the caller
    if saved_owner != owner:
        raise ArgumentError(f"{owner}.load_state_dict: the checkpoint was saved by {saved_owner}, whose state "
                            f"(residuals, schedule) means something else; load it into a {saved_owner}")
    saved_fmt = ours.get("format", 1)
    if saved_fmt != fmt:
        raise ArgumentError(f"{owner}.load_state_dict: the checkpoint's residuals are in format {saved_fmt!r}, "
                            f"this version of {owner} keeps them in format {fmt} ({owner}.CHECKPOINT_FORMAT, 1 "
                            f"when unset; a checkpoint without the field is format 1); they cannot be converted, "
                            f"so resume from a checkpoint saved by this version (or start the optimizer afresh)")
    return state, ours


def attach(state: dict[str, Any], optimizer: Any, owner: str) -> dict[str, Any]:
    """Add mpicoll's part to torch's ``state``: world size, ``owner`` (the class name that
    :func:`split` will be given on load), step count, bytes sent and this rank's compressor state
    (residuals), and the format of those (``optimizer.CHECKPOINT_FORMAT``, 1 if it has none).
    ``optimizer`` has ``comm``, ``steps``, ``traffic_bytes`` and ``compressor``."""
    state[STATE_KEY] = {"world_size": optimizer.comm.size, "owner": owner,
                        "format": getattr(optimizer, "CHECKPOINT_FORMAT", 1),
                        "steps": optimizer.steps,
                        "traffic_bytes": optimizer.traffic_bytes, "compressor": optimizer.compressor.state_dict()}
    return state


def apply(optimizer: Any, ours: dict[str, Any]) -> None:
    """Restore the part :func:`attach` saved (after :func:`split` has checked it)."""
    optimizer.steps, optimizer.traffic_bytes = int(ours["steps"]), float(ours["traffic_bytes"])
    optimizer.compressor.load_state_dict(ours["compressor"])
