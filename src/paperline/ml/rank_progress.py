"""Where each rank of a torchrun job writes how far it got, so that the launcher can say what a dead rank did.

A rank killed by SIGKILL (the OOM killer, a preempted node) runs no code on the way out: torchrun reports only its
exit signal. So every rank keeps a small JSON file up to date while it trains, `<folder>/rank-<R>.json`:

    {"rank": 1, "world_size": 2, "pid": 4242, "output_dir": ".../sts", "required": ["checkpoint.manifest.json"],
     "resumed_from_step": 4, "step": 7, "error": null, "peer_lost": false, "traceback": null}

`step` is the last optimizer step the rank finished; `output_dir` and `required` say where its complete
checkpoints are (paperline.ml.checkpoints.last_checkpoint); `error` is set when the rank raised, with `peer_lost`
when the error was a collective failing because another rank had gone (not a cause of its own).

The folder is `$PAPERLINE_RANK_PROGRESS` (the launcher sets it; without it nothing is written, as in a single
process). One file per rank, replaced whole (write then rename): a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

PROGRESS_ENV = "PAPERLINE_RANK_PROGRESS"


def progress_folder() -> Path | None:
    folder = os.environ.get(PROGRESS_ENV)
    return Path(folder) if folder else None


def progress_file(folder: Path, rank: int) -> Path:
    return Path(folder) / f"rank-{rank}.json"


def _env_rank() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0") or 0), int(os.environ.get("WORLD_SIZE", "1") or 1)


def record(**fields: Any) -> None:
    """Merge `fields` into this rank's progress file (nothing outside a torchrun job the launcher started)."""
    folder = progress_folder()
    rank, world = _env_rank()
    if folder is None or world <= 1:
        return
    path = progress_file(folder, rank)
    try:
        current = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        current = {}
    current.update({"rank": rank, "world_size": world, "pid": os.getpid(), **fields})
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(current, default=str))
        tmp.replace(path)
    except OSError:  # a full or read-only disk must not stop training; the launcher then says less
        pass


def read_all(folder: Path) -> dict[int, dict[str, Any]]:
    """Rank -> its last progress record, for every readable file in `folder`."""
    found: dict[int, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("rank-*.json")):
        try:
            data = json.loads(path.read_text())
            found[int(data["rank"])] = data
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def announce_resume(step: int) -> None:
    """One line per rank on stderr, `paperline: rank 1 of 2 resumed from step 8`, and the step in its record."""
    rank, world = _env_rank()
    record(resumed_from_step=step, step=step)
    if world > 1 and step > 0:
        print(f"paperline: rank {rank} of {world} resumed from step {step}", file=sys.stderr, flush=True)


def step_callback():
    """A trainer callback that records each finished optimizer step (`on_step_end`)."""
    from transformers import TrainerCallback

    class RecordStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            record(step=int(state.global_step))

    return RecordStep()
