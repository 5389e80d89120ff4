"""CPU encode speed and quality: PyTorch fp32 vs ONNX Runtime optimised vs ONNX Runtime int8, side by side.

The workloads are the STS-B test set (1,379 pairs, 2,758 sentences: both sides, as evaluation encodes them) and
10,000 candidate sentences (the first distinct WordNet glosses of `data/definitions` train, a retrieval corpus's
shape). Rows: `onnx int8` quantises the MatMul weights (what `onnx-int8` and `export-onnx --int8` use), `onnx
int8-all` the fused attention's QKV projection too (what Optimum's dynamic avx512_vnni config does). The
backends run in one process with the same thread count, rounds interleaved (each backend in turn, then again)
and each figure the best round, so load from other processes hits every row alike. Quality is the
STS-B test Spearman x100 of each backend's own embeddings; the goal (issue 13) is >= 2x PyTorch's sentences/s
within 0.1 Spearman. The ONNX exports (paperline.ml.fast_encode) are made first, timed apart.

Run (repo root, after `paperline data pull`):
    HF_HUB_OFFLINE=1 .venv/bin/python bench/cpu_encode.py                       # both workloads, 2 rounds
    HF_HUB_OFFLINE=1 .venv/bin/python bench/cpu_encode.py --limit 64 --rounds 1 # a quick look
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def spearman(first, second, gold) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return 100.0 * float(spearmanr(gold, cos).statistic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="hub id or model folder")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for torch and ONNX Runtime alike")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--candidates", type=int, default=10_000)
    p.add_argument("--limit", type=int, default=None, help="first N STS-B test pairs only (a quick look)")
    args = p.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from paperline.data.datasets import DatasetRef, read_split
    from paperline.ml.fast_encode import OnnxEncoder, cached_export
    from paperline.ml.models import resolve_model_path

    torch.set_num_threads(args.threads)
    pairs = read_split(DatasetRef("stsb", "scored_pairs", ROOT / "data" / "stsb", "-"), "test")[: args.limit]
    glosses = read_split(DatasetRef("definitions", "definitions", ROOT / "data" / "definitions", "-"), "train")
    candidates = list(dict.fromkeys(r.definition for r in glosses))[: args.candidates]
    sts = [p.sentence1 for p in pairs] + [p.sentence2 for p in pairs]
    path = resolve_model_path(args.model)
    model = SentenceTransformer(path, device="cpu")
    backends = {"pytorch fp32": lambda s: model.encode(s, batch_size=args.batch_size)}
    export_seconds, sizes = {"pytorch fp32": 0.0}, {"pytorch fp32": _size(Path(path))}
    with tempfile.TemporaryDirectory() as cache:
        for name, variant in (("onnx optimised", "optimized"), ("onnx int8", "int8"), ("onnx int8-all", "int8-all")):
            start = time.perf_counter()
            folder, _ = cached_export(path, variant, cache_dir=cache)
            export_seconds[name] = time.perf_counter() - start
            sizes[name] = (folder / "model.onnx").stat().st_size
            encoder = OnnxEncoder(folder, threads=args.threads)
            backends[name] = lambda s, e=encoder: e.encode(s, batch_size=args.batch_size)
        for encode in backends.values():  # warm-up: first-call allocations, tokenizer caches
            encode(sts[:64])
        best = {(name, w): float("inf") for name in backends for w in ("sts", "candidates")}
        scores = {}
        for _ in range(args.rounds):
            for name, encode in backends.items():
                start = time.perf_counter()
                emb = encode(sts)
                best[(name, "sts")] = min(best[(name, "sts")], time.perf_counter() - start)
                scores[name] = spearman(emb[: len(pairs)], emb[len(pairs):], [p.score for p in pairs])
                start = time.perf_counter()
                encode(candidates)
                best[(name, "candidates")] = min(best[(name, "candidates")], time.perf_counter() - start)

    print(f"model {args.model}; {len(sts)} STS-B test sentences, {len(candidates)} candidate sentences; threads "
          f"{args.threads}; batch {args.batch_size}; best of {args.rounds} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    print("| backend | STS-B sent/s | x torch | candidates sent/s | x torch | STS-B test Spearman | vs torch "
          "| model MB | export s |")
    print("|---|---|---|---|---|---|---|---|---|")
    base_sts, base_cand = best[("pytorch fp32", "sts")], best[("pytorch fp32", "candidates")]
    for name in backends:
        sts_s, cand_s = best[(name, "sts")], best[(name, "candidates")]
        print(f"| {name} | {len(sts) / sts_s:,.0f} | {base_sts / sts_s:.2f} | {len(candidates) / cand_s:,.0f} | "
              f"{base_cand / cand_s:.2f} | {scores[name]:.2f} | {scores[name] - scores['pytorch fp32']:+.2f} | "
              f"{sizes[name] / 1e6:.0f} | {export_seconds[name]:.1f} |")
    for name in list(backends)[1:]:
        speed = min(base_sts / best[(name, "sts")], base_cand / best[(name, "candidates")])
        equal = abs(scores[name] - scores["pytorch fp32"]) <= 0.1
        print(f"{name}: >= {speed:.2f}x on both workloads, Spearman {'within' if equal else 'NOT within'} 0.1 "
              f"({'meets' if speed >= 2 and equal else 'misses'} the goal >= 2x at equal quality)")


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) or sum(
        f.stat().st_size for f in folder.glob("pytorch_model.bin"))


if __name__ == "__main__":
    main()
