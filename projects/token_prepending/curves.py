"""Per-layer STS curves and the dev search over TP's band and output layer.

Every curve costs one encode of the split's unique sentences: `encode_all_layers` returns every hidden state
of the same forward pass, so scoring all layers is a cosine and a Spearman per layer. A TP band changes what
the layers after it compute, so each band of the search costs one pass of its own.

The statistic is the one `paperline.ml.evaluation.sts_spearman` reports (Spearman x100 of the cosine similarity
against the gold score, scipy), here per layer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from paperline.data.kinds.scored_pairs import ScoredPair


@dataclass
class Split:
    """A split's unique sentences and, per pair, the indices of its two sentences (encode each sentence once)."""

    sentences: list[str]
    left: list[int]
    right: list[int]
    gold: list[float]

    @classmethod
    def of(cls, pairs: Sequence[ScoredPair]) -> Split:
        if not pairs:
            raise ValueError("no pairs to evaluate")
        unique = list(dict.fromkeys([p.sentence1 for p in pairs] + [p.sentence2 for p in pairs]))
        index = {s: i for i, s in enumerate(unique)}
        return cls(
            sentences=unique,
            left=[index[p.sentence1] for p in pairs],
            right=[index[p.sentence2] for p in pairs],
            gold=[p.score for p in pairs],
        )


def pair_cosines(embeddings, split: Split):
    """Cosine similarity of every pair at every layer: [L+1, pairs] from embeddings [L+1, N, H]."""
    import torch

    left = torch.as_tensor(split.left)
    right = torch.as_tensor(split.right)
    return torch.nn.functional.cosine_similarity(embeddings[:, left], embeddings[:, right], dim=-1)


def layer_spearman(embeddings, split: Split, cosine=None) -> list[float]:
    """Spearman x100 at every layer of `embeddings` [L+1, N, H] (float32 tensor)."""
    from scipy.stats import spearmanr

    cosine = pair_cosines(embeddings, split) if cosine is None else cosine
    # A constant row (layer 0 under a prompt: every last token is the same `:"`) has no rank correlation.
    return [
        float("nan") if bool(row.max() == row.min()) else 100.0 * float(spearmanr(split.gold, row.numpy()).statistic)
        for row in cosine
    ]


def paired_bootstrap(gold: Sequence[float], a, b, rounds: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Spearman(a) - Spearman(b) x100 on the same pairs, with a 95% percentile interval over resampled pairs.

    Says whether a gap between two variants is larger than what the choice of test pairs alone moves.
    """
    import numpy as np
    from scipy.stats import spearmanr

    gold, a, b = np.asarray(gold), np.asarray(a), np.asarray(b)
    point = 100.0 * (spearmanr(gold, a).statistic - spearmanr(gold, b).statistic)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rounds):
        i = rng.integers(0, len(gold), len(gold))
        diffs.append(100.0 * (spearmanr(gold[i], a[i]).statistic - spearmanr(gold[i], b[i]).statistic))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(point), float(low), float(high)


@dataclass
class Best:
    layer: int
    value: float
    last: float

    @classmethod
    def of(cls, values: Sequence[float], min_layer: int = 1) -> Best:
        """Best layer among min_layer..L (layer 0, the bare token embeddings, is never a sentence model)."""
        layer = max(range(min_layer, len(values)), key=lambda k: -math.inf if math.isnan(values[k]) else values[k])
        return cls(layer=layer, value=values[layer], last=values[-1])


def best_metrics(curves: dict[str, list[float]], prefix: str, min_layer: int) -> dict[str, float]:
    """Each curve's best value (at or above `min_layer`), its layer and its last-layer value, as metrics."""
    metrics = {}
    for name, values in curves.items():
        best = Best.of(values, min_layer)
        metrics.update({f"{prefix}_{name}_best": best.value, f"{prefix}_{name}_best_layer": float(best.layer),
                        f"{prefix}_{name}_last": best.last})
    return metrics


def curves_table(curves: dict[str, list[float]]) -> dict[str, list]:
    """The curves as table columns, a row per layer (0..L)."""
    layers = len(next(iter(curves.values()), []))
    return {"layer": list(range(layers)), **{k: [round(v, 4) for v in vs] for k, vs in curves.items()}}


@dataclass
class SearchResult:
    """The dev search: one row per (position, band) with its best output layer on dev, and the choice."""

    rows: list[dict] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)

    def add(self, position: str, start: int, exit: int, values: list[float], min_layer: int) -> None:
        best = Best.of(values, min_layer)
        self.curves[f"{position}:{start}-{exit}"] = values
        self.rows.append(
            {"position": position, "start": start, "exit": exit, "best_layer": best.layer, "dev_spearman": best.value}
        )

    def chosen(self) -> dict:
        # Ties go to the earlier row: the config lists the paper's setting first.
        return max(self.rows, key=lambda r: r["dev_spearman"])

    def table(self) -> dict[str, list]:
        keys = ["position", "start", "exit", "best_layer", "dev_spearman"]
        return {k: [r[k] if k != "dev_spearman" else round(r[k], 4) for r in self.rows] for k in keys}

    def save(self, path: Path, extra: dict | None = None) -> Path:
        path.write_text(json.dumps({"rows": self.rows, "curves": self.curves, **(extra or {})}, indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> tuple[SearchResult, dict]:
        data = json.loads(path.read_text())
        result = cls(rows=data.pop("rows"), curves=data.pop("curves"))
        return result, data


def plot_curves(curves: dict[str, list[float]], out: Path, title: str, marks: dict[str, int] | None = None,
                zoom: int = 6) -> Path:
    """One line per variant, Spearman x100 against the hidden-state index; the right panel zooms on the last
    `zoom` layers, where the prompt-based variants peak, with each chosen layer marked and labelled."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works on a headless worker
    import matplotlib.pyplot as plt

    fig, (full, top) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    last = max(len(v) for v in curves.values()) - 1
    lows = []
    for i, (name, values) in enumerate(curves.items()):
        (line,) = full.plot(range(len(values)), values, label=name, linewidth=1.6)
        xs = list(range(max(0, last - zoom), len(values)))
        top.plot(xs, [values[k] for k in xs], color=line.get_color(), linewidth=1.6, marker=".")
        if marks and name in marks:
            k = marks[name]
            lows.append(values[k])
            for ax in (full, top):
                ax.plot([k], [values[k]], "o", color=line.get_color())
            top.text(0.40, 0.05 + 0.07 * len(lows), f"{name}: {values[k]:.2f} at layer {k}", color=line.get_color(),
                     transform=top.transAxes, fontsize=9)
    marked = [n for n in curves if marks and n in marks]
    if marked:  # zoom on the marked variants' range; the bare-sentence baselines sit far below
        values = [curves[n][k] for n in marked for k in range(max(1, last - zoom), last + 1)]
        high = max(values)
        top.set_ylim(max(min(values), high - 8.0) - 1.0, high + 1.0)
    full.set_xlabel("hidden state (0 = token embeddings, L = final layer after the last norm)")
    top.set_xlabel(f"last {zoom} hidden states")
    full.set_ylabel("Spearman x100")
    for ax in (full, top):
        ax.grid(alpha=0.3)
    full.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
