"""The layer x dimension grid: STS Spearman of every (first K layers, first D dimensions) sub-model at once.

2D Matryoshka Sentence Embeddings (Li et al., 2024, arXiv 2402.14776, later "ESE: Espresso Sentence
Embeddings") trains one encoder whose embeddings stay useful when a deployment keeps only the first K
transformer layers and the first D output dimensions. Evaluating that claim naively costs one encode per
layer; here every layer comes from ONE forward pass with `output_hidden_states`: hidden state K is exactly
what a model truncated to K layers computes, and the rest of the model (pooling, normalisation) is applied
to it unchanged. Truncating to D dimensions is a slice, and cosine similarity ignores the norm, so a whole
grid costs about one full-model encode (see bench/matryoshka_grid_speed.py).

Importable without Prefect, MLflow, DVC or GX; plotting imports matplotlib only when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from paperline.data.kinds.scored_pairs import ScoredPair

DEFAULT_DIMS = (32, 64, 128, 256, 384)


@contextmanager
def _hidden_states_on(model):
    """Make the transformer module return every layer's token embeddings (`all_layer_embeddings`)."""
    config = model[0].auto_model.config
    before = config.output_hidden_states
    config.output_hidden_states = True
    try:
        yield
    finally:
        config.output_hidden_states = before


def num_layers(model) -> int:
    return int(model[0].auto_model.config.num_hidden_layers)


def layer_embeddings(model, features: dict) -> list:
    """Sentence embeddings after each layer from one forward pass: item k is what the first k layers give.

    Item 0 is the embedding layer (no transformer layer), item n the full model. Each hidden state goes
    through the model's own modules after the transformer (pooling, normalisation), so item k equals the
    output of the same model cut to k layers. Keeps the autograd graph (the paper loss trains through it).
    """
    with _hidden_states_on(model):
        out = model[0](dict(features))
    hidden = out["all_layer_embeddings"]
    rest = list(model)[1:]
    embeddings = []
    for states in hidden:
        f = {**out, "token_embeddings": states}
        for module in rest:
            f = module(f)
        embeddings.append(f["sentence_embedding"])
    return embeddings


def encode_layers(model, sentences: Sequence[str], batch_size: int = 64) -> list:
    """Embeddings of `sentences` at every layer (list over layers 0..n of float32 tensors [N, H]) on CPU.

    Sentences are batched by length, as `SentenceTransformer.encode` does, so padding costs the same.
    """
    import numpy as np
    import torch

    order = np.argsort([-len(s) for s in sentences], kind="stable")
    per_layer: list[list] | None = None
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(sentences), batch_size):
            batch = [sentences[i] for i in order[start : start + batch_size]]
            features = model.preprocess(batch)
            features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
            layers = layer_embeddings(model, features)
            if per_layer is None:
                per_layer = [[] for _ in layers]
            for k, emb in enumerate(layers):
                per_layer[k].append(emb.float().cpu())
    inverse = torch.as_tensor(np.argsort(order))
    return [torch.cat(chunks)[inverse] for chunks in per_layer or []]


def cosine_rows(a, b):
    import torch

    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def grid_spearman(
    model,
    pairs: Sequence[ScoredPair],
    layers: Sequence[int] | None = None,
    dims: Sequence[int] = DEFAULT_DIMS,
    batch_size: int = 64,
    encoder=None,
) -> dict[tuple[int, int], float]:
    """Spearman x100 of cosine similarity vs gold score for each (layers, dims) cell; one encode in all.

    Same statistic as `paperline.ml.evaluation.sts_spearman` (scipy's Spearman of cosine scores), so the
    full-model cell equals the project's primary metric. `encoder`: an all-layers `OnnxEncoder` of the same
    model (`paperline.ml.evaluation.sts_backend(..., all_layers=True)`) that encodes instead of PyTorch.
    """
    import torch
    from scipy.stats import spearmanr

    if not pairs:
        raise ValueError("no pairs to evaluate the layer x dimension grid on")
    layers = list(layers) if layers is not None else list(range(1, num_layers(model) + 1))
    unique = list(dict.fromkeys([p.sentence1 for p in pairs] + [p.sentence2 for p in pairs]))
    index = {s: i for i, s in enumerate(unique)}
    left = [index[p.sentence1] for p in pairs]
    right = [index[p.sentence2] for p in pairs]
    gold = [p.score for p in pairs]
    if encoder is None:
        embeddings = encode_layers(model, unique, batch_size=batch_size)
    else:
        embeddings = [torch.from_numpy(e) for e in encoder.encode_layers(unique, batch_size=batch_size)]
    grid = {}
    for layer in layers:
        emb = embeddings[layer]
        for dim in dims:
            cut = emb[:, :dim]
            scores = cosine_rows(cut[left], cut[right]).numpy()
            grid[(layer, dim)] = 100.0 * float(spearmanr(gold, scores).statistic)
    return grid


