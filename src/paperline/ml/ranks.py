"""The processes of a torchrun job: joining its group, who is rank 0, barriers, and the bound on a collective.

Every function is a no-op (or the single-process answer) when the job was not launched by torchrun, so a
project's code calls them unconditionally: `save_on_main(model.save, folder)` writes once and waits, whatever the
number of processes. Importable without Prefect, MLflow, DVC or GX; torch is imported only under torchrun.
"""

from __future__ import annotations

import os
from typing import Any


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


# How long a collective (a barrier, DDP's gradient all-reduce) waits for the other ranks before it fails. torch's
# default is 30 min on gloo (10 on nccl). A rank that *dies* is noticed by torchrun within its monitor interval and
# the others are stopped; this bound is for a rank that stays alive but never arrives (hung on a dead disk, or on
# another node whose agent has not noticed), where the survivors would otherwise wait the full half hour. 600 s is
# well above the longest legitimate wait here (rank 0 building the token cache or saving a checkpoint while the
# others wait at a barrier: seconds to a few minutes on a large training set); raise it for slower storage.
COLLECTIVE_TIMEOUT_ENV, DEFAULT_COLLECTIVE_TIMEOUT = "PAPERLINE_COLLECTIVE_TIMEOUT", 600.0


def collective_timeout() -> float:
    """Seconds a collective waits: $PAPERLINE_COLLECTIVE_TIMEOUT, else 600."""
    raw = os.environ.get(COLLECTIVE_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_COLLECTIVE_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        from paperline.core.config import ConfigError

        raise ConfigError(f"{COLLECTIVE_TIMEOUT_ENV}={raw!r} is not a positive number of seconds; "
                          f"unset it for the default {DEFAULT_COLLECTIVE_TIMEOUT:.0f}")
    return seconds


def init_distributed() -> bool:
    """Join torchrun's process group once (nccl on CUDA, gloo otherwise); False when not launched by torchrun.

    The trainer (accelerate) would create the group itself, but only inside `trainer.train()`; `fit` and a
    method need it earlier, for the barrier around checkpoint cleanup and around their own saves.
    """
    if _env_world_size() <= 1:
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        from datetime import timedelta

        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo",
                                timeout=timedelta(seconds=collective_timeout()))
    return True


def _dist():
    """torch.distributed when a process group is up, else None (no torch import for a single process)."""
    if _env_world_size() <= 1:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    dist = _dist()
    return dist.get_world_size() if dist else 1


def rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist else int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    """Rank 0 (always True in a single process): the one process that writes shared files."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank gets here; nothing in a single process."""
    dist = _dist()
    if dist:
        dist.barrier()


def save_on_main(save: Any, *args: Any, **kwargs: Any) -> None:
    """`save(*args, **kwargs)` on rank 0 only, then a barrier, so no rank reads a file before it is complete:
    `save_on_main(model.save, str(folder))`."""
    if is_main_process():
        save(*args, **kwargs)
    barrier()
