"""Learning-rate trial for a cross-encoder initialised from all-MiniLM-L6-v2 (a new one-logit head).

Why cross_encoder_sts trains at 8e-5 rather than sentence-transformers' 2e-5: at 2e-5 one epoch left the
cross-encoder below the bi-encoder it starts from. This script trains on a shuffled sample of STS-B train
(both orders, batch 16, 10% warm-up, seed 0) at each rate given and prints Spearman x100 on the first dev pairs.
A trial, not a result: small samples, one seed; the project's README gives the full runs.

Run (repo root):
    .venv/bin/python bench/cross_encoder_lr_trial.py 2e-5 8e-5 1.5e-4 3e-4      # 1,500 pairs, 500 dev pairs
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from paperline.ml import cross_encoder as ce
    from paperline.data.datasets import DatasetRef, read_split
    from paperline.ml.training import TrainSettings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rates", nargs="+", type=float)
    p.add_argument("--pairs", type=int, default=1500)
    p.add_argument("--dev", type=int, default=500)
    p.add_argument("--data", default=str(ROOT / "data" / "stsb"))
    args = p.parse_args()
    ref = DatasetRef("stsb", "scored_pairs", Path(args.data), "")
    train, dev = read_split(ref, "train"), read_split(ref, "dev")[: args.dev]
    random.Random(0).shuffle(train)
    train = train[: args.pairs]
    print(f"{'lr':>8} {'dev Spearman':>13} {'train s':>8}")
    for rate in args.rates:
        model = ce.load_cross_encoder("sentence-transformers/all-MiniLM-L6-v2")
        began = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            ce.train(model, [(r.sentence1, r.sentence2) for r in train], [r.score / 5 for r in train],
                     TrainSettings(output_dir=Path(tmp), learning_rate=rate, checkpoint_every=10_000, progress=False))
        scores = ce.predict(model, [(r.sentence1, r.sentence2) for r in dev])
        print(f"{rate:>8.0e} {ce.spearman(scores, [r.score for r in dev]):>13.2f} {time.perf_counter() - began:>8.0f}")


if __name__ == "__main__":
    main()
