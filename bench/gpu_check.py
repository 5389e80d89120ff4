"""GPU check of the training core: bf16 autocast on CUDA, throughput against a plain trainer, memory, quality.

Runs on a bare GPU worker with torch, transformers, sentence-transformers and `datasets` only (no Prefect,
MLflow, DVC or GX): that the training core needs nothing more is part of what this checks. One epoch of
STS-B train (batch 16, CoSENT, seed 0) per row; STS-B test Spearman x100 of each trained model.

Run:  PYTHONPATH=src python bench/gpu_check.py --model <sentence-transformers folder> --data data
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import CoSENTLoss

from paperline.data.datasets import DatasetRef, read_split
from paperline.ml.evaluation import sts_spearman
from paperline.ml.training import TrainSettings, fit
from paperline.project.sections import scored_pairs_dataset


def rows(data: Path, split: str):
    return read_split(DatasetRef("stsb", "scored_pairs", data / "stsb", ""), split)


def as_dataset(pairs) -> Dataset:
    return scored_pairs_dataset(pairs)


DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def load(model_dir: str) -> SentenceTransformer:
    return SentenceTransformer(model_dir, device=DEVICE).float()  # weights may travel as fp16; train in fp32


def run_plain(model_dir, train, out, bf16):
    model = load(model_dir)
    args = SentenceTransformerTrainingArguments(output_dir=str(out), per_device_train_batch_size=16,
                                                num_train_epochs=1, learning_rate=2e-5, warmup_steps=0.1,
                                                seed=0, bf16=bf16, report_to="none", disable_tqdm=True,
                                                save_strategy="no")
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=CoSENTLoss(model))
    started = time.perf_counter()
    trainer.train()
    sync()
    return model, time.perf_counter() - started, None


def run_paperline(model_dir, train, out, bf16, group_by_length):
    model = load(model_dir)
    settings = TrainSettings(output_dir=out, batch_size=16, seed=0, checkpoint_every=100, progress=False,
                             group_by_length=group_by_length)
    if not bf16:  # force fp32 on CUDA for the comparison row; paperline picks bf16 by itself
        import paperline.ml.training as training

        original, training.mixed_precision = training.mixed_precision, lambda device: "fp32"
    started = time.perf_counter()
    try:
        result = fit(model, train, CoSENTLoss(model), settings)
    finally:
        if not bf16:
            training.mixed_precision = original
    sync()
    return model, time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--dry-run", type=int, default=0, metavar="N", help="N rows on the CPU: checks the script")
    args = parser.parse_args()
    global DEVICE
    if args.dry_run:
        DEVICE = "cpu"
    else:
        assert torch.cuda.is_available(), "this check needs CUDA"
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 supported: "
              f"{torch.cuda.is_bf16_supported()}")
    limit = args.dry_run or None
    train, test = as_dataset(rows(args.data, "train")[:limit]), rows(args.data, "test")[:limit]
    jobs = [
        ("plain trainer, fp32", lambda out: run_plain(args.model, train, out, False)),
        ("plain trainer, bf16", lambda out: run_plain(args.model, train, out, DEVICE == "cuda")),
        ("paperline fit, fp32", lambda out: run_paperline(args.model, train, out, False, False)),
        ("paperline fit, bf16 (auto)", lambda out: run_paperline(args.model, train, out, True, False)),
        ("paperline fit, bf16, length-grouped", lambda out: run_paperline(args.model, train, out, True, True)),
    ]
    print(f"{'job':<38} {'s/epoch':>8} {'samples/s':>10} {'peak GiB':>9} {'precision':>9} {'test rho':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, job) in enumerate(jobs):
            if DEVICE == "cuda":
                torch.cuda.reset_peak_memory_stats()
            model, seconds, result = job(Path(tmp) / str(i))
            peak = torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0
            precision = result.precision if result else ("bf16" if "bf16" in name else "fp32")
            score = sts_spearman(model, test, name="test")
            print(f"{name:<38} {seconds:8.1f} {len(train) / seconds:10.1f} {peak:9.2f} {precision:>9} {score:9.2f}")
            del model
            if DEVICE == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
