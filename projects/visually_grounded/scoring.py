"""What `evaluate` measures: caption<->picture recall@k on held-out pictures, STS Spearman, and the retrieval
picture that MLflow shows.

Captions repeat (clip art: 639 test pictures carry 516 distinct captions, "BlueMan#" names 28 of them), so the
rule counts a caption by its text:

- caption -> image: each distinct caption is one query over all the split's pictures; a hit at k when one of the
  k nearest pictures carries that caption (any of its pictures, not one chosen copy);
- image -> caption: each picture is one query over the split's distinct captions (each text once, so copies of
  one caption cannot fill the top k); a hit at k when its own caption text is among the k nearest.

Recall is x100; `mean_recall` is the mean of the six recalls (R@1, 5, 10 both ways), the retrieval papers' "R
sum" / 6. Equal similarities keep the split's row order (a stable sort); with float embeddings they are rare.

STS: Spearman x100 of cosine against the gold score, STS-B test and the STS 2012-2016 suite per year (SentEval's
"all": a year's subsets joined) and their mean, as paperline's `sts` comparison defines them
(paperline.ops.compare.suite). Suite pairs that are also STS-B train pairs (whitespace-normalised, either order)
are left out for every arm, since two arms train on STS-B train.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

KS = (1, 5, 10)
DIRECTIONS = ("caption_to_image", "image_to_caption")
RETRIEVAL_METRICS = tuple(f"{d}_recall_at_{k}" for d in DIRECTIONS for k in KS) + ("mean_recall",)
SUITE_YEARS = ("sts12", "sts13", "sts14", "sts15", "sts16")
SUITE_METRICS = tuple(f"{y}_spearman" for y in SUITE_YEARS) + ("sts12_16_avg_spearman",)


def distinct(captions: list[str]) -> tuple[list[str], np.ndarray]:
    """The distinct caption texts in first-seen order, and each row's index among them."""
    index: dict[str, int] = {}
    ids = np.array([index.setdefault(c, len(index)) for c in captions], dtype=np.int64)
    return list(index), ids


def _top(similarity: np.ndarray, k: int) -> np.ndarray:
    """The k best columns of each row, best first; ties keep the earlier column (stable)."""
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def recall(caption_embeddings: np.ndarray, image_embeddings: np.ndarray, image_caption_ids: np.ndarray) -> dict:
    """Recall@1/5/10 x100 both ways and their mean. `caption_embeddings` (Q, D) are the distinct captions,
    `image_embeddings` (N, D) the pictures, `image_caption_ids` (N,) each picture's caption's row in the first."""
    similarity = caption_embeddings @ image_embeddings.T  # (Q, N)
    kmax = max(KS)
    out: dict[str, float] = {}
    top_images = _top(similarity, min(kmax, similarity.shape[1]))  # (Q, k)
    hits_c2i = image_caption_ids[top_images] == np.arange(len(caption_embeddings))[:, None]
    top_captions = _top(similarity.T, min(kmax, similarity.shape[0]))  # (N, k)
    hits_i2c = top_captions == image_caption_ids[:, None]
    for direction, hits in zip(DIRECTIONS, (hits_c2i, hits_i2c)):
        for k in KS:
            out[f"{direction}_recall_at_{k}"] = 100.0 * float(hits[:, :k].any(axis=1).mean())
    out["mean_recall"] = float(np.mean([out[f"{d}_recall_at_{k}"] for d in DIRECTIONS for k in KS]))
    return out


def chance_recall(n_captions: int, image_caption_ids: np.ndarray) -> dict[str, float]:
    """What a random ranking scores on the same split (expected, x100): the floor the numbers stand on."""
    n_images = len(image_caption_ids)
    per_caption = np.bincount(image_caption_ids, minlength=n_captions)
    out = {}
    for k in KS:
        # caption -> image: 1 - P(none of the caption's m pictures among k of n), averaged over captions
        miss = [np.prod([(n_images - m - j) / (n_images - j) for j in range(min(k, n_images))]) for m in per_caption]
        out[f"caption_to_image_recall_at_{k}"] = 100.0 * (1.0 - float(np.mean(miss)))
        out[f"image_to_caption_recall_at_{k}"] = 100.0 * min(1.0, k / n_captions)
    out["mean_recall"] = float(np.mean(list(out.values())))
    return out


