"""The 2DMSE training objective of the reference implementation, as one sentence-transformers loss."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from paperline.ml.layer_grid import layer_embeddings


def paper_dims(hidden_size: int, smallest: int = 8) -> list[int]:
    """The dimensions the reference samples from: 8, 16, 32, ... strictly below the hidden size."""
    return [2**k for k in range(int(math.log2(smallest)), int(math.log2(hidden_size)) + 1) if 2**k < hidden_size]


def kl_to_last(layer: Tensor, last: Tensor, temperature: float = 1.0) -> Tensor:
    """T^2 * KL between the softmax over embedding dimensions of the last layer and of layer i (batch mean).

    Computed as the reference does, `KLDivLoss(batchmean)(log_softmax(layer_i / T), softmax(last / T))`,
    i.e. sum p_last * log(p_last / p_i); the last layer is NOT detached, so it is pulled towards layer i too.
    Zero when the two embeddings are equal.
    """
    return F.kl_div(
        F.log_softmax(layer / temperature, dim=-1),
        F.softmax(last / temperature, dim=-1),
        reduction="batchmean",
    ) * temperature**2


class TwoDMatryoshkaPaperLoss(nn.Module):
    """2D Matryoshka objective of Li et al., "2D Matryoshka Sentence Embeddings" (arXiv 2402.14776, 2024).

    Follows `AngleTDMSETrainer.compute_loss` of SeanLee97/AnglE at commit 74e5ba2. Each step, from ONE
    forward pass with every layer's hidden states:

    1. sample one layer i uniformly from 1 .. n-1 and one dimension d from {8, 16, 32, ...} below the hidden
       size (the same i and d for the whole batch);
    2. loss = L(last) + L(layer i) + L(last[:, :d]) + L(layer_i[:, :d])
              + T^2 * KL(softmax(last / T) || softmax(layer_i / T)),
       where L is the similarity loss (CoSENT and/or AnglE, weighted), every layer is pooled the way the model
       pools its last layer (mean pooling for MiniLM), T = 1, and the last layer is not detached.

    Inputs (sentence-transformers loss style): `sentence_features` = two tokenized columns (sentence1,
    sentence2); `labels` = a float similarity per pair (STS-B score / 5). Returns a scalar tensor.

    Differences from sentence-transformers' `Matryoshka2dLoss` (listed in the method card): the KL term uses
    T = 1 with T^2 scaling and keeps the gradient into the last layer (ST: T = 0.3, scaled by T, last layer
    detached); the truncated dimension is sampled per step from powers of two (ST: a fixed list, all of it or
    `n_dims_per_step` of it, applied to every layer loss); layer i's loss has weight 1 (ST: uniform/log weight
    divided by the number of sampled layers); and ST counts layer indices from the embedding layer.
    """

    def __init__(
        self,
        model,
        cosent_weight: float = 1.0,
        angle_weight: float = 0.0,
        kl_temperature: float = 1.0,
        kl_weight: float = 1.0,
        mse_weight: float = 0.0,
        layer_weight: float = 1.0,
        dims: Sequence[int] | None = None,
        scale: float = 20.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        from sentence_transformers.sentence_transformer.losses import AnglELoss, CoSENTLoss

        self.model = model
        self.cosent = CoSENTLoss(model, scale=scale)
        self.angle = AnglELoss(model, scale=scale)
        self.cosent_weight = cosent_weight
        self.angle_weight = angle_weight
        self.kl_temperature = kl_temperature
        self.kl_weight = kl_weight
        self.mse_weight = mse_weight
        self.layer_weight = layer_weight
        hidden = model.get_embedding_dimension()
        self.dims = list(dims) if dims else paper_dims(hidden)
        # A private generator, seeded by the trainer's global seed at construction, keeps runs reproducible
        # without consuming the global RNG that dropout and data order use.
        self.rng = rng or random.Random(torch.initial_seed())
        self.last_choice: tuple[int, int] | None = None  # (layer i, dim d) of the latest step, for tests

    def similarity_loss(self, a: Tensor, b: Tensor, labels: Tensor) -> Tensor:
        loss = a.new_zeros(())
        if self.cosent_weight:
            loss = loss + self.cosent_weight * self.cosent.compute_loss_from_embeddings([a, b], labels)
        if self.angle_weight:
            loss = loss + self.angle_weight * self.angle.compute_loss_from_embeddings([a, b], labels)
        return loss

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        per_column = [layer_embeddings(self.model, features) for features in sentence_features]
        if len(per_column) != 2:
            raise ValueError(f"{type(self).__name__} expects two text columns, got {len(per_column)}")
        n = len(per_column[0]) - 1  # hidden state 0 is the embedding layer, n the last transformer layer
        layer = self.rng.randint(1, n - 1) if n > 1 else n
        dim = self.rng.choice(self.dims)
        self.last_choice = (layer, dim)
        return self._loss(per_column, n, layer, dim, labels)

    def _loss(self, per_column: list[list[Tensor]], n: int, layer: int, dim: int, labels: Tensor) -> Tensor:
        a_last, b_last = per_column[0][n], per_column[1][n]
        a_i, b_i = per_column[0][layer], per_column[1][layer]
        w = self.layer_weight  # 1.0 in the reference; the order of the sums is the reference's
        loss = self.similarity_loss(a_last, b_last, labels)
        loss = loss + w * self.similarity_loss(a_i, b_i, labels)
        loss = loss + self.similarity_loss(a_last[:, :dim], b_last[:, :dim], labels)
        loss = loss + w * self.similarity_loss(a_i[:, :dim], b_i[:, :dim], labels)
        student = torch.cat([a_i, b_i])
        teacher = torch.cat([a_last, b_last])
        if self.kl_weight:
            loss = loss + self.kl_weight * kl_to_last(student, teacher, self.kl_temperature)
        if self.mse_weight:  # the later reference's distillation term adds MSE (weight 1) to the KL
            loss = loss + self.mse_weight * F.mse_loss(student, teacher)
        return loss

    @property
    def citation(self) -> str:
        return (
            "@article{li20242d, title={2D Matryoshka Sentence Embeddings}, author={Li, Xianming and Li, Zongxi "
            "and Li, Jing and Xie, Haoran and Li, Qing}, journal={arXiv preprint arXiv:2402.14776}, year={2024}}"
        )

    def get_config_dict(self) -> dict:
        return {
            "cosent_weight": self.cosent_weight,
            "angle_weight": self.angle_weight,
            "kl_temperature": self.kl_temperature,
            "kl_weight": self.kl_weight,
            "mse_weight": self.mse_weight,
            "layer_weight": self.layer_weight,
            "dims": self.dims,
        }
