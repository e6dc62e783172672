"""torch.distributed set-up for data-parallel pre-training and parallel committee members (train.py).

`torchrun` starts one process per GPU (or per CPU worker) and tells each who it is through environment variables:
RANK (global index), WORLD_SIZE (number of processes), LOCAL_RANK (index on this node), MASTER_ADDR/PORT.
`init_from_env()` reads them and returns a `DistContext`; without them (a plain `python train.py`) it returns
a one-process context and starts nothing, so every helper here is a no-op in that case.

  * Backend: NCCL when the processes use GPUs (device `cuda:LOCAL_RANK`), gloo on CPUs.
  * A second, CPU-only gloo group with a long timeout carries the barriers around slow one-off work (a rank
    building the token cache while the others wait can take far longer than NCCL's default timeout) and the
    small Python objects gathered at checkpoints (per-rank RNG states). Training collectives (DDP's gradient
    all-reduce, the metric all-reduces) use the default group.
  * `main_first(ctx)`: the node's first process runs the block (e.g. tokenising the corpus into the cache)
    before the others, which then find the cache filled.

Timeouts: TINYBERT_DIST_TIMEOUT_MIN (default 30) for the training group, TINYBERT_DIST_SETUP_TIMEOUT_MIN
(default 240) for the set-up group.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist

_SETUP_GROUP = None  # the long-timeout gloo group (see module docstring); None = use the default group


@dataclass(frozen=True)
class DistContext:
    rank: int = 0                 # global rank
    world_size: int = 1
    local_rank: int = 0           # rank on this node (picks the GPU)
    device: torch.device = torch.device("cpu")
    backend: str | None = None    # 'nccl' | 'gloo' | None (no process group)

    @property
    def is_main(self) -> bool:
        """The one process that prints and writes files."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None and self.world_size > 1

    def solo(self) -> "DistContext":
        """This process seen as a run of its own (a committee member): rank 0 of 1, same device."""
        return replace(self, rank=0, world_size=1, backend=None)


def env_ranks() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world, local


def _minutes(var: str, default: float) -> timedelta:
    return timedelta(minutes=float(os.environ.get(var, default)))


def pick_device(name: str, local_rank: int, world_size: int) -> torch.device:
    """The device of this process. With several processes: 'auto'/'cuda' -> cuda:LOCAL_RANK (one GPU per
    process), 'cpu' -> cpu; an explicit GPU index or another device type is refused."""
    from .runtime import choose_device

    if world_size == 1:
        return choose_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: CUDA is not available on this machine")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) on this node; "
                             f"start at most that many processes per node")
        return torch.device("cuda", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"--device {name}: with several processes use --device auto, cuda (each process takes "
                     f"cuda:LOCAL_RANK) or cpu")


def init_from_env(device: str = "auto", backend: str | None = None) -> DistContext:
    """Read RANK/WORLD_SIZE/LOCAL_RANK, pick the device, start the process group (only when WORLD_SIZE > 1).

    backend: None = NCCL for GPUs, gloo for CPUs; 'gloo' forces gloo (committee mode, where processes only
    meet at barriers). Call `shutdown()` at the end."""
    global _SETUP_GROUP
    rank, world, local = env_ranks()
    dev = pick_device(device, local, world)
    if world == 1:
        return DistContext(0, 1, local if dev.type == "cuda" else 0, dev, None)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        kwargs = {}
        if backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters:
            kwargs["device_id"] = dev  # binds this process to its GPU (barriers, eager NCCL set-up)
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=_minutes("TINYBERT_DIST_TIMEOUT_MIN", 30), **kwargs)
    _SETUP_GROUP = dist.new_group(backend="gloo", timeout=_minutes("TINYBERT_DIST_SETUP_TIMEOUT_MIN", 240))
    return DistContext(rank, world, local, dev, backend)


def shutdown() -> None:
    global _SETUP_GROUP
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _SETUP_GROUP = None


def _active(world_size: int | None = None) -> bool:
    return dist.is_available() and dist.is_initialized() and (world_size or dist.get_world_size()) > 1


def barrier(ctx: DistContext | None = None) -> None:
    """Wait for every process (on the long-timeout CPU group). No-op in a single process."""
    if (ctx is None or ctx.distributed) and _active():
        dist.barrier(group=_SETUP_GROUP)


@contextlib.contextmanager
def main_first(ctx: DistContext, local: bool = True):
    """Run the block on the (node-)main process first, then on the others. Every process calls barrier once."""
    first = ctx.is_local_main if local else ctx.is_main
    if not first:
        barrier(ctx)
    try:
        yield
    finally:
        if first:
            barrier(ctx)


def all_reduce_sum(tensor: torch.Tensor, world_size: int = 1) -> torch.Tensor:
    """Sum `tensor` over all processes, in place (and returned). No-op for world_size 1."""
    if world_size > 1 and _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj, world_size: int = 1) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process (pickled, over the CPU group). Not for per-step use."""
    if world_size == 1 or not _active():
        return [obj]
    out = [None] * world_size
    dist.all_gather_object(out, obj, group=_SETUP_GROUP)
    return out


# ----------------------------------------------------------------------------------------------------------
# per-rank RNG (dropout)


def rank_rng_state(device: torch.device) -> dict:
    """This process's dropout RNG: the CPU generator, and the generator of its own GPU when it uses one."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rank_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def dropout_seed(seed: int, rank: int, step: int) -> int:
    """Seed of rank `rank`'s dropout stream from optimiser step `step` on (several ranks: distinct streams)."""
    return ((seed * 1_000_003 + rank + 1) * 1_000_033 + step) % (2**63 - 1)
