"""Export one budget of a 2D Matryoshka model: the first K transformer layers, embeddings cut to D dimensions.

2D Matryoshka Sentence Embeddings (Li et al., 2024, arXiv 2402.14776) train one encoder so that any (K, D)
sub-model is usable; this module turns a chosen grid cell into a plain sentence-transformers folder:
- the layers above K are removed from the weights and `num_hidden_layers` is set to K in the saved config,
  so the folder is smaller and an encode runs K layers only (the speed the budget promises);
- the output is cut to D with `truncate_dim`, which sentence-transformers saves in its model config and
  applies on load, so `SentenceTransformer(out)` needs no argument and gives the grid's number.

Importable without Prefect, MLflow, DVC or GX.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from paperline.core import targets
from paperline.core.errors import PaperlineError


class ExportError(PaperlineError, ValueError):
    """A budget the model cannot be cut to; the message says which values are valid."""

    exit_code = 2  # the user named something that does not exist (paperline.core.errors.USAGE)


def _layer_stack(auto_model):
    """(parent module, attribute name, ModuleList) holding the transformer layers, found by its length.

    BERT keeps them in `encoder.layer`, DistilBERT in `transformer.layer`, others in `layers`; looking for the
    ModuleList whose length is `num_hidden_layers` covers them without a table of architectures.
    """
    from torch import nn

    n = auto_model.config.num_hidden_layers
    for name, module in auto_model.named_modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == n:
                return module, child_name, child
    raise ExportError(f"cannot find the {n} transformer layers of {type(auto_model).__name__} to cut")


def truncate_layers(model, layers: int) -> None:
    """Keep the first `layers` transformer layers of a loaded `SentenceTransformer`, in place."""
    from torch import nn

    auto_model = model[0].auto_model
    n = auto_model.config.num_hidden_layers
    if not 1 <= layers <= n:
        raise ExportError(f"--layers {layers} is out of range: the model has {n} layers, choose 1..{n}")
    parent, attr, stack = _layer_stack(auto_model)
    setattr(parent, attr, nn.ModuleList(list(stack)[:layers]))
    auto_model.config.num_hidden_layers = layers


def check_target(out: str | Path, force: bool = False) -> Path:
    """Where an export may be written (`paperline.core.targets`): a new folder, or an existing one with `force`,
    in a folder that exists and can hold a new entry. Call it before any slow work."""
    return targets.check_target(out, what="folder", noun="an export", force=force)


def export_truncated(model_path: str | Path, layers: int, dim: int, out: str | Path, force: bool = False) -> Path:
    """Write a sentence-transformers folder at `out`: `model_path` cut to `layers` layers and `dim` dimensions.

    `SentenceTransformer(out).encode(texts)` then equals the (layers, dim) cell of
    `paperline.ml.layer_grid` for the same texts. The folder appears whole or not at all: it is written beside
    `out` and renamed into place, so a failed export never leaves half a model, nor removes the one `--force`
    would replace.
    """
    from sentence_transformers import SentenceTransformer

    out = check_target(out, force)
    model = SentenceTransformer(str(model_path), device="cpu")
    full = model.get_embedding_dimension()
    if not 1 <= dim <= full:
        raise ExportError(f"--dim {dim} is out of range: the model embeds in {full} dimensions, choose 1..{full}")
    truncate_layers(model, layers)
    # None keeps the config free of a no-op truncation when the full width is asked for
    model.truncate_dim = dim if dim < full else None
    with targets.writing(out):  # a disk that fills up meanwhile: one line, and the staging folder is gone
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            model.save(str(staging))
            if out.exists():  # --force: the old export goes only once the new one is complete
                shutil.rmtree(out)
            staging.rename(out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out
