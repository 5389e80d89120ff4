"""Scoring a model's layer x dimension grid, on PyTorch or on its checked ONNX export: the evaluation's plumbing.

The grid itself (paperline.ml.layer_grid) is the paper's measure; this file picks the encoder that computes it
(`evaluate.backend`: ONNX Runtime when the full model's Spearman on `check_split` stays within 0.1 of PyTorch's,
paperline.ml.evaluation.sts_backend) and records on the run which one did. The `Evaluate` config section (which
split, layers and dimensions the grid covers, and on which backend) lives here too.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from paperline.core.config import StrictModel
from paperline.ml.evaluation import Backend


class Evaluate(StrictModel):
    dataset: str = "stsb"
    split: str = "test"  # the grid's split; the primary metric is the full model's cell on it
    layers: list[int] | None = None  # None: every layer of the model
    dims: list[int] = Field(default_factory=lambda: [32, 64, 128, 256, 384], min_length=1)
    max_rows: int | None = Field(None, ge=2)
    batch_size: int = Field(64, ge=1)
    # onnx / onnx-int8: encode the grid with ONNX Runtime (paperline.ml.fast_encode) when the full model's
    # Spearman on `check_split` stays within 0.1 of PyTorch's; the run's tags say which backend was used
    backend: Backend = "torch"
    check_split: str = "dev"


def scored_grid(path: Path, pairs: list, check: list, e, tags: dict[str, str], name: str):
    """(the model at `path` in PyTorch, its grid on `pairs`, the ONNX encoder used or None); `tags` gets
    `<name>_encode_backend` and `<name>_encode_check`."""
    from sentence_transformers import SentenceTransformer

    from paperline.ml.evaluation import sts_backend
    from paperline.ml.layer_grid import grid_spearman

    encoder = SentenceTransformer(str(path))
    onnx, tags[f"{name}_encode_check"] = sts_backend(encoder, path, check, e.backend, all_layers=True)
    tags[f"{name}_encode_backend"] = e.backend if onnx is not None else "torch"
    grid = grid_spearman(encoder, pairs, layers=e.layers, dims=e.dims, batch_size=e.batch_size, encoder=onnx)
    return encoder, grid, onnx


def full_cell(encoder, pairs, batch_size, n, full, grid=None, onnx=None) -> float:
    """The (n layers, full dimensions) cell: from the grid when it has it, else scored on its own."""
    from paperline.ml.layer_grid import grid_spearman

    if grid is not None and (n, full) in grid:
        return grid[(n, full)]
    return grid_spearman(encoder, pairs, layers=[n], dims=[full], batch_size=batch_size, encoder=onnx)[(n, full)]