# ---- STS ------------------------------------------------------------------------------------------------------


def pair_key(first: str, second: str) -> tuple[str, str]:
    """A pair's identity for the contamination rule: whitespace collapsed, order ignored (as the platform's)."""
    a, b = (re.sub(r"\s+", " ", s).strip() for s in (first, second))
    return (a, b) if a <= b else (b, a)


def spearman(gold: list[float], predicted: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return 100.0 * float(spearmanr(gold, predicted).statistic)


def cosine_of_pairs(embeddings: dict[str, np.ndarray], pairs) -> np.ndarray:
    """Cosine of each pair's two (L2-normalised) sentence embeddings."""
    first = np.stack([embeddings[p.sentence1] for p in pairs])
    second = np.stack([embeddings[p.sentence2] for p in pairs])
    return (first * second).sum(axis=1)


def suite_by_year(rows, trained_pairs: set[tuple[str, str]], max_rows: int | None) -> tuple[dict, dict[str, int]]:
    """The suite's rows per year (`sts12`..`sts16`) not trained on (the first `max_rows` of each when capped),
    and how many of each year were left out as trained-on pairs."""
    kept: dict[str, list] = {y: [] for y in SUITE_YEARS}
    removed = {y: 0 for y in SUITE_YEARS}
    for row in rows:
        year = row.source
        if year not in kept:
            continue
        if pair_key(row.sentence1, row.sentence2) in trained_pairs:
            removed[year] += 1
        elif not max_rows or len(kept[year]) < max_rows:
            kept[year].append(row)
    return {y: r for y, r in kept.items() if len(r) >= 3}, removed


def sts_scores(embeddings: dict[str, np.ndarray], stsb_test: list, suite: dict[str, list]) -> dict[str, float]:
    """`stsb_test_spearman` and, with suite rows, `sts12_spearman`.. and `sts12_16_avg_spearman`."""
    out: dict[str, float] = {}
    if stsb_test:
        out["stsb_test_spearman"] = spearman([p.score for p in stsb_test], cosine_of_pairs(embeddings, stsb_test))
    for year, rows in suite.items():
        out[f"{year}_spearman"] = spearman([p.score for p in rows], cosine_of_pairs(embeddings, rows))
    years = [out[f"{y}_spearman"] for y in SUITE_YEARS if f"{y}_spearman" in out]
    if suite and len(years) == len(SUITE_YEARS):
        out["sts12_16_avg_spearman"] = float(np.mean(years))
    return out


# ---- the picture MLflow shows ----------------------------------------------------------------------------------


def retrieval_grid(title: str, queries: list[str], retrieved: list[list[Path]], hits: list[list[bool]],
                   out: Path, thumb: int = 96) -> Path:
    """A PNG: one line per query caption, its top-k retrieved pictures beside it, each framed green where the
    picture carries that caption (a hit under the rule above) and red where not."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # an older Pillow without scalable default font
        font = ImageFont.load_default()
    label_width, pad, frame = 300, 8, 4
    k = max((len(r) for r in retrieved), default=0)
    width = label_width + k * (thumb + pad) + pad
    height = 30 + len(queries) * (thumb + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 8), title, fill="black", font=font)
    for row, (query, paths, marks) in enumerate(zip(queries, retrieved, hits)):
        top = 30 + row * (thumb + pad)
        draw.multiline_text((pad, top + 4), _wrap(query, draw, font, label_width - 2 * pad), fill="black", font=font)
        for col, (path, hit) in enumerate(zip(paths, marks)):
            left = label_width + col * (thumb + pad)
            draw.rectangle([left, top, left + thumb - 1, top + thumb - 1], fill="#2e7d32" if hit else "#c62828")
            with Image.open(path) as picture:
                picture = picture.convert("RGB")
                picture.thumbnail((thumb - 2 * frame, thumb - 2 * frame))
                canvas.paste(picture, (left + (thumb - picture.width) // 2, top + (thumb - picture.height) // 2))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, "PNG", optimize=True)
    return out


def _wrap(text: str, draw, font, width: int, max_lines: int = 5) -> str:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=font) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += " ..."
    return "\n".join(lines)
