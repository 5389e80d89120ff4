"""Cross-encoders: both sentences of a pair in one forward pass, one similarity score per pair.

The pair-regression setup of BERT on STS-B (Devlin et al., NAACL 2019, arXiv 1810.04805): the two sentences are
joined as `[CLS] a [SEP] b [SEP]` and a linear head on the pooled output predicts the score. Full attention
across the pair makes it more accurate than a bi-encoder and far slower to rank with (no embedding to cache),
which is why the distillation projects use it as the teacher (DSE, arXiv 1908.05161; Trans-Encoder, arXiv
2109.13059). Model, trainer, loss and predict are sentence-transformers' `CrossEncoder` stack; this module only
fixes the choices the projects share:

- no pretrained cross-encoder installs offline (../shared/MODELS.md), so one is initialised from an encoder such
  as all-MiniLM-L6-v2: its transformer weights, a new one-logit head (`num_labels=1`);
- scores are similarities in [0, 1] (STS score / 5, or a pseudo-label); the loss is binary cross-entropy on the
  logit (sentence-transformers' STS recipe, and Trans-Encoder's), so `predict` returns sigmoid(logit) in [0, 1];
- `both_orders`: a pair is trained on as (a, b) and (b, a), since the model is not symmetric by construction
  (Trans-Encoder does this); prediction can average the two orders for the same reason.

Importable without Prefect, MLflow, DVC or GX. Logging to MLflow goes through `pyfunc_kwargs` (a pyfunc whose
`predict` takes pairs and returns scores, see paperline/serving/cross_encoder_pyfunc.py); `load_logged` reads one back from a
downloaded MLflow model folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paperline.core.requirements import pinned_requirements
from paperline.ml.models import ModelError, resolve_model_path
from paperline.ml.training import TrainResult, TrainSettings, fit

# MLflow executes this models-from-code file when it logs or loads the pyfunc; the training core never imports it.
SERVING_DIR = Path(__file__).resolve().parent.parent / "serving"
ARTIFACT = "cross_encoder"  # the pyfunc artifact that holds the saved CrossEncoder folder

Pair = tuple[str, str]


def load_cross_encoder(name: str, max_length: int = 128, device: str | None = None):
    """A one-logit `CrossEncoder` from a hub id, an offline package (MODELS.md) or a folder.

    A folder saved by `CrossEncoder.save` loads with its trained head; an encoder checkpoint (a bi-encoder such
    as all-MiniLM-L6-v2) loads its transformer and gets a new, randomly initialised head.
    """
    import transformers
    from sentence_transformers.cross_encoder import CrossEncoder

    path = resolve_model_path(name)
    verbosity = transformers.logging.get_verbosity()
    # From an encoder checkpoint, transformers lists the new head's weights as missing: expected, not news.
    transformers.logging.set_verbosity_error()
    try:
        return CrossEncoder(path, num_labels=1, max_length=max_length, device=device)
    except OSError as exc:
        raise ModelError(
            f"cannot load a cross-encoder from '{name}' ({path}): {str(exc).splitlines()[0]}; use a local folder, "
            "an offline package from MODELS.md, or a hub id with network access"
        ) from None
    finally:
        transformers.logging.set_verbosity(verbosity)


def pair_dataset(pairs: Sequence[Pair], scores: Sequence[float], both_orders: bool = True):
    """A `datasets.Dataset` (sentence1, sentence2, score) for the trainer; both orders doubles the rows."""
    from datasets import Dataset

    if len(pairs) != len(scores):
        raise ValueError(f"{len(pairs)} pairs but {len(scores)} scores")
    bad = [s for s in scores if not 0.0 <= float(s) <= 1.0]
    if bad:
        raise ValueError(f"cross-encoder targets must lie in [0, 1] (binary cross-entropy); got e.g. {bad[0]}")
    first = [a for a, _ in pairs] + ([b for _, b in pairs] if both_orders else [])
    second = [b for _, b in pairs] + ([a for a, _ in pairs] if both_orders else [])
    labels = [float(s) for s in scores] * (2 if both_orders else 1)
    return Dataset.from_dict({"sentence1": first, "sentence2": second, "score": labels})


def train(model, pairs: Sequence[Pair], scores: Sequence[float], settings: TrainSettings,
          both_orders: bool = True) -> TrainResult:
    """Fit `model` to similarity targets in [0, 1] with binary cross-entropy on its logit; resumable (fit)."""
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    return fit(model, pair_dataset(pairs, scores, both_orders), BinaryCrossEntropyLoss(model), settings)


def predict(model, pairs: Sequence[Pair], batch_size: int = 64, both_orders: bool = False):
    """Scores in [0, 1] (float32 numpy), one per pair; `both_orders` averages (a, b) and (b, a)."""
    import numpy as np

    if not pairs:
        return np.zeros(0, dtype=np.float32)
    scores = model.predict(list(pairs), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
    if both_orders:
        swapped = model.predict([(b, a) for a, b in pairs], batch_size=batch_size, show_progress_bar=False,
                                convert_to_numpy=True)
        scores = (scores + swapped) / 2.0
    return np.asarray(scores, dtype=np.float32).reshape(-1)


def spearman(scores: Sequence[float], gold: Sequence[float]) -> float:
    """Spearman x 100, as the STS papers report it.

    sentence-transformers' `CrossEncoderCorrelationEvaluator` computes the same number from one order only;
    scoring here from `predict` lets the caller average both orders and reuse the scores (one pass, not two).
    """
    from scipy.stats import spearmanr

    if len(scores) != len(gold) or len(gold) < 2:
        raise ValueError(f"need two equal-length lists of at least 2 scores, got {len(scores)} and {len(gold)}")
    return 100.0 * float(spearmanr(scores, gold).statistic)


def split_spearman(model, splits: dict[str, Sequence], batch_size: int = 64, both_orders: bool = False,
                   name: str = "{split}") -> dict[str, float]:
    """Spearman x100 of the model's scores on each split's scored pairs, keyed by `name` with the split filled in
    (e.g. `teacher_stsb_{split}_spearman`)."""
    out = {}
    for split, rows in splits.items():
        scores = predict(model, [(r.sentence1, r.sentence2) for r in rows], batch_size, both_orders=both_orders)
        out[name.format(split=split)] = spearman(scores, [r.score for r in rows])
    return out


# ---- MLflow: log as a pyfunc, read back from a downloaded model ----------------------------------------------


def pyfunc_kwargs(folder: Path, max_length: int) -> dict[str, Any]:
    """Keyword arguments for `mlflow.pyfunc.log_model(name=..., **kwargs)` (models from code, no pickles).

    MLflow's sentence_transformers flavor serves `SentenceTransformer` only, so a cross-encoder is a pyfunc:
    `load_model(uri).predict([["a", "b"], ...])` returns one float32 score in [0, 1] per pair.
    """
    return {
        "python_model": str(SERVING_DIR / "cross_encoder_pyfunc.py"),
        "artifacts": {ARTIFACT: str(folder)},
        "pip_requirements": pinned_requirements(["torch", "transformers", "sentence-transformers", "numpy"]),
        "metadata": {"model_type": "cross-encoder", "max_length": max_length,
                     "input": "list of [sentence1, sentence2] pairs", "output": "float32 score in [0, 1] per pair"},
        "input_example": [["A man is playing a guitar.", "A person plays music."]],
    }


def logged_folder(model_dir: Path) -> Path:
    """The CrossEncoder folder inside a downloaded MLflow model logged with `pyfunc_kwargs`.

    Read from the model's MLmodel file (where MLflow recorded the artifact), not guessed from a path layout.
    """
    import yaml

    mlmodel = Path(model_dir) / "MLmodel"
    try:
        spec = yaml.safe_load(mlmodel.read_text())
        relative = spec["flavors"]["python_function"]["artifacts"][ARTIFACT]["path"]
    except (OSError, KeyError, TypeError) as exc:
        raise ModelError(f"{model_dir} is not a cross-encoder logged by paperline (no '{ARTIFACT}' artifact in "
                         f"its MLmodel: {exc}); register the teacher with the cross_encoder_sts project") from None
    return Path(model_dir) / relative


def load_logged(model_dir: Path, device: str | None = None):
    """The CrossEncoder of a downloaded MLflow model (see `logged_folder`), with its trained head."""
    from sentence_transformers.cross_encoder import CrossEncoder

    return CrossEncoder(str(logged_folder(model_dir)), device=device)
