"""A wide sweep of TP settings on STS-B dev and test, every layer of each from one pass: the README's evidence.

The project's `prepare` searches a small grid on dev only (CPU time); this script maps the whole landscape
(placeholder position x band start x band exit, all output layers) on both splits, so the README can say how
far the dev-chosen setting is from the best one on test and what holds for a 135M model (Fu et al., ACL 2025,
arXiv 2412.11556, tune the same three knobs on STS-B dev).

Run (repo root; about 1 minute on one H200, hours on a 2-core CPU):
    PYTHONPATH=src .venv/bin/python projects/token_prepending/sweep.py --device cuda --out sweep.json
Then `--summarize sweep.json` prints the table (dev-chosen setting, its test score, the best ones).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(args) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    import curves
    import token_prepending as tp

    from paperline.ml.causal_lm import load_causal_lm
    from paperline.data.datasets import DatasetRef, read_split

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_causal_lm(args.model, Path(args.cache) if args.cache else None, device=args.device)
    ref = DatasetRef("stsb", "scored_pairs", Path(args.data), "")
    splits = {name: curves.Split.of(read_split(ref, name)[: args.max_rows or None]) for name in args.splits}
    result: dict = {"model": args.model, "device": args.device, "splits": {
        name: {"pairs": len(s.gold), "sentences": len(s.sentences), "curves": {}, "seconds": {}}
        for name, s in splits.items()}}
    began = time.perf_counter()

    def one(name, settings, poolings=None):
        for split_name, split in splits.items():
            out = result["splits"][split_name]
            t = time.perf_counter()
            emb = tp.encode_all_layers(model, tokenizer, split.sentences, settings, args.batch_size, poolings)
            out["seconds"][name] = round(time.perf_counter() - t, 2)
            for pooling, e in zip(poolings or (name,), emb if poolings else (emb,)):
                out["curves"][pooling] = curves.layer_spearman(e, split)
        if args.out:  # after every setting, so a run cut short keeps what it measured
            Path(args.out).write_text(json.dumps(result))

    one("bare", tp.EmbedSettings(prompt=None, pooling="mean", normalize=False), ("mean", "last"))
    one("prompteol", tp.EmbedSettings())
    # Settings in the order given; --budget-s stops adding settings once spent (the paired dev/test kept).
    for start in args.starts:
        for exit in args.exits:
            for position in args.positions:
                if exit <= start or (args.budget_s and time.perf_counter() - began > args.budget_s):
                    continue
                settings = tp.EmbedSettings(placeholder=args.placeholder, position=position, start=start, exit=exit)
                one(f"tp:{position}:{start}-{exit}", settings)
    print(f"{sum(len(v['curves']) for v in result['splits'].values())} curves in "
          f"{time.perf_counter() - began:.0f} s", flush=True)
    return result


def summarize(result: dict, min_layer: int = 1) -> str:
    """Dev-chosen TP (position, band, layer) with its test score, next to PromptEOL and the test oracle."""
    sys.path.insert(0, str(HERE))
    import curves

    dev, test = result["splits"]["dev"]["curves"], result["splits"]["test"]["curves"]
    lines = ["| variant | dev-chosen layer | test at dev layer | best test layer | test at best | test at last |",
             "|---|---|---|---|---|---|"]

    def row(name: str, label: str) -> None:
        d, t = curves.Best.of(dev[name], min_layer), curves.Best.of(test[name], min_layer)
        lines.append(f"| {label} | {d.layer} | {test[name][d.layer]:.2f} | {t.layer} | {t.value:.2f} | {t.last:.2f} |")

    for name in ("mean", "last", "prompteol"):
        row(name, name)
    tps = [n for n in dev if n.startswith("tp:")]
    chosen = max(tps, key=lambda n: curves.Best.of(dev[n], min_layer).value)
    row(chosen, f"TP dev-chosen {chosen[3:]}")
    for name in ("tp:before_sentence:1-7", "tp:before_quote:1-7"):
        if name in dev:
            row(name, f"TP {name[3:]} (paper band)")
    oracle = max(tps, key=lambda n: curves.Best.of(test[n], min_layer).value)
    row(oracle, f"TP test-oracle {oracle[3:]}")
    top = sorted(tps, key=lambda n: -curves.Best.of(dev[n], min_layer).value)[:8]
    lines += ["", "top TP settings on dev: " + ", ".join(
        f"{n[3:]} dev {curves.Best.of(dev[n], min_layer).value:.2f} (layer {curves.Best.of(dev[n], min_layer).layer})"
        for n in top)]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--cache", default=None, help="converted-model cache folder (default <repo>/.paperline/models)")
    p.add_argument("--data", default="data/stsb")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-rows", type=int, default=0)
    p.add_argument("--splits", nargs="+", default=["dev", "test"])
    p.add_argument("--placeholder", default="eos")
    p.add_argument("--positions", nargs="+", default=["before_sentence", "before_quote"])
    p.add_argument("--starts", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--exits", nargs="+", type=int, default=[2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20])
    p.add_argument("--out", default=None)
    p.add_argument("--budget-s", type=float, default=0, help="stop adding TP settings after this many seconds")
    p.add_argument("--summarize", default=None, help="print the table of a saved sweep JSON and stop")
    args = p.parse_args()
    if args.summarize:
        print(summarize(json.loads(Path(args.summarize).read_text())))
        return
    result = run(args)
    if {"dev", "test"} <= set(result["splits"]):
        print(summarize(result))


if __name__ == "__main__":
    main()
