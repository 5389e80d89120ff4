"""Checkpoints a killed job resumes from: which one is complete, and whether its bytes are the ones saved.

The trainer writes `trainer_state.json` last; paperline then writes the loss's own weights (`loss.safetensors`,
for a loss with a trainable head) and, last of all, a manifest with the sha256 of every file. A checkpoint that
lacks a file written after it is a save a kill cut short: skipped for the previous one. A complete checkpoint
whose files differ from its manifest, or do not load, is corrupted: one clear error saying what to delete, since
resuming silently from an older one would hide a failing disk.

Importable without Prefect, MLflow, DVC or GX.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from paperline.core.errors import PaperlineError


class CheckpointError(PaperlineError):
    """A checkpoint that cannot be resumed from; the message says what to delete."""


LOSS_STATE = "loss.safetensors"  # a loss's own trainable weights, beside the trainer's checkpoint files
# sha256 of every file of a checkpoint, written last: a checkpoint without it is a save that a kill cut short, and
# a file whose bytes changed since (a disk error, a partial overwrite with the header intact) is found before use.
MANIFEST = "paperline-manifest.json"
# Not in the manifest: the model card sentence-transformers writes into each save. It describes, never loads (and
# before the saving rank alone wrote a checkpoint's model files, paperline.ml.training, rank 1 rewrote it).
UNCHECKED = {"README.md"}


def last_checkpoint(output_dir: Path, required: tuple[str, ...] = (), remove_incomplete: bool = True) -> Path | None:
    """The newest complete `checkpoint-N` folder in `output_dir`, after checking that it can be resumed from.

    The trainer writes `trainer_state.json` last, so a folder without it (or without a `required` file that is
    written after it) is a save that a kill interrupted: it is removed (skipped only, with `remove_incomplete`
    False: what every rank but 0 does under torchrun) and the previous checkpoint is used. A complete folder
    whose files do not load is corrupted: that is an error, since resuming silently from an older one would hide
    a failing disk.
    """
    checkpoints = sorted(
        (p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    while checkpoints and not all((checkpoints[-1] / name).exists() for name in ("trainer_state.json", *required)):
        incomplete = checkpoints.pop()
        if remove_incomplete:
            shutil.rmtree(incomplete, ignore_errors=True)
    if not checkpoints:
        return None
    newest = checkpoints[-1]
    check_checkpoint(newest)
    return newest


def write_manifest(folder: Path) -> None:
    """Record the sha256 of every file in a checkpoint folder (atomically: the manifest appears whole)."""
    files = {str(f.relative_to(folder)): _sha256(f) for f in sorted(folder.rglob("*"))
             if f.is_file() and f.name != MANIFEST and f.name not in UNCHECKED}
    partial = folder / f".{MANIFEST}.partial"
    partial.write_text(json.dumps({"sha256": files}, indent=1))
    partial.rename(folder / MANIFEST)


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def check_checkpoint(path: Path) -> None:
    """Raise CheckpointError unless the files match the checkpoint's manifest (when it has one), the trainer
    state parses and every weight file opens."""
    from safetensors import safe_open

    hint = f"delete {path} to resume from the previous checkpoint, or delete {path.parent} to start over"
    if (path / MANIFEST).is_file():
        try:
            recorded = json.loads((path / MANIFEST).read_text())["sha256"]
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {path} is corrupted ({MANIFEST}: {exc}); {hint}") from None
        for name, digest in recorded.items():
            if Path(name).name in UNCHECKED:  # a manifest written before it was left out
                continue
            if not (path / name).is_file() or _sha256(path / name) != digest:
                raise CheckpointError(f"checkpoint {path} is corrupted ({name} differs from the sha256 its manifest "
                                      f"recorded when it was saved); {hint}")
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        int(state["global_step"])
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupted (trainer_state.json: {exc}); {hint}") from None
    weights = list(path.rglob("*.safetensors"))
    if not weights:
        raise CheckpointError(f"checkpoint {path} holds no model weights; {hint}")
    for weight in weights:
        try:
            with safe_open(str(weight), framework="pt") as f:
                for key in f.keys():
                    f.get_slice(key)
        except Exception as exc:  # safetensors raises its own error types for truncated or garbled files
            raise CheckpointError(f"checkpoint {path} is corrupted ({weight.name}: {exc}); {hint}") from None
