"""The training loop of one arm: cross-entropy over each example's K candidates, AdamW with a linear warm-up and
decay, seeded, checkpointed and resumable, one progress bar.

sentence-transformers' trainer wants one text (or pair) per row; a Uni-Encoder row is a context with K
candidates in one sequence, so the loop is our own. Checkpoints are paperline.ml.loop_checkpoints':
`checkpoint-N/` with `model.safetensors` (encoder and head), `optimizer.safetensors` (AdamW's moments),
`trainer_state.json` (the step), then the sha256 manifest, written last. The batch order is a function of the
seed alone and dropout is re-seeded from (seed, step) each step, so a resumed run takes the steps the killed one
would have taken.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from paperline.ml import loop_checkpoints
from paperline.ml.progress import bar



@dataclass(frozen=True)
class LoopSettings:
    steps: int
    batch_size: int
    learning_rate: float
    head_learning_rate: float
    warmup_ratio: float
    checkpoint_every: int
    seed: int
    progress: bool = True


def batch_order(n_examples: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Example indices of every step: seeded shuffles of all examples, one after another."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        epoch = list(range(n_examples))
        rng.shuffle(epoch)
        order += epoch
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def lr_factor(step: int, steps: int, warmup_ratio: float) -> float:
    warmup = math.ceil(steps * warmup_ratio)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (steps - step) / max(1, steps - warmup))


def train(scorer, batch_of: Callable[[list[int]], tuple], n_examples: int, s: LoopSettings, out: Path,
          name: str) -> dict[str, float]:
    """Train `scorer` in place; `batch_of(indices) -> (contexts, candidates, labels, pad_id)` builds a batch.
    Returns the loss of the last steps, the steps taken here and the seconds."""
    import torch

    head = [p for n, p in scorer.named_parameters() if n.startswith("head.")]
    body = [p for n, p in scorer.named_parameters() if not n.startswith("head.")]
    groups = [{"params": body, "lr": s.learning_rate}] + ([{"params": head, "lr": s.head_learning_rate}] if head else [])
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    start = loop_checkpoints.resume(scorer, optimizer, checkpoints)
    order = batch_order(n_examples, s.steps, s.batch_size, s.seed)
    losses: list[float] = []
    began = time.perf_counter()
    scorer.train()
    with bar(s.steps, f"training {name}", unit="step", initial=start, enabled=s.progress) as progress:
        for step in range(start, s.steps):
            torch.manual_seed(s.seed * 1_000_003 + step)  # dropout: the same masks after a resume
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * lr_factor(step, s.steps, s.warmup_ratio)
            contexts, candidates, labels, pad_id = batch_of(order[step])
            logits = scorer(contexts, candidates, pad_id)
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels, device=logits.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(scorer.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            progress.update(1)
            if (step + 1) % s.checkpoint_every == 0 or step + 1 == s.steps:
                loop_checkpoints.save(scorer, optimizer, checkpoints, step + 1)
    scorer.eval()
    tail = losses[-max(1, len(losses) // 5):] if losses else [float("nan")]
    return {"train_loss_last": sum(tail) / len(tail), "train_steps_run": float(s.steps - start),
            "train_resumed_at": float(start), "train_seconds": round(time.perf_counter() - began, 1)}