def grid_metrics(grid: dict[tuple[int, int], float], prefix: str) -> dict[str, float]:
    """`{prefix}_l{L}_d{D}` per cell, e.g. `stsb_test_spearman_l3_d128`."""
    return {f"{prefix}_l{layer}_d{dim}": value for (layer, dim), value in sorted(grid.items())}


def grid_table(grids: dict[str, dict[tuple[int, int], float]]) -> dict[str, list]:
    """Columns for an MLflow table: layers, dims, one column per named grid, and `difference` (first - second)."""
    names = list(grids)
    cells = sorted(grids[names[0]])
    table: dict[str, list] = {"layers": [c[0] for c in cells], "dims": [c[1] for c in cells]}
    for name in names:
        table[name] = [round(grids[name][c], 4) for c in cells]
    if len(names) >= 2:
        table["difference"] = [round(grids[names[0]][c] - grids[names[1]][c], 4) for c in cells]
    return table


def format_grid(grid: dict[tuple[int, int], float]) -> str:
    """A plain-text table: one row per layer count, one column per dimension (what the README shows)."""
    layers = sorted({c[0] for c in grid})
    dims = sorted({c[1] for c in grid})
    lines = ["layers \\ dims " + " ".join(f"{d:>7}" for d in dims)]
    for layer in layers:
        lines.append(f"{layer:>13} " + " ".join(f"{grid[(layer, d)]:7.2f}" for d in dims))
    return "\n".join(lines)


def plot_grids(
    model_grid: dict[tuple[int, int], float],
    baseline_grid: dict[tuple[int, int], float] | None,
    out: Path,
    title: str = "STS-B test Spearman x100",
    names: tuple[str, str] = ("2D Matryoshka", "baseline"),
) -> Path:
    """Heatmaps of the model, the baseline and their difference, with the number written in each cell."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works on a headless worker
    import matplotlib.pyplot as plt
    import numpy as np

    layers = sorted({c[0] for c in model_grid})
    dims = sorted({c[1] for c in model_grid})

    def as_array(grid):
        return np.array([[grid[(layer, d)] for d in dims] for layer in layers])

    panels = [(names[0], as_array(model_grid), "viridis")]
    if baseline_grid is not None:
        base = as_array(baseline_grid)
        panels += [(names[1], base, "viridis"), (f"{names[0]} - {names[1]}", panels[0][1] - base, "RdBu")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    low = min(p[1].min() for p in panels[:2])
    high = max(p[1].max() for p in panels[:2])
    for ax, (name, values, cmap) in zip(axes[0], panels):
        if cmap == "RdBu":  # the difference is centred on zero, so equal gains and losses look equal
            bound = max(1e-6, float(np.abs(values).max()))
            image = ax.imshow(values, cmap=cmap, vmin=-bound, vmax=bound, origin="lower", aspect="auto")
        else:
            image = ax.imshow(values, cmap=cmap, vmin=low, vmax=high, origin="lower", aspect="auto")
        for i in range(len(layers)):
            for j in range(len(dims)):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=8, color="black",
                        bbox={"facecolor": "white", "alpha": 0.6, "pad": 1, "linewidth": 0})
        ax.set_xticks(range(len(dims)), [str(d) for d in dims])
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
        ax.set_xlabel("dimensions kept")
        ax.set_ylabel("layers kept")
        ax.set_title(name)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
