"""The distributed environment, read from what torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK).

Without those variables the run is a single process and nothing is initialised. The backend is
gloo on CPU and nccl on CUDA. Each step gathers the image and text features of every rank
(medfilip/training/gather.py) and computes the loss of the global batch; DDP averages the
gradients, so every rank holds the same weights and trains the objective of one large batch
(BatchNorm statistics stay per rank).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_env() -> DistributedEnv:
    """Rank, world size and local rank from torchrun's (or SLURM's) environment; one process otherwise."""
    env = os.environ
    if "WORLD_SIZE" in env:
        return DistributedEnv(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1:
        return DistributedEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    return DistributedEnv()


def init_distributed(env: DistributedEnv, device: torch.device) -> None:
    """Join the process group (idempotent); MASTER_ADDR/MASTER_PORT come from torchrun."""
    if not env.is_distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    log.info("process group: %s, rank %d of %d", backend, env.rank, env.world_size)


def barrier(env: DistributedEnv) -> None:
    if env.is_distributed and dist.is_initialized():
        dist.barrier()


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
