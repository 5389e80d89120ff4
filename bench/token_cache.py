"""The token cache: what tokenizing every batch costs a training epoch, against reading the ids back.

sentence-transformers' collator calls `model.preprocess` on each text column of every batch of every epoch;
with the token cache (paperline.ml.token_cache, on by default in `fit`) the texts are tokenized once per dataset
version and tokenizer and each batch is a gather and a pad. For all-MiniLM-L6-v2's tokenizer this prints, per
dataset and batch size: building the cache (once per dataset version), reading it back (each later run), and
one epoch's batch preparation both ways (the rows in a seeded shuffle, every text column). On a CPU the model's
step dwarfs either; on a GPU the collator runs on one CPU core while the chip waits for it.

Run:  .venv/bin/python bench/token_cache.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from sentence_transformers import SentenceTransformer

from paperline.core.settings import find_root
from paperline.data.datasets import DatasetRef, read_split
from paperline.ml import token_cache
from paperline.ml.models import resolve_model_path

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def columns(name: str, kind: str, split: str, fields: tuple[str, str]) -> list[list[str]]:
    rows = read_split(DatasetRef(name, kind, find_root() / "data" / name, ""), split)
    return [[getattr(row, f) for row in rows] for f in fields]


def epoch_seconds(prepare, cols: list[list[str]], batch_size: int, seed: int) -> float:
    order = list(range(len(cols[0])))
    random.Random(seed).shuffle(order)
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        for col in cols:
            prepare([col[i] for i in rows])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = SentenceTransformer(resolve_model_path(BASE), device="cpu")
    datasets = {"stsb train": columns("stsb", "scored_pairs", "train", ("sentence1", "sentence2")),
                "snli dev": columns("snli", "nli_pairs", "dev", ("premise", "hypothesis"))}
    with tempfile.TemporaryDirectory() as tmp:  # first use's imports, outside the timings
        for _ in range(2):
            token_cache.load_or_build(model, ["warm up"], Path(tmp)).batch(["warm up"])
    print(f"{'dataset':<11} {'rows':>6} {'texts':>6} {'build s':>8} {'reload s':>9} {'batch':>6} "
          f"{'tokenize s/epoch':>17} {'cached s/epoch':>15} {'ratio':>6}")
    for name, cols in datasets.items():
        texts = [t for col in cols for t in col]
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            token_cache.load_or_build(model, texts, Path(tmp))
            build = time.perf_counter() - started
            started = time.perf_counter()
            table = token_cache.load_or_build(model, texts, Path(tmp))
            reload = time.perf_counter() - started
        for batch_size in (16, 512):
            plain = [epoch_seconds(model.preprocess, cols, batch_size, r) for r in range(args.repeats)]
            cached = [epoch_seconds(table.batch, cols, batch_size, r) for r in range(args.repeats)]
            p, c = statistics.median(plain), statistics.median(cached)
            print(f"{name:<11} {len(cols[0]):>6} {len(set(texts)):>6} {build:>8.2f} {reload:>9.2f} {batch_size:>6} "
                  f"{p:>17.3f} {c:>15.3f} {p / c:>5.1f}x")


if __name__ == "__main__":
    main()
