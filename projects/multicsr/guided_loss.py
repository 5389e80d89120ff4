"""MultiCSR stage 3: contrastive loss with hard negatives and a frozen guide that masks in-batch false negatives.

The reference (`simcse/models.py`, `cl_masked_forward`) scores each anchor against every positive and every hard
negative of the batch (cosine / temperature), asks a frozen pre-trained encoder (the guide) for the same cosines,
and removes every candidate other than the anchor's own positive whose guide cosine exceeds an absolute threshold
phi (0.95 in the paper): near-duplicates of the anchor in other rows are false negatives, not negatives.

Why not sentence-transformers' GISTEmbedLoss: its `absolute` strategy removes candidates whose guide similarity is
above the guide similarity *of the anchor's own positive* minus a margin, a threshold relative to each row, not
MultiCSR's fixed phi, and it adds anchor-anchor and positive-positive terms the paper does not have.

Where this differs from the reference: a masked candidate's logit is set to -inf (it leaves the softmax); the
reference multiplies its logit by 0 (a logit of 0 against positives near 1/0.05 = 20, almost the same) and uses
a per-entry binary cross-entropy on the softmax. Here the loss is MultipleNegativesRankingLoss's cross-entropy,
which the unguided arms use, so the arms differ only in the mask.
"""

from __future__ import annotations

import torch
from torch import nn


def guided_mask(guide_anchor: torch.Tensor, guide_candidates: torch.Tensor, phi: float) -> torch.Tensor:
    """True where a candidate must leave the softmax: guide cosine > phi, never the row's own positive (column i
    of row i; candidates are the batch's positives, then its hard negatives)."""
    a = nn.functional.normalize(guide_anchor, dim=-1)
    c = nn.functional.normalize(guide_candidates, dim=-1)
    mask = (a @ c.T) > phi
    rows = torch.arange(a.shape[0], device=mask.device)
    mask[rows, rows] = False
    return mask


class GuidedMultipleNegativesLoss(nn.Module):
    """In-batch contrastive loss over (anchor, positive, negative) columns; with a `guide`, false negatives above
    `phi` are masked. Without one it is MultipleNegativesRankingLoss with hard negatives (scale 20 = 1/0.05)."""

    def __init__(self, model, guide=None, phi: float = 0.95, scale: float = 20.0) -> None:
        super().__init__()
        self.model = model
        # kept outside the module tree: the guide is frozen, so neither the optimizer nor a checkpoint sees it
        self.__dict__["guide"] = guide
        self.phi = phi
        self.scale = scale
        self.masked = 0  # masked candidates seen so far (a trainer callback or a test reads it)

    def _embed(self, encoder, features) -> torch.Tensor:
        return encoder(features)["sentence_embedding"]

    def forward(self, sentence_features, labels=None) -> torch.Tensor:
        anchor, *candidates = [self._embed(self.model, f) for f in sentence_features]
        candidates = torch.cat(candidates)
        scores = nn.functional.normalize(anchor, dim=-1) @ nn.functional.normalize(candidates, dim=-1).T
        scores = scores * self.scale
        if self.guide is not None:
            with torch.no_grad():
                self.guide.to(anchor.device)
                guide_anchor, *guide_candidates = [self._embed(self.guide, f) for f in sentence_features]
                mask = guided_mask(guide_anchor, torch.cat(guide_candidates), self.phi)
            self.masked += int(mask.sum())
            scores = scores.masked_fill(mask, float("-inf"))
        target = torch.arange(anchor.shape[0], device=scores.device)
        return nn.functional.cross_entropy(scores, target)

    @property
    def citation(self) -> str:
        return "Wang et al., MultiCSR, NAACL 2024, arXiv 2310.10962"
