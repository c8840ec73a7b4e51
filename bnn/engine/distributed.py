"""Multi-process training: ``torchrun`` + ``DistributedDataParallel``.

Launch with ``torchrun --nproc_per_node=N your_recipe.py ...``: torchrun sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them and starts the process group (NCCL when
the process uses a GPU, Gloo on CPU). The :class:`~bnn.engine.Trainer` then
wraps the model in DDP, gives every loader a ``DistributedSampler`` (whose
epoch it sets each epoch, so shuffling is identical across ranks and across
resumes), averages validation metrics over ranks and lets only rank 0 write
logs and checkpoints.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from ..ops import Binarizer

__all__ = [
    "DistInfo",
    "init_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_reduce_sum",
    "broadcast_object",
    "all_gather_object",
    "distributed_loader",
    "wrap_ddp",
    "cleanup_distributed",
    "find_free_port",
]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_distributed(backend: Optional[str] = None, use_cuda: Optional[bool] = None) -> DistInfo:
    """Start the process group from torchrun's environment (no-op for a single process).

    ``backend=None`` picks NCCL when CUDA is used, else Gloo. On CUDA the process's
    device is set to ``cuda:LOCAL_RANK``. Returns the :class:`DistInfo`.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_backend())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, backend)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (identity for a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` for a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


class EvalShardSampler(Sampler):
    """Every ``world_size``-th index from ``rank``: the ranks' shards cover the data set exactly once.

    Unlike ``DistributedSampler`` it pads nothing, so validation metrics summed over the ranks count
    each sample once (shards may differ in length by one: evaluate without DDP collectives).
    """

    def __init__(self, dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None) -> None:
        self.num_samples_total = len(dataset)
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank

    def __iter__(self):
        return iter(range(self.rank, self.num_samples_total, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples_total, self.num_replicas))


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank, as DDP does before a forward."""
    if is_distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer, src)


def distributed_loader(loader: DataLoader, shuffle: Optional[bool] = None, seed: int = 0,
                       evaluation: bool = False) -> DataLoader:
    """The same loader with a ``DistributedSampler`` (unchanged when it already has one or for 1 process).

    ``shuffle=None`` keeps the loader's own choice (a ``RandomSampler`` means shuffle).
    ``evaluation=True`` shards with :class:`EvalShardSampler` instead (no padding, no shuffle).
    """
    if not is_distributed() or isinstance(getattr(loader, "sampler", None), (DistributedSampler, EvalShardSampler)):
        return loader
    if loader.batch_size is None:
        raise ValueError("distributed training needs DataLoaders built with batch_size (a custom batch_sampler cannot be sharded)")
    if shuffle is None:
        shuffle = isinstance(loader.sampler, RandomSampler)
    if evaluation:
        sampler = EvalShardSampler(loader.dataset)
    else:
        sampler = DistributedSampler(loader.dataset, shuffle=shuffle, seed=seed)
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
        timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
    )


def _has_switchable_parameters(model: nn.Module) -> bool:
    """True when some parameter can drop out of the graph: a binarizer with parameters (switched off by a
    staged schedule, its parameters get no gradient)."""
    for module in model.modules():
        if isinstance(module, Binarizer) and any(True for _ in module.parameters(recurse=False)):
            return True
    return False


def wrap_ddp(model: nn.Module, device: torch.device, find_unused_parameters: Optional[bool] = None) -> nn.Module:
    """``DistributedDataParallel(model)`` on ``device`` (rank 0's weights are broadcast to all ranks).

    ``find_unused_parameters=None`` turns it on when the model has binarizers with parameters, which
    are unused while a schedule keeps them disabled.
    """
    if not is_distributed() or isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    if find_unused_parameters is None:
        find_unused_parameters = _has_switchable_parameters(model)
    if device.type == "cuda":
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index], output_device=device.index,
                                                   find_unused_parameters=find_unused_parameters)
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)


def find_free_port() -> int:
    """A free TCP port on localhost (for tests and single-machine launches)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
