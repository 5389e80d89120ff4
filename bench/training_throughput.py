"""Training throughput and quality: paperline's training job against a plain `SentenceTransformerTrainer.train()`.

Same model (all-MiniLM-L6-v2), same STS-B rows, batch size, loss (CoSENT), learning rate and seed; the jobs
run alternately in one process (repeat r uses seed r for every job), each from a fresh copy of the base model,
and only the `train()` call is timed. paperline's job adds what production needs (resumable checkpoints every
`--checkpoint-every` steps, seeding, device and precision choice) and, as an option, length-grouped batches
(paperline.ml.batching). Each trained model is scored on STS-B test (Spearman x100): the quality column is the
mean over the repeats' seeds and its spread (max - min), the quality gate for making a faster path the default
(issue 13: within 0.3 of the plain trainer).

Run:  .venv/bin/python bench/training_throughput.py [--rows 5749] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import CoSENTLoss

from paperline.data.datasets import DatasetRef, read_split
from paperline.ml.models import resolve_model_path
from paperline.core.settings import find_root
from paperline.ml.training import TrainSettings, fit
from paperline.project.sections import scored_pairs_dataset

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def stsb_split(split: str) -> list:
    return read_split(DatasetRef("stsb", "scored_pairs", find_root() / "data" / "stsb", ""), split)


def plain(rows: Dataset, batch_size: int, out: Path, seed: int) -> tuple[float, SentenceTransformer]:
    """What a user writes without paperline: the trainer with the same hyper-parameters, defaults otherwise."""
    model = SentenceTransformer(resolve_model_path(BASE), device="cpu")
    args = SentenceTransformerTrainingArguments(output_dir=str(out), per_device_train_batch_size=batch_size,
                                                num_train_epochs=1, learning_rate=2e-5, warmup_steps=0.1, seed=seed,
                                                report_to="none", disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=rows, loss=CoSENTLoss(model))
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started, model


def paperline_job(rows: Dataset, batch_size: int, out: Path, checkpoint_every: int, group_by_length: bool,
                  seed: int, pool_batches: int = 50) -> tuple[float, SentenceTransformer]:
    model = SentenceTransformer(resolve_model_path(BASE), device="cpu")
    settings = TrainSettings(output_dir=out, batch_size=batch_size, checkpoint_every=checkpoint_every,
                             progress=False, device="cpu", group_by_length=group_by_length, seed=seed,
                             group_pool_batches=pool_batches)
    started = time.perf_counter()
    fit(model, rows, CoSENTLoss(model), settings)
    return time.perf_counter() - started, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5749, help="STS-B train rows (all 5,749 = 360 steps at batch 16)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="each with its own seed (0, 1, ...) for every job")
    parser.add_argument("--pool-batches", type=int, nargs="+", default=[50],
                        help="length-grouped jobs to run, one per pool size in batches (default: 50)")
    parser.add_argument("--checkpoint-every", type=int, default=50,
                        help="paperline checkpoints this often (the default config: every 100 of 360 steps)")
    args = parser.parse_args()
    from paperline.ml.evaluation import sts_spearman

    rows, test = scored_pairs_dataset(stsb_split("train"), args.rows), stsb_split("test")
    grouped = {f"paperline (length-grouped, pool {n})": n for n in args.pool_batches}
    jobs = ["plain SentenceTransformerTrainer", "paperline (shuffled batches, default)", *grouped]
    times: dict[str, list[float]] = {name: [] for name in jobs}
    quality: dict[str, list[float]] = {name: [] for name in jobs}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for i, name in enumerate(jobs):
                out = Path(tmp) / f"{repeat}-{i}"
                if name.startswith("plain"):
                    seconds, model = plain(rows, args.batch_size, out, seed=repeat)
                else:
                    seconds, model = paperline_job(rows, args.batch_size, out, args.checkpoint_every,
                                                   group_by_length=name in grouped, seed=repeat,
                                                   pool_batches=grouped.get(name, 50))
                times[name].append(seconds)
                quality[name].append(sts_spearman(model, test))
                print(f"  repeat {repeat} (seed {repeat}) {name}: {seconds:.1f} s, STS-B test {quality[name][-1]:.2f}",
                      flush=True)
    base = statistics.median(times[jobs[0]])
    print(f"{args.rows} STS-B rows, batch {args.batch_size}, CoSENT, 1 epoch, CPU ({torch.get_num_threads()} threads); "
          f"median time of {args.repeats} repeats (seeds 0..{args.repeats - 1}), alternating; paperline checkpoints "
          f"every {args.checkpoint_every} steps")
    print(f"{'job':<38} {'seconds':>8} {'samples/s':>10} {'ratio':>6} {'STS-B test':>11} {'spread':>7}")
    for name in jobs:
        seconds = statistics.median(times[name])
        print(f"{name:<38} {seconds:8.1f} {args.rows / seconds:10.1f} {base / seconds:6.2f} "
              f"{statistics.fmean(quality[name]):11.2f} {max(quality[name]) - min(quality[name]):7.2f}")


if __name__ == "__main__":
    main()
