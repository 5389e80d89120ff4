"""Embedding drift: can a classifier tell the texts a model meets now from the ones it was made for?

The method is a domain classifier (a classifier two-sample test): pool a seeded sample of reference embeddings
and of current embeddings, label each row by its side, and score a logistic regression that tells the sides
apart by the ROC AUC of its out-of-fold predictions (5-fold cross-validation). 0.5 means the two samples are
indistinguishable; 1.0 that every current text is recognisably unlike the reference. Rabanser, Guennemann and
Lipton, "Failing Loudly: An Empirical Study of Methods for Detecting Dataset Shift" (NeurIPS 2019) found the
domain classifier among the best detectors, and it is the default embedding drift method of Evidently
(`embedding_drift_methods.model`: one 50/50 split, an SGDClassifier, drift at AUC > 0.55). A second score comes
with it: the unbiased MMD^2 (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012) with a Gaussian kernel at the
median-distance bandwidth, as Evidently's `mmd` method computes it (on the same rows both give 0.0015 for STS-B
dev vs test, 0.0038 train vs test, 0.0143 train vs test half dialogue), and a permutation p-value.
scikit-learn and scipy do the work; Evidently is not a dependency (0.7.23 does not import with the pandas 3
this project runs, and it would bring plotly, nltk and telemetry for a few dozen lines).

Why the AUC decides and MMD^2 only informs: the AUC's scale means the same for any embedding model (0.5 to 1,
"how often does the classifier pick out the current text of a random pair"), while MMD^2's depends on the model's
geometry and the kernel bandwidth, so no MMD threshold carries over from one model to another. And on the real
shifts below the AUC ranks a current set a quarter of which is dialogue turns above every difference between
STS-B splits (0.67-0.70 against at most 0.67), where MMD^2 ranks it level with train vs test (0.0035 against
0.0033 at 1,000 rows; 0.0032 against 0.0035 at 2,000).
Why an effect-size threshold and not a p-value: with a thousand rows a side every test (AUC, MMD) finds STS-B
dev and test "significantly" different (p < 0.005), because they are: their genre/year mixes differ (dev has 375
answers-forums 2015 rows, test 254 forums 2016 rows, and so on). A drift verdict must mean "the texts changed
enough to matter", so it is AUC >= `DEFAULT_THRESHOLD`; the interval and the p-value say how sure the score is.

Calibration (bench/drift_scores.py: all-MiniLM-L6-v2, both sentence columns of a pair dataset, AUC range over
5 seeds at 1,000 / 2,000 rows a side; bench/results/drift_scores.md has the full table):
    STS-B train half A vs half B (split by pair)          0.50-0.52 / 0.49-0.51   the floor: sampling noise
    STS-B dev vs test, train vs test, train vs dev        0.60-0.65 / 0.62-0.67   must NOT be drift (the issue)
    STS-B dev vs test with 25% of its texts -> dialogue   0.67-0.70 / 0.69-0.70   a mild shift: just below
    STS-B dev vs test with 50% of its texts -> dialogue   0.75-0.77 / 0.77-0.78   drift
    STS-B dev vs SNLI dev (image captions)                0.85-0.88 / 0.87-0.89   drift
    STS-B dev or train vs dialogue turns, WordNet glosses 0.98-0.99 / 0.98-0.99   must be drift (the issue)
The threshold, 0.70, sits between STS-B's own split differences (the highest of 30 scores: 0.649 at 1,000
rows, 0.667 at 2,000; three and four seed standard deviations below it: 0.013-0.016 at 1,000 rows, 0.008 at
2,000) and a current set half made of a new kind of text (the lowest of 10 scores: 0.747). For a fixed
classifier the AUC of a mixture is linear in the share: a fraction f of texts wholly unlike the reference adds
about f/2 (measured a little less: the classifier that must find them among the rest is less sharp).
Evidently's 0.55 flags STS-B dev vs test (its AUC there: 0.62).

Near-duplicates: STS-B's texts come in paraphrase pairs, and a sample of both columns holds both sentences of
many pairs, on one side. Cross-validation that trains on one and holds out the other lets the classifier
recognise the side by memory: two halves of STS-B test (split by pair, so from one distribution) scored 0.57
at 1,000 rows. So rows closer than `NEAR_DUPLICATE` of the median squared distance (cosine >= ~0.8 for MiniLM)
form groups kept within one fold (StratifiedGroupKFold): that scores 0.54, and dev vs test 0.63 rather than 0.65
at 2,000 rows. The rest of the inflation goes only if the sample takes one text per pair. The p-values assume
independent rows, so such pairs make them optimistic too: one more reason the verdict rests on the effect size.

Cost (one CPU thread, 384-d embeddings, best of 3): 0.7 s at 1,000 rows a side and 60 MB; 2.2 s at 2,000 and
280 MB (two (2n)^2 float64 matrices: the distances, later the kernel in their place, and a copy for the
median). The embedding of the texts costs far more: about 9 s per 1,000 short texts for MiniLM on one thread.
Sampling, folds and permutations are seeded: one seed, one answer.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from paperline.core.errors import UsageError

METHOD = "domain classifier ROC AUC"
DEFAULT_THRESHOLD = 0.70  # calibrated on the STS-B splits and real shifts: see the module docstring
DEFAULT_MAX_ROWS = 1000  # per side: AUC within about +-0.03 (two standard deviations), ~1 s
MIN_ROWS = 100  # per side: below this the AUC's noise (+-0.08 at 2 sd) reaches the threshold's margin
FOLDS = 5
REGULARISATION_C = 0.1  # logistic regression on standardised components; 0.01 to 1 moved every AUC alike
NEAR_DUPLICATE = 0.2  # rows closer than this fraction of the median squared distance stay in one fold
MMD_PERMUTATIONS = 200  # the smallest MMD p-value is 1/201
EXAMPLES = 10  # current rows reported as the least like the reference


class DriftInputError(UsageError):
    """Embeddings that cannot be compared: too few rows, different widths, not a 2-D array of numbers."""


@dataclass(frozen=True)
class DriftResult:
    """One drift check: the score, the verdict against the threshold, and what the score rests on."""

    method: str  # what `score` is
    score: float  # out-of-fold ROC AUC of the domain classifier: 0.5 = indistinguishable, 1.0 = fully separable
    threshold: float  # drifted when score >= threshold
    drifted: bool
    ci_low: float  # 95% confidence interval of the AUC (DeLong), given the fitted folds
    ci_high: float
    p_value: float  # of "the AUC is 0.5" by permuting the labels within each fold (the folds are not refitted)
    reference_rows: int  # rows compared (a seeded sample of at most max_rows)
    current_rows: int
    reference_total: int  # rows given
    current_total: int
    seed: int
    # indices into the `current` array given, most confidently "current" first: the texts to show a reader
    least_reference_like: tuple[int, ...] = ()
    secondary: dict[str, float] = field(default_factory=dict)  # mmd2, mmd_p_value, near-duplicate rows...

    @property
    def borderline(self) -> bool:
        """The 95% interval straddles the threshold: another sample could give the other verdict."""
        return self.ci_low < self.threshold < self.ci_high

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples as lists, NaN as None."""
        out = asdict(self)
        out["least_reference_like"] = list(self.least_reference_like)
        out["borderline"] = self.borderline
        return {k: _json_number(v) for k, v in out.items()}


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    return value


