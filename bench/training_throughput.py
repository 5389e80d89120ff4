"""Training throughput: paperline's training job against a plain `SentenceTransformerTrainer.train()`.

Same model (all-MiniLM-L6-v2), same STS-B rows, batch size, loss (CoSENT), learning rate and seed; the two
run alternately in one process, each from a fresh copy of the base model, and only the `train()` call is timed.
paperline's job adds what production needs (resumable checkpoints every `--checkpoint-every` steps, seeding,
device and precision choice, length-grouped batches when the config asks for them).

Run:  .venv/bin/python bench/training_throughput.py [--rows 1600] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import CoSENTLoss

from paperline.data.datasets import DatasetRef, read_split
from paperline.ml.models import resolve_model_path
from paperline.core.settings import find_root
from paperline.ml.training import TrainSettings, fit
from paperline.project.sections import scored_pairs_dataset

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def stsb_rows(n: int) -> Dataset:
    ref = DatasetRef("stsb", "scored_pairs", find_root() / "data" / "stsb", "")
    return scored_pairs_dataset(read_split(ref, "train"), n)


def plain(rows: Dataset, batch_size: int, out: Path) -> float:
    """What a user writes without paperline: the trainer with the same hyper-parameters, defaults otherwise."""
    model = SentenceTransformer(resolve_model_path(BASE), device="cpu")
    args = SentenceTransformerTrainingArguments(output_dir=str(out), per_device_train_batch_size=batch_size,
                                                num_train_epochs=1, learning_rate=2e-5, warmup_steps=0.1, seed=0,
                                                report_to="none", disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=rows, loss=CoSENTLoss(model))
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def paperline_job(rows: Dataset, batch_size: int, out: Path, checkpoint_every: int, group_by_length: bool) -> float:
    model = SentenceTransformer(resolve_model_path(BASE), device="cpu")
    settings = TrainSettings(output_dir=out, batch_size=batch_size, checkpoint_every=checkpoint_every,
                             progress=False, device="cpu", group_by_length=group_by_length)
    started = time.perf_counter()
    fit(model, rows, CoSENTLoss(model), settings)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1600, help="STS-B train rows (1600 = 100 steps at batch 16)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=50,
                        help="paperline checkpoints this often (the default config: every 100 of 360 steps)")
    args = parser.parse_args()
    rows = stsb_rows(args.rows)
    times: dict[str, list[float]] = {"plain SentenceTransformerTrainer": [], "paperline (shuffled batches, default)": [],
                                     "paperline (length-grouped)": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for i, name in enumerate(times):
                out = Path(tmp) / f"{repeat}-{i}"
                if name.startswith("plain"):
                    times[name].append(plain(rows, args.batch_size, out))
                else:
                    times[name].append(paperline_job(rows, args.batch_size, out, args.checkpoint_every,
                                                     group_by_length="grouped" in name))
    base = statistics.median(times["plain SentenceTransformerTrainer"])
    print(f"{args.rows} STS-B rows, batch {args.batch_size}, CoSENT, CPU; median of {args.repeats}; "
          f"paperline checkpoints every {args.checkpoint_every} steps")
    print(f"{'job':<38} {'seconds':>8} {'samples/s':>10} {'ratio':>6}")
    for name, values in times.items():
        seconds = statistics.median(values)
        print(f"{name:<38} {seconds:8.1f} {args.rows / seconds:10.1f} {base / seconds:6.2f}")


if __name__ == "__main__":
    main()
