"""The training loop of one stage and its two objectives: distillation onto the teacher's embeddings, and in-batch
contrastive learning on entailment pairs.

sentence-transformers' trainer expects a text model with a tokenizer; the student reads pictures, so the loop is our
own (as uni_encoder's): AdamW with a linear warm-up and decay, gradient clipping at 1, a seeded batch order, and
checkpoints from paperline.ml.loop_checkpoints (`checkpoint-N/` with the weights, AdamW's moments, the step, then
the sha256 manifest, written last), so a killed job resumes at its last checkpoint and takes the same batches.
Each stage's loss curve goes to the run's history (paperline.ml.history).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from paperline.ml import loop_checkpoints
from paperline.ml.history import record_history
from paperline.ml.progress import bar

LOG_EVERY = 10  # steps between two points of the learning curve


@dataclass(frozen=True)
class LoopSettings:
    steps: int
    batch_size: int
    learning_rate: float  # the encoder's trainable blocks
    head_learning_rate: float  # the projection (new in the first stage)
    warmup_ratio: float
    checkpoint_every: int
    seed: int
    progress: bool = True


# ---- the objectives -----------------------------------------------------------------------------------------


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """`cosine`: mean 1 - cos(student, teacher); `mse`: mean squared error between the L2-normalised vectors
    (summed over dimensions: 2 - 2 cos, the same minimiser at twice the scale)."""
    s = nn.functional.normalize(student.float(), dim=-1)
    t = nn.functional.normalize(teacher.float(), dim=-1)
    if kind == "cosine":
        return (1.0 - (s * t).sum(-1)).mean()
    if kind == "mse":
        return ((s - t) ** 2).sum(-1).mean()
    raise ValueError(f"unknown distillation loss {kind!r}; use cosine or mse")


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Symmetric in-batch InfoNCE on cosine similarities / temperature: row i's positive is positives[i], every
    other row of the batch a negative, in both directions (the reference's PIXELTrainerForContrastive, as
    MultipleNegativesRankingLoss with scale 1 / temperature, averaged over both directions)."""
    a = nn.functional.normalize(anchors.float(), dim=-1)
    p = nn.functional.normalize(positives.float(), dim=-1)
    scores = a @ p.T / temperature
    labels = torch.arange(len(scores), device=scores.device)
    return (nn.functional.cross_entropy(scores, labels) + nn.functional.cross_entropy(scores.T, labels)) / 2


# ---- the loop -----------------------------------------------------------------------------------------------


def batch_order(n_examples: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Example indices of every step: seeded shuffles of all examples, one epoch after another, cut into whole
    batches (an epoch's remainder is dropped), so no batch holds an example twice, which in-batch negatives need;
    with fewer examples than `batch_size`, each batch is a whole epoch."""
    if n_examples < 1:
        raise ValueError("no training examples")
    rng = random.Random(seed)
    size = min(batch_size, n_examples)
    batches: list[list[int]] = []
    while len(batches) < steps:
        epoch = list(range(n_examples))
        rng.shuffle(epoch)
        batches += [epoch[i:i + size] for i in range(0, n_examples - size + 1, size)]
    return batches[:steps]


def lr_factor(step: int, steps: int, warmup_ratio: float) -> float:
    warmup = math.ceil(steps * warmup_ratio)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (steps - step) / max(1, steps - warmup))


def train(student: nn.Module, batch_loss: Callable[[list[int]], torch.Tensor], n_examples: int, s: LoopSettings,
          out: Path, name: str) -> dict[str, float]:
    """Train `student` in place; `batch_loss(indices)` renders, encodes and scores one batch. Returns the mean loss
    of the first and last fifth of the steps run here, the steps and the seconds."""
    head = [p for n, p in student.named_parameters() if n.startswith("projection.") and p.requires_grad]
    body = [p for n, p in student.named_parameters() if not n.startswith("projection.") and p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": body, "lr": s.learning_rate},
                                   {"params": head, "lr": s.head_learning_rate}], weight_decay=0.01)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    start = loop_checkpoints.resume(student, optimizer, checkpoints)
    order = batch_order(n_examples, s.steps, s.batch_size, s.seed)
    losses: list[float] = []
    history: list[dict[str, float]] = []
    began = time.perf_counter()
    student.train()
    with bar(s.steps, f"training {name}", unit="step", initial=start, enabled=s.progress) as progress:
        for step in range(start, s.steps):
            factor = lr_factor(step, s.steps, s.warmup_ratio)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            loss = batch_loss(order[step])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
            optimizer.step()
            losses.append(loss.item())
            if (step + 1) % LOG_EVERY == 0 or step + 1 == s.steps:
                window = losses[-LOG_EVERY:]
                history.append({"step": step + 1, "epoch": (step + 1) * s.batch_size / n_examples,
                                "loss": sum(window) / len(window), "learning_rate": s.learning_rate * factor})
            progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            progress.update(1)
            if (step + 1) % s.checkpoint_every == 0 or step + 1 == s.steps:
                loop_checkpoints.save(student, optimizer, checkpoints, step + 1)
    student.eval()
    record_history(history)
    fifth = max(1, len(losses) // 5)
    first, last = losses[:fifth] or [float("nan")], losses[-fifth:] or [float("nan")]
    return {"train_loss_first": sum(first) / len(first), "train_loss_last": sum(last) / len(last),
            "train_steps_run": float(s.steps - start), "train_resumed_at": float(start),
            "train_seconds": round(time.perf_counter() - began, 1)}
