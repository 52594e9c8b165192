"""Rendezvous from MPI: init_process_group with no address, rank or size, for gloo too."""

from __future__ import annotations

import os

import pytest
from mpitools import WORLD, assert_all

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

import mpicoll  # noqa: E402
import mpicoll.torch as mt  # noqa: E402


@pytest.fixture(autouse=True)
def no_torch_variables():
    saved = {k: os.environ.pop(k) for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE") if k in os.environ}
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
    os.environ.update(saved)


def summed() -> float:
    t = torch.ones(3)
    dist.all_reduce(t)
    return float(t[0])


@pytest.mark.parametrize("init", ["bare-gloo", "mpi-gloo", "mpi-hash-mpicoll", "helper-gloo", "helper-mpicoll"])
def test_init_from_mpi(init):
    if init == "bare-gloo":
        dist.init_process_group("gloo")  # env:// falls back to MPI: no MASTER_ADDR needed, for gloo too
    elif init == "mpi-gloo":
        dist.init_process_group("gloo", init_method="mpi://")
    elif init == "mpi-hash-mpicoll":
        dist.init_process_group("mpicoll", init_method="mpi://?store=hash")
    else:
        mt.init_process_group(init.split("-")[1])
    backend = dist.get_backend()
    assert_all(WORLD, dist.get_rank() == WORLD.Get_rank() and dist.get_world_size() == WORLD.Get_size()
               and backend == init.split("-")[-1] and summed() == WORLD.Get_size(), f"{init}: {backend}")


def test_rank_and_size_that_contradict_mpi_are_refused():
    with pytest.raises(mpicoll.ArgumentError, match="store="):
        dist.init_process_group("mpicoll", init_method="mpi://?store=redis")
    if WORLD.Get_size() > 1:
        with pytest.raises(mpicoll.ArgumentError, match="MPI says"):
            dist.init_process_group("mpicoll", init_method="mpi://", rank=(WORLD.Get_rank() + 1) % WORLD.Get_size(),
                                    world_size=WORLD.Get_size())
    assert_all(WORLD, not dist.is_initialized())
