"""Inference cost of Token Prepending over PromptEOL, as a ratio measured in one run, and throughput in sentences/s.

Fu et al. (ACL 2025, arXiv 2412.11556) report TP costs about 4% more than PromptEOL: one extra token per
sentence and a copy per band layer. Our goal is a ratio <= 1.10. Every variant embeds the SAME sentences in
the SAME batches (sorted by length), alternating rounds so that load from other processes hits all variants
alike; the ratio uses each variant's fastest round (the median is shown beside it). The row a user would otherwise write, a plain transformers
loop (tokenize, forward, last token of the last hidden state), shows what the project's path costs on top.

Run (repo root):
    .venv/bin/python bench/token_prepending_overhead.py                       # SmolLM2-135M, 1 CPU thread
    .venv/bin/python bench/token_prepending_overhead.py --threads 2 --sentences 256 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "projects" / "token_prepending"))


def _sentences(data: Path, n: int) -> list[str]:
    from paperline.data.datasets import DatasetRef, read_split

    rows = read_split(DatasetRef("stsb", "scored_pairs", data, ""), "test")
    return list(dict.fromkeys(s for r in rows for s in (r.sentence1, r.sentence2)))[:n]


def _plain_loop(model, tokenizer, sentences, batch_size, hooks):
    """What a user writes with transformers alone: PromptEOL text, a forward, the last token's final state."""
    import torch

    texts = [hooks.PROMPTEOL.replace("{sentence}", hooks.normalize_sentence(s)) for s in sentences]
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = []
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            enc = tokenizer([texts[i] for i in order[b : b + batch_size]], return_tensors="pt", padding=True)
            enc = enc.to(model.device)
            out.append(model(**enc, output_hidden_states=True).hidden_states[-1][:, -1].cpu())
    return torch.cat(out)


def main() -> None:
    import torch

    import token_prepending as hooks
    from paperline.ml.causal_lm import load_causal_lm

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--data", default=str(ROOT / "data" / "stsb"))
    p.add_argument("--sentences", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: leave the other core to others)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--start", type=int, default=1)
    p.add_argument("--exit", type=int, default=7)
    p.add_argument("--layer", type=int, default=-1, help="output layer of the early-exit rows (-1: no such rows)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    model, tokenizer = load_causal_lm(args.model, device=args.device)
    sentences = _sentences(Path(args.data), args.sentences)
    total = model.config.num_hidden_layers
    prompteol = hooks.EmbedSettings()
    tp = hooks.EmbedSettings(placeholder="eos", start=args.start, exit=args.exit)
    variants = {
        "transformers loop, PromptEOL": lambda: _plain_loop(model, tokenizer, sentences, args.batch_size, hooks),
        "PromptEOL": lambda: hooks.embed(model, tokenizer, sentences, prompteol, args.batch_size),
        f"PromptEOL + TP [{args.start}, {args.exit})": lambda: hooks.embed(model, tokenizer, sentences, tp, args.batch_size),
    }
    if 0 < args.layer < total:
        variants[f"PromptEOL, exit at layer {args.layer}"] = lambda: hooks.embed(
            model, tokenizer, sentences, hooks.variant(prompteol, output_layer=args.layer), args.batch_size)
        variants[f"PromptEOL + TP, exit at layer {args.layer}"] = lambda: hooks.embed(
            model, tokenizer, sentences, hooks.variant(tp, output_layer=args.layer), args.batch_size)
    for fn in variants.values():  # warm-up: first-call allocations and lazy hook installation
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))  # alternate the order
        for name in names:
            began = time.perf_counter()
            variants[name]()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - began)

    def tokens(settings) -> int:
        return sum(enc["attention_mask"].sum().item() for _, enc, _ in hooks._batches(tokenizer, sentences, settings, 64))

    # The fastest round is the cost of the work itself; slower rounds add other processes' load (this is a
    # shared machine), so the ratio uses the fastest round of each variant and the median is shown beside it.
    base = min(times["PromptEOL"])
    print(f"{len(sentences)} STS-B test sentences, batch {args.batch_size}, {args.rounds} rounds, "
          f"device {args.device}, torch threads {torch.get_num_threads()}; model {args.model} ({total} layers)")
    print(f"tokens: PromptEOL {tokens(prompteol)}, TP {tokens(tp)} (+{tokens(tp) / tokens(prompteol) - 1:.1%})")
    print(f"| {'variant':<36} | best s | median s | sentences/s (best) | ratio to PromptEOL (best) |")
    print(f"|{'-' * 38}|--------|----------|--------------------|---------------------------|")
    for name, ts in times.items():
        t = min(ts)
        print(f"| {name:<36} | {t:6.2f} | {statistics.median(ts):8.2f} | {len(sentences) / t:18.1f} | {t / base:25.3f} |")

if __name__ == "__main__":
    main()
