"""GPU check of the training core: bf16 autocast on CUDA, throughput against a plain trainer, memory, quality.

Runs on a bare GPU worker with torch, transformers, sentence-transformers and `datasets` only (no Prefect,
MLflow, DVC or GX): that the training core needs nothing more is part of what this checks. One epoch of
STS-B train (CoSENT, seed 0) per row, at batch 16 and at a batch that fills the chip (`--big-batch`, 512, its
learning rate scaled by the square root of the batch ratio: 2e-5 x sqrt(32) = 1.13e-4), so every row has seen
the same samples; STS-B test Spearman x100 of each trained model. Then model TFLOP/s: a bf16 forward and
backward pass with an AdamW step on random token ids (batch x 128 tokens) for the MiniLM and for a randomly
initialised BERT-base-size encoder (12 layers, 768 wide), counting 6 x parameters + 12 x layers x width x
sequence FLOPs per token (the usual training estimate; embeddings left out), with and without torch.compile.

Run:  PYTHONPATH=src python bench/gpu_check.py --model <sentence-transformers folder> --data data
      PYTHONPATH=src python bench/gpu_check.py --model <folder> --dry-run 64   (on a CPU: checks the script)
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


def run_plain(model_dir, train, out, bf16, batch_size=16, learning_rate=2e-5):
    model = load(model_dir)
    args = SentenceTransformerTrainingArguments(output_dir=str(out), per_device_train_batch_size=batch_size,
                                                num_train_epochs=1, learning_rate=learning_rate, warmup_steps=0.1,
                                                seed=0, bf16=bf16, report_to="none", disable_tqdm=True,
                                                save_strategy="no", use_cpu=DEVICE == "cpu")
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=CoSENTLoss(model))
    started = time.perf_counter()
    trainer.train()
    sync()
    return model, time.perf_counter() - started, None


def run_paperline(model_dir, train, out, bf16, group_by_length, batch_size=16, learning_rate=2e-5, compile=False):
    model = load(model_dir)
    settings = TrainSettings(output_dir=out, batch_size=batch_size, learning_rate=learning_rate, seed=0,
                             checkpoint_every=100, progress=False, group_by_length=group_by_length,
                             compile=compile, device=DEVICE)
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


def model_tflops(encoder: torch.nn.Module, batch: int, seq: int, steps: int, compile: bool) -> tuple[float, float]:
    """(model TFLOP/s, tokens/s) of bf16 training steps on random ids; the first 3 steps warm up, untimed."""
    config = encoder.config
    params = sum(p.numel() for name, p in encoder.named_parameters() if "embeddings" not in name)
    flops_per_token = 6 * params + 12 * config.num_hidden_layers * config.hidden_size * seq
    step_model = torch.compile(encoder) if compile else encoder
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-5, fused=DEVICE == "cuda")
    ids = torch.randint(1000, config.vocab_size, (batch, seq), device=DEVICE)
    mask = torch.ones_like(ids)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32

    def step():
        with torch.autocast(DEVICE, dtype=dtype, enabled=DEVICE == "cuda"):
            loss = step_model(input_ids=ids, attention_mask=mask).last_hidden_state.float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = time.perf_counter() - started
    tokens = batch * seq * steps
    return flops_per_token * tokens / seconds / 1e12, tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--dry-run", type=int, default=0, metavar="N", help="N rows on the CPU: checks the script")
    parser.add_argument("--big-batch", type=int, default=512, help="the batch that fills the chip")
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
    big, big_lr = args.big_batch, 2e-5 * (args.big_batch / 16) ** 0.5
    cuda = DEVICE == "cuda"
    jobs = [
        ("plain trainer, fp32, b16", lambda out: run_plain(args.model, train, out, False)),
        ("plain trainer, bf16, b16", lambda out: run_plain(args.model, train, out, cuda)),
        ("paperline fit, fp32, b16", lambda out: run_paperline(args.model, train, out, False, False)),
        ("paperline fit, bf16 (auto), b16", lambda out: run_paperline(args.model, train, out, True, False)),
        ("paperline fit, bf16, grouped, b16", lambda out: run_paperline(args.model, train, out, True, True)),
        (f"plain trainer, bf16, b{big}", lambda out: run_plain(args.model, train, out, cuda, big, big_lr)),
        (f"paperline fit, bf16, grouped, b{big}",
         lambda out: run_paperline(args.model, train, out, True, True, big, big_lr)),
        (f"paperline fit, bf16, grouped, compile, b{big}",
         lambda out: run_paperline(args.model, train, out, True, True, big, big_lr, compile=cuda)),
    ]
    print(f"{'job':<44} {'s/epoch':>8} {'samples/s':>10} {'peak GiB':>9} {'precision':>9} {'test rho':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, job) in enumerate(jobs):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            model, seconds, result = job(Path(tmp) / str(i))
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
            precision = result.precision if result else ("bf16" if "bf16" in name and cuda else "fp32")
            score = sts_spearman(model, test, name="test")
            print(f"{name:<44} {seconds:8.1f} {len(train) / seconds:10.1f} {peak:9.2f} {precision:>9} {score:9.2f}",
                  flush=True)
            del model
            if cuda:
                torch.cuda.empty_cache()
    from transformers import BertConfig, BertModel

    print(f"\n{'encoder (training step, bf16)':<44} {'batch':>6} {'compile':>8} {'tokens/s':>10} {'TFLOP/s':>8}")
    encoders = {"all-MiniLM-L6-v2": lambda: load(args.model)[0].auto_model,
                "BERT-base size, random init": lambda: BertModel(BertConfig())}
    batch, steps = (4, 2) if args.dry_run else (big, 20)
    for name, make in encoders.items():
        for compile in (False, True) if cuda else (False,):
            encoder = make().to(DEVICE).float().train()
            tflops, tokens = model_tflops(encoder, batch, 128, steps, compile)
            print(f"{name:<44} {batch:>6} {str(compile):>8} {tokens:10.0f} {tflops:8.1f}", flush=True)
            del encoder
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