def embedding_drift(reference: np.ndarray, current: np.ndarray, *, seed: int = 0,
                    max_rows: int = DEFAULT_MAX_ROWS, threshold: float = DEFAULT_THRESHOLD) -> DriftResult:
    """Whether `current` embeddings drifted from `reference` ones (rows are texts, columns the embedding).

    Each side is a seeded sample of at most `max_rows` rows, so the cost is bounded whatever the corpus. A side
    with fewer than MIN_ROWS rows is a `DriftInputError` that says how many are needed.
    """
    if not 0.5 < threshold < 1.0:
        raise DriftInputError(f"a drift threshold is a ROC AUC between 0.5 and 1 (exclusive), not {threshold}")
    if max_rows < MIN_ROWS:
        raise DriftInputError(f"max_rows={max_rows} is below the {MIN_ROWS} rows a side the test needs")
    ref, cur = _as_matrix(reference, "reference"), _as_matrix(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise DriftInputError(f"reference embeddings have {ref.shape[1]} dimensions and current ones "
                              f"{cur.shape[1]}: embed both with the same model")
    short = [f"{len(x)} {name}" for x, name in ((ref, "reference"), (cur, "current")) if len(x) < MIN_ROWS]
    if short:
        raise DriftInputError(f"a drift check needs at least {MIN_ROWS} rows on each side (got "
                              f"{', '.join(short)}); {DEFAULT_MAX_ROWS} a side gives a score within about +-0.03")

    rng = np.random.default_rng(seed)
    ref_rows, cur_rows = _sample(len(ref), max_rows, rng), _sample(len(cur), max_rows, rng)
    x = np.vstack([ref[ref_rows], cur[cur_rows]]).astype(np.float64)
    is_current = np.r_[np.zeros(len(ref_rows), bool), np.ones(len(cur_rows), bool)]

    squared = _squared_distances(x)
    median = _off_diagonal_median(squared)
    groups = _near_duplicate_groups(squared, NEAR_DUPLICATE * median)
    scores, folds = _out_of_fold_scores(x, is_current, groups, seed)
    auc, se = _delong_auc(scores[~is_current], scores[is_current])
    p_value = _permutation_p(scores, is_current, folds, rng)
    mmd2, mmd_p = _mmd_test(_gaussian_kernel(squared, median), is_current, rng)  # the kernel reuses `squared`

    # the current rows the classifier is surest about, as indices into the array the caller gave
    order = np.argsort(-scores[is_current], kind="stable")[:EXAMPLES]
    return DriftResult(
        method=METHOD, score=auc, threshold=float(threshold), drifted=bool(auc >= threshold),
        ci_low=max(0.0, auc - 1.96 * se), ci_high=min(1.0, auc + 1.96 * se), p_value=p_value,
        reference_rows=len(ref_rows), current_rows=len(cur_rows),
        reference_total=len(ref), current_total=len(cur), seed=seed,
        least_reference_like=tuple(int(cur_rows[i]) for i in order),
        secondary={"mmd2": mmd2, "mmd_p_value": mmd_p,
                   "near_duplicate_rows": float(len(groups) - len(np.unique(groups))),
                   "folds": float(len(np.unique(folds)))},
    )


def _as_matrix(values: Any, side: str) -> np.ndarray:
    matrix = np.asarray(values)
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
        raise DriftInputError(f"the {side} embeddings must be a 2-D array of numbers (rows = texts), "
                              f"not an array of shape {matrix.shape} and type {matrix.dtype}")
    if not np.isfinite(matrix).all():
        raise DriftInputError(f"the {side} embeddings contain NaN or infinite values")
    return matrix


def _sample(total: int, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    if total <= max_rows:
        return np.arange(total)
    return np.sort(rng.choice(total, size=max_rows, replace=False))


def _squared_distances(x: np.ndarray) -> np.ndarray:
    """All pairwise squared Euclidean distances, built in place: one (2n)^2 matrix at a time is the memory."""
    norms = (x * x).sum(axis=1)
    squared = x @ x.T
    squared *= -2.0
    squared += norms[:, None]
    squared += norms[None, :]
    np.maximum(squared, 0.0, out=squared)  # rounding makes a few tiny negatives
    np.fill_diagonal(squared, 0.0)
    return squared


def _off_diagonal_median(squared: np.ndarray) -> float:
    """The median squared distance between two different rows: the scale of the kernel and of "near"."""
    off_diagonal = squared[~np.eye(len(squared), dtype=bool)]
    return float(np.median(off_diagonal, overwrite_input=True))


def _gaussian_kernel(squared: np.ndarray, median: float) -> np.ndarray:
    """exp(-d^2 / median d^2), computed over `squared` itself (it is not needed after the groups)."""
    if median <= 0:  # every row the same point: a constant kernel, MMD^2 = 0
        squared[:] = 1.0
        return squared
    squared *= -1.0 / median
    return np.exp(squared, out=squared)


def _near_duplicate_groups(squared: np.ndarray, radius: float) -> np.ndarray:
    """Connected components of "closer than `radius`": a text, its paraphrases and its copies share a group."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    close = squared <= radius
    np.fill_diagonal(close, False)
    _, groups = connected_components(csr_matrix(close), directed=False)
    return groups


def _out_of_fold_scores(x: np.ndarray, is_current: np.ndarray, groups: np.ndarray,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's decision value for each row from the fold that did not see it, and each row's fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # a group too big to leave each fold both sides (one text repeated hundreds of times) cannot be kept whole;
    # plain stratified folds then, as the classifier is still honest about every row that is not a copy
    largest = np.bincount(groups).max()
    if largest * FOLDS <= min(is_current.sum(), (~is_current).sum()):
        splits = StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed).split(x, is_current, groups)
    else:
        splits = StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, is_current)
    scores, folds = np.empty(len(x)), np.empty(len(x), dtype=int)
    for fold, (train, held_out) in enumerate(splits):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=REGULARISATION_C, max_iter=2000))
        model.fit(x[train], is_current[train])
        scores[held_out], folds[held_out] = model.decision_function(x[held_out]), fold
    return scores, folds


def _delong_auc(negatives: np.ndarray, positives: np.ndarray) -> tuple[float, float]:
    """ROC AUC and its standard error (DeLong et al. 1988, by midranks as in Sun and Xu 2014)."""
    from scipy.stats import rankdata

    m, n = len(positives), len(negatives)
    pooled = rankdata(np.r_[positives, negatives])
    within_positives, within_negatives = rankdata(positives), rankdata(negatives)
    auc = (pooled[:m].sum() - m * (m + 1) / 2) / (m * n)
    positive_components = (pooled[:m] - within_positives) / n  # share of negatives below each positive
    negative_components = 1.0 - (pooled[m:] - within_negatives) / m  # share of positives above each negative
    variance = positive_components.var(ddof=1) / m + negative_components.var(ddof=1) / n
    return float(auc), float(math.sqrt(max(variance, 0.0)))


def _permutation_p(scores: np.ndarray, is_current: np.ndarray, folds: np.ndarray, rng: np.random.Generator,
                   permutations: int = 1000) -> float:
    """P-value of the AUC against "no difference": the side labels shuffled within each fold, scores kept."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    m, n = int(is_current.sum()), int((~is_current).sum())
    observed = (ranks[is_current].sum() - m * (m + 1) / 2) / (m * n)
    rank_sums = np.zeros(permutations)
    for fold in np.unique(folds):
        members = np.flatnonzero(folds == fold)
        labels = np.tile(is_current[members], (permutations, 1))
        rank_sums += (rng.permuted(labels, axis=1) * ranks[members]).sum(axis=1)
    null = (rank_sums - m * (m + 1) / 2) / (m * n)
    return float((1 + np.count_nonzero(null >= observed)) / (permutations + 1))


def _mmd_test(kernel: np.ndarray, is_current: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """Unbiased MMD^2 of the two sides under `kernel`, and its permutation p-value."""
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimate leaves out k(x, x)
    m, n = int(is_current.sum()), int((~is_current).sum())

    def mmd2(current: np.ndarray) -> np.ndarray:  # columns = labelings
        cur, ref = current.astype(np.float64), (~current).astype(np.float64)
        k_cur, k_ref = kernel @ cur, kernel @ ref
        return ((ref * k_ref).sum(0) / (n * (n - 1)) + (cur * k_cur).sum(0) / (m * (m - 1))
                - 2.0 * (ref * k_cur).sum(0) / (m * n))

    observed = float(mmd2(is_current[:, None])[0])
    shuffled = rng.permuted(np.tile(is_current, (MMD_PERMUTATIONS, 1)), axis=1).T
    null = mmd2(shuffled)
    return observed, float((1 + np.count_nonzero(null >= observed)) / (MMD_PERMUTATIONS + 1))


# ---- the report ----------------------------------------------------------------------------------------------


def drift_report_html(result: DriftResult, *, title: str, reference_name: str, current_name: str,
                      examples: dict[str, list[str]] | None = None) -> str:
    """A self-contained HTML page (no external script or style): the verdict, the scores and how to read them."""
    e = html.escape
    verdict = "DRIFT" if result.drifted else "NO DRIFT"
    colour = "#b3261e" if result.drifted else "#1e6b2e"
    borderline = (" The 95% interval straddles the threshold: another sample could give the other verdict."
                  if result.borderline else "")
    rows = [
        ("score (ROC AUC)", f"{result.score:.4f}"),
        ("threshold", f"{result.threshold:.2f} (drift when the score is at or above it)"),
        ("95% interval of the score", f"{result.ci_low:.4f} to {result.ci_high:.4f}"),
        ("p-value (AUC = 0.5)", f"{result.p_value:.4g}"),
        (f"rows of {reference_name}", f"{result.reference_rows} compared of {result.reference_total}"),
        (f"rows of {current_name}", f"{result.current_rows} compared of {result.current_total}"),
        ("seed", str(result.seed)),
    ]
    secondary = {
        "mmd2": ("MMD\u00b2 (Gaussian kernel, median bandwidth)", "{:.5f}"),
        "mmd_p_value": ("MMD\u00b2 permutation p-value", "{:.4g}"),
        "near_duplicate_rows": ("near-duplicate rows (held out with the row they copy)", "{:.0f}"),
        "folds": ("cross-validation folds", "{:.0f}"),
    }
    rows += [(secondary.get(k, (k, "{}"))[0], secondary.get(k, (k, "{}"))[1].format(v))
             for k, v in result.secondary.items()]
    table = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    sections = "".join(
        f"<h2>{e(name)}</h2>\n<ul>\n" + "".join(f"<li>{e(str(text))}</li>\n" for text in texts) + "</ul>\n"
        for name, texts in (examples or {}).items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
.verdict {{ font-size: 1.6rem; font-weight: 700; color: #fff; background: {colour}; padding: .6rem 1rem;
  border-radius: .3rem; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ text-align: left; padding: .25rem .8rem; border-bottom: 1px solid #ddd; }}
th {{ font-weight: 600; }}
</style></head><body>
<h1>{e(title)}</h1>
<p class="verdict">{verdict}: {e(current_name)} against {e(reference_name)}</p>
<p>{e(result.method)} {result.score:.4f}, threshold {result.threshold:.2f}.{e(borderline)}</p>
<table>
{table}
</table>
<h2>How to read it</h2>
<p>A logistic regression learns to tell the embeddings of {e(reference_name)} from those of {e(current_name)};
the score is the ROC AUC of its predictions on rows it was not trained on (5-fold cross-validation): the chance
that it ranks a random current text as more "current" than a random reference text. 0.5 means the two samples
are indistinguishable, 1.0 that every current text is recognisably unlike the reference. If a fraction f of the
current texts are of a kind the reference never has, the score rises by about f/2.</p>
<p>The threshold is an effect size, not a significance level: STS-B's own train, dev and test splits, whose
genre mixes differ a little, score 0.60 to 0.67 against one another and are not drift; STS-B test with half its
texts swapped for dialogue turns scores 0.75 to 0.78, dialogue turns or WordNet glosses against STS-B 0.98.
With a thousand rows a side even the STS-B split differences are significant (small p-values), so the p-values
say whether there is any difference at all, the score whether it is big enough to act on. MMD\u00b2 is a second, kernel-based measure of the same difference.</p>
{sections}</body></html>
"""
