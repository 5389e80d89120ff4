"""Checkpoints of a project's own training loop (one that does not run a transformers Trainer): save and resume.

The layout is paperline.ml.checkpoints' (`checkpoint-N/` with `model.safetensors`, the model's state;
`optimizer.safetensors`, the optimizer's per-parameter state; `trainer_state.json`, the step and the optimizer's
param groups, written last among the files; then the sha256 manifest), so `last_checkpoint` skips a save a kill
cut short and refuses one whose bytes changed. safetensors, never pickles: a checkpoint loads no code.

Importable without Prefect, MLflow, DVC or GX; torch and safetensors are imported when called.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from paperline.ml.checkpoints import MANIFEST, last_checkpoint, write_manifest

MODEL_FILE, OPTIMIZER_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "trainer_state.json"
KEEP = 2  # the newest two: the last one and, should it turn out corrupted, the one before


def save(model: Any, optimizer: Any, checkpoints: Path, step: int, keep: int = KEEP) -> None:
    """Write `checkpoint-<step>` of `model` (a torch module) and `optimizer`, then drop all but the newest `keep`."""
    from safetensors.torch import save_file

    folder = checkpoints / f"checkpoint-{step}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(folder / MODEL_FILE))
    state = optimizer.state_dict()
    tensors = {f"{i}.{key}": value.detach().cpu().contiguous() for i, entry in state["state"].items()
               for key, value in entry.items()}
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    (folder / STATE_FILE).write_text(json.dumps({"global_step": step, "param_groups": state["param_groups"]}))
    write_manifest(folder)  # last: it vouches for every file above
    numbered = sorted((int(p.name.split("-")[-1]), p) for p in checkpoints.glob("checkpoint-*")
                      if p.name.split("-")[-1].isdigit())
    for _, old in numbered[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def resume(model: Any, optimizer: Any, checkpoints: Path) -> int:
    """Load the newest complete checkpoint (its manifest checked) into `model` and `optimizer`, on the model's
    device; the step to continue from, 0 without one."""
    from safetensors.torch import load_file

    newest = last_checkpoint(checkpoints, required=(OPTIMIZER_FILE, MANIFEST))
    if newest is None:
        return 0
    device = str(next(model.parameters()).device)
    model.load_state_dict(load_file(str(newest / MODEL_FILE), device=device))
    saved = json.loads((newest / STATE_FILE).read_text())
    state: dict[int, dict] = {}
    for key, value in load_file(str(newest / OPTIMIZER_FILE), device=device).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    return int(saved["global_step"])
