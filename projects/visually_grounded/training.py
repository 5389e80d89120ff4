"""The training loop of one arm: contrastive caption-picture steps, STS steps, or both in turn.

Why a loop of our own: a row here is a picture and a caption (a cached feature map and a string), and the
grounded + STS arm alternates two tasks with two losses. sentence-transformers' trainer tokenizes text columns
only, and paperline's `fit` takes one dataset and one loss. The losses are the papers': CLIP's symmetric InfoNCE
with a learned temperature (`info_nce`), and sentence-transformers' own `CoSENTLoss` on the STS pairs (its
`compute_loss_from_embeddings`, on the shared-space embeddings).

Checkpoints are paperline.ml.loop_checkpoints': `checkpoint-N/` with `model.safetensors` (every trainable
weight: MiniLM, projections, temperature, the image blocks), `optimizer.safetensors` (AdamW's moments),
`trainer_state.json` (the step), then the sha256 manifest, written last. The step plan (which task, which rows)
is a function of the seed alone and dropout is re-seeded from (seed, step), so a resumed arm takes the steps the
killed one would have taken.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from paperline.ml import loop_checkpoints
from paperline.ml.progress import bar

CAPTION, STS = "caption", "sts"


@dataclass(frozen=True)
class LoopSettings:
    caption_steps: int  # contrastive steps (0 for the STS-only control)
    sts_steps: int  # STS steps (0 for the arms without STS); with both, the tasks alternate step by step
    batch_size: int
    sts_batch_size: int
    learning_rate: float  # MiniLM
    image_learning_rate: float  # the trained image blocks
    head_learning_rate: float  # projections and temperature
    warmup_ratio: float
    checkpoint_every: int
    seed: int
    progress: bool = True


def epoch_batches(n_rows: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Row indices of each step: seeded shuffles of all rows, one after another (a batch never straddles two)."""
    rng = random.Random(seed)
    batches: list[list[int]] = []
    while len(batches) < steps:
        order = list(range(n_rows))
        rng.shuffle(order)
        batches += [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)] or [order]
    return batches[:steps]


def plan(s: LoopSettings, n_captions: int, n_pairs: int) -> list[tuple[str, list[int]]]:
    """Every step's task and rows. Caption and STS batches come from their own seeded streams, so the grounded +
    STS arm sees the grounded arm's caption batches and the STS-only arm's STS batches, in the same order."""
    captions = epoch_batches(n_captions, s.caption_steps, s.batch_size, s.seed) if s.caption_steps else []
    pairs = epoch_batches(n_pairs, s.sts_steps, s.sts_batch_size, s.seed + 1) if s.sts_steps else []
    steps: list[tuple[str, list[int]]] = []
    for i in range(max(len(captions), len(pairs))):
        if i < len(captions):
            steps.append((CAPTION, captions[i]))
        if i < len(pairs):
            steps.append((STS, pairs[i]))
    return steps


def lr_factor(step: int, steps: int, warmup_ratio: float) -> float:
    """Linear warm-up over the first `warmup_ratio` of the steps, then linear decay to 0 (SBERT's schedule)."""
    warmup = math.ceil(steps * warmup_ratio)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (steps - step) / max(1, steps - warmup))


def info_nce(texts: torch.Tensor, images: torch.Tensor, caption_ids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over a batch of (caption, picture) rows, both L2-normalised.

    Clip art repeats captions ("gramastar" names 1,375 stars): two rows of a batch with the same caption text are
    both right answers, so the target of a row is spread evenly over every column with its caption, in both
    directions, instead of calling the other copies negatives."""
    logits = scale * texts @ images.T
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    caption_to_image = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    image_to_caption = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (caption_to_image + image_to_caption) / 2


def param_groups(model, s: LoopSettings, image_trainable: bool) -> list[dict]:
    heads = [model.text_proj.weight, model.logit_scale] + ([model.image_proj.weight] if model.image_proj is not None
                                                             else [])
    groups = [{"params": list(model.text.parameters()), "lr": s.learning_rate},
              {"params": heads, "lr": s.head_learning_rate}]
    if image_trainable:
        groups.append({"params": [p for m in model.suffix_modules() for p in m.parameters()],
                       "lr": s.image_learning_rate})
    return groups


def train(model, s: LoopSettings, image_trainable: bool, caption_step: Callable[[list[int]], torch.Tensor],
          sts_step: Callable[[list[int]], torch.Tensor], n_captions: int, n_pairs: int, out: Path,
          name: str) -> dict[str, float]:
    """Train `model` in place. `caption_step(rows)` and `sts_step(rows)` return a batch's loss. Returns the mean
    loss of each task over the last fifth of its steps, the steps taken here and the seconds."""
    steps = plan(s, n_captions, n_pairs)
    for p in model.parameters():
        p.requires_grad_(False)
    groups = param_groups(model, s, image_trainable)
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    start = loop_checkpoints.resume(model, optimizer, checkpoints)
    losses: dict[str, list[float]] = {CAPTION: [], STS: []}
    began = time.perf_counter()
    model.train()
    with bar(len(steps), f"training {name}", unit="step", initial=start, enabled=s.progress) as progress:
        for step in range(start, len(steps)):
            torch.manual_seed(s.seed * 1_000_003 + step)  # dropout: the same masks after a resume
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * lr_factor(step, len(steps), s.warmup_ratio)
            task, rows = steps[step]
            loss = caption_step(rows) if task == CAPTION else sts_step(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            optimizer.step()
            losses[task].append(loss.item())
            progress.set_postfix({f"{task}_loss": f"{loss.item():.3f}"}, refresh=False)
            progress.update(1)
            if (step + 1) % s.checkpoint_every == 0 or step + 1 == len(steps):
                loop_checkpoints.save(model, optimizer, checkpoints, step + 1)
    model.eval()
    result = {"train_steps_run": float(len(steps) - start), "train_resumed_at": float(start),
              "train_seconds": round(time.perf_counter() - began, 1)}
    for task, values in losses.items():
        if values:
            tail = values[-max(1, len(values) // 5):]
            result[f"train_{task}_loss_last"] = sum(tail) / len(tail)
    result["logit_scale"] = float(model.scale().item())
    return result
