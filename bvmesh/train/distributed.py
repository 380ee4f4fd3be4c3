"""Training in several processes with PyTorch's own launcher::

    torchrun --standalone --nproc-per-node 4 -m bvmesh train DATA -o RUN ...

torchrun starts the processes and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; each
process trains the same model on batches of its own (DistributedDataParallel averages the
gradients: gloo on the CPU, NCCL on GPUs, one GPU per process). Process 0 writes the run
folder; every process keeps its own sampler state in the checkpoint, so a run resumes
exactly, with the same number of processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

#: Seeds of the processes' samplers lie this far apart (process 0 keeps the run's seed,
#: so a one-process run draws what it always drew).
SEED_STRIDE = 10007


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes the run folder and reports progress."""
        return self.rank == 0

    def seed(self, seed: int) -> int:
        return seed + SEED_STRIDE * self.rank


def world_from_env() -> World:
    """The world torchrun describes in the environment (one process without it)."""
    env = os.environ
    return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                 int(env.get("LOCAL_RANK", 0)))


@contextlib.contextmanager
def joined(device: torch.device) -> Iterator[tuple[World, torch.device]]:
    """Join the process group torchrun set up (nothing to do for one process); yields the
    world and this process's device (its own GPU when training on CUDA)."""
    world = world_from_env()
    if world.size == 1:
        yield world, device
        return
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield world, device
    finally:
        dist.destroy_process_group()


def wrap(net: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """``net`` whose backward pass averages its gradients over the processes."""
    if world.size == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)


def barrier(world: World) -> None:
    if world.size > 1:
        torch.distributed.barrier()


def gather(obj: object, world: World) -> list:
    """Every process's ``obj``, in rank order."""
    if world.size == 1:
        return [obj]
    out: list = [None] * world.size
    torch.distributed.all_gather_object(out, obj)
    return out


def mean(values: dict[str, float], world: World, device: torch.device) -> dict[str, float]:
    """The processes' mean of each value (the loss a run logs is that of all its batches)."""
    if world.size == 1 or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return dict(zip(values, (t / world.size).tolist()))
