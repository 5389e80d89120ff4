"""The DSE student: a siamese sentence encoder and a pair head over [u, v, u*v, |u-v|], and its distillation loss.

Barkan et al., "Scalable Attentive Sentence-Pair Modeling via Distilled Sentence Embedding", AAAI 2020 (arXiv
1908.05161): each sentence is embedded on its own (u, v), so candidate embeddings can be computed once and
cached; a small MLP over [u, v, u*v, |u-v|] scores the pair; the student learns the task and the teacher's
outputs at once, loss = (1 - alpha) * task loss + alpha * (student - teacher)^2. The reference implementation
(microsoft/Distilled-Sentence-Embedding, models/dse_siamese_classifier.py and train/trainers/dse_trainer.py)
uses the same features, fully connected layers with ReLU between them, and that mixing of the two losses.

This file has no paperline imports: the student's MLflow pyfunc ships it (code_paths) to load and score pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head.json"
ENCODER = "encoder"


class PairHead(nn.Module):
    """[u, v, u*v, |u-v|] -> Linear -> ReLU -> Linear -> one score per pair (a regression output, no squashing)."""

    def __init__(self, dim: int, hidden: int = 512):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.net = nn.Sequential(nn.Linear(4 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    @staticmethod
    def features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.cat([u, v, u * v, (u - v).abs()], dim=-1)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if u.shape != v.shape or u.shape[-1] != self.dim:
            raise ValueError(f"pair head expects two [n, {self.dim}] embeddings, got {tuple(u.shape)} and {tuple(v.shape)}")
        return self.net(self.features(u, v)).squeeze(-1)

    def config(self) -> dict:
        return {"dim": self.dim, "hidden": self.hidden}


def dse_loss(pred: torch.Tensor, gold: torch.Tensor, teacher: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) * MSE(pred, gold) + alpha * mean (pred - teacher)^2: DSE's objective for a regression task.

    With alpha = 0 it is exactly the task loss; with alpha = 1, pure distillation.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    task = nn.functional.mse_loss(pred, gold)
    if alpha == 0.0:
        return task
    distill = ((pred - teacher) ** 2).mean()
    return (1.0 - alpha) * task + alpha * distill


class DSELoss(nn.Module):
    """A sentence-transformers loss: embeds both columns, scores them with the head, mixes task and teacher.

    The head lives in the loss (as SoftmaxLoss's classifier does), so the trainer optimises it with the encoder;
    paperline.ml.training.fit checkpoints its weights beside the model's. Labels are [gold, teacher] per row.
    """

    def __init__(self, model, head: PairHead, alpha: float):
        super().__init__()
        self.model, self.head, self.alpha = model, head, alpha

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        u, v = (self.model(features)["sentence_embedding"] for features in sentence_features)
        pred = self.head(u, v)
        labels = labels.to(pred.dtype)
        return dse_loss(pred, labels[:, 0], labels[:, 1], self.alpha)

    @property
    def citation(self) -> str:
        return "Barkan et al., AAAI 2020, arXiv 1908.05161"


# ---- a saved student: the encoder folder, the head's weights and shape ----------------------------------------


def save_student(encoder, head: PairHead, folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    encoder.save(str(folder / ENCODER))
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(folder / HEAD_WEIGHTS))
    (folder / HEAD_CONFIG).write_text(json.dumps(head.config()))
    return folder


def load_student(folder: Path, device: str | None = None):
    """(SentenceTransformer, PairHead) from a folder written by `save_student`, in eval mode."""
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(Path(folder) / ENCODER), device=device)
    head = PairHead(**json.loads((Path(folder) / HEAD_CONFIG).read_text()))
    head.load_state_dict(load_file(str(Path(folder) / HEAD_WEIGHTS)))
    return encoder, head.to(encoder.device).eval()


def embed(encoder, sentences: list[str], batch_size: int = 64) -> torch.Tensor:
    return encoder.encode(sentences, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)


@torch.inference_mode()
def score_pairs(encoder, head: PairHead, pairs: list[tuple[str, str]], batch_size: int = 64) -> torch.Tensor:
    """One score per pair; each distinct sentence is embedded once."""
    sentences = sorted({s for pair in pairs for s in pair})
    index = {s: i for i, s in enumerate(sentences)}
    embeddings = embed(encoder, sentences, batch_size)
    u = embeddings[[index[a] for a, _ in pairs]]
    v = embeddings[[index[b] for _, b in pairs]]
    return head(u, v).float().cpu()


@torch.inference_mode()
def rank(encoder, head: PairHead, query: str, candidates: torch.Tensor) -> torch.Tensor:
    """Scores of one query against precomputed candidate embeddings [n, dim]: one encode, one head pass."""
    q = embed(encoder, [query])[0]
    return head(q.expand_as(candidates), candidates)
