"""The thin trainer: device, precision, seeding and resumable checkpoints around sentence-transformers' trainer.

Importable and runnable without Prefect, MLflow, DVC or Great Expectations, so a training job can run on a
bare GPU worker. The loop itself is `SentenceTransformerTrainer`; this module only decides the settings a
production job needs and makes a killed job resume from its last checkpoint instead of step 0.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paperline.errors import PaperlineError


class CheckpointError(PaperlineError):
    """A checkpoint that cannot be resumed from; the message says what to delete."""


def select_device(preference: str = "auto") -> str:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; any other value is used as given."""
    import torch

    if preference != "auto":
        return preference
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def mixed_precision(device: str) -> str:
    """bf16 autocast on CUDA cards that support it (no loss scaling needed), else full fp32."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    global_step: int
    resumed_from_step: int  # 0 when the job started fresh
    train_seconds: float
    samples_per_second: float
    device: str
    precision: str
    train_loss: float | None


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder in `output_dir`, after checking that it can be resumed from.

    The trainer writes `trainer_state.json` last, so a folder without it is a save that a kill interrupted:
    it is removed and the previous checkpoint is used. A complete folder whose files do not load is corrupted:
    that is an error, since resuming silently from an older one would hide a failing disk.
    """
    checkpoints = sorted(
        (p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    while checkpoints and not (checkpoints[-1] / "trainer_state.json").exists():
        shutil.rmtree(checkpoints.pop())
    if not checkpoints:
        return None
    newest = checkpoints[-1]
    check_checkpoint(newest)
    return newest


def check_checkpoint(path: Path) -> None:
    """Raise CheckpointError unless the trainer state parses and every weight file opens."""
    from safetensors import safe_open

    hint = f"delete {path} to resume from the previous checkpoint, or delete {path.parent} to start over"
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


@dataclass
class TrainSettings:
    """What the trainer needs besides the model, data and loss; projects fill it from their config."""

    output_dir: Path
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    seed: int = 0
    checkpoint_every: int = 100
    max_steps: int = -1  # > 0 caps the steps (smoke configs)
    device: str = "auto"
    progress: bool = True
    group_by_length: bool = False  # length-grouped batches (paperline.batching): less padding, same rows


def fit(model: Any, train_dataset: Any, loss: Any, settings: TrainSettings) -> TrainResult:
    """Train `model` on a `datasets.Dataset` with a sentence-transformers loss, resuming when possible.

    Checkpoints go to `settings.output_dir/checkpoint-N` every `checkpoint_every` steps (the two newest are
    kept); when the folder already holds one, training continues from it with the same data order.
    """
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from paperline.batching import LengthGroupedBatchSampler

    device = select_device(settings.device)
    precision = mixed_precision(device)
    seed_everything(settings.seed)
    model.to(device)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    resume_from = last_checkpoint(settings.output_dir)
    # Read now: the trainer's rotation may delete this checkpoint once newer ones exist.
    resumed_step = int(json.loads((resume_from / "trainer_state.json").read_text())["global_step"]) if resume_from else 0
    args = SentenceTransformerTrainingArguments(
        output_dir=str(settings.output_dir),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a ratio of the total steps
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=precision == "bf16",
        save_strategy="steps",
        save_steps=settings.checkpoint_every,
        save_total_limit=2,
        logging_steps=max(1, min(50, settings.checkpoint_every)),
        report_to="none",
        disable_tqdm=not settings.progress,
        use_cpu=device == "cpu",
        **({"batch_sampler": LengthGroupedBatchSampler} if settings.group_by_length else {}),
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    return TrainResult(
        global_step=output.global_step,
        resumed_from_step=resumed_step,
        train_seconds=seconds,
        samples_per_second=float(output.metrics.get("train_samples_per_second", 0.0)),
        device=device,
        precision=precision,
        train_loss=output.training_loss,
    )


def set_cpu_threads() -> None:
    """Use every core for intra-op work; torch's default can pick fewer under a container's CPU quota."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores))
