"""Speed of the 2D Matryoshka grid and of an exported budget, against what a user would do otherwise.

Compares, on the STS-B test sentences and in one run (same process, same threads, repeats interleaved and the
best kept, so a busy machine hurts every row alike):
- `full encode`: `SentenceTransformer.encode` of the test set with the full model (the unit of cost);
- `grid (one pass)`: paperline.ml.layer_grid.grid_spearman, every layer x 5 dims from one forward pass;
- `grid (re-encode)`: what one would write without it, a truncated model encoded once per layer count;
- `export l3-d128`: the folder paperline.ml.export.export_truncated writes, loaded with plain SentenceTransformer.

Targets (issue 3): grid <= 1.3x one full encode; exported l3-d128 >= 1.8x faster than the full model.

Run:  HF_HUB_OFFLINE=1 .venv/bin/python bench/matryoshka_grid_speed.py [--model PATH] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="hub id or folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from paperline.data.datasets import DatasetRef, read_split
    from paperline.ml.export import export_truncated, truncate_layers
    from paperline.ml.layer_grid import grid_spearman
    from paperline.ml.models import resolve_model_path

    torch.set_num_threads(args.threads)
    pairs = read_split(DatasetRef("stsb", "scored_pairs", ROOT / "data" / "stsb", "-"), "test")
    sentences = list(dict.fromkeys([p.sentence1 for p in pairs] + [p.sentence2 for p in pairs]))
    path = resolve_model_path(args.model)
    model = SentenceTransformer(path, device="cpu")
    n = model[0].auto_model.config.num_hidden_layers
    dims = [32, 64, 128, 256, 384]
    truncated = {}
    for layers in range(1, n + 1):
        truncated[layers] = copy.deepcopy(model)
        truncate_layers(truncated[layers], layers)
    with tempfile.TemporaryDirectory() as tmp:
        exported = SentenceTransformer(str(export_truncated(path, 3, 128, Path(tmp) / "l3-d128")), device="cpu")
        cells = {}

        def full():
            model.encode(sentences, batch_size=args.batch_size)

        def grid():
            cells["grid"] = grid_spearman(model, pairs, dims=dims, batch_size=args.batch_size)

        def reencode():
            for layers, m in truncated.items():
                m.encode(sentences, batch_size=args.batch_size)

        def export():
            exported.encode(sentences, batch_size=args.batch_size)

        rows = {"full encode": full, "grid (one pass)": grid, "grid (re-encode)": reencode, "export l3-d128": export}
        best = {name: float("inf") for name in rows}
        full()  # warm-up: first-call allocations and tokenizer caches
        for _ in range(args.repeats):
            for name, fn in rows.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
        from paperline.ml.evaluation import sts_spearman

        export_score = sts_spearman(exported, pairs)

    unit = best["full encode"]
    print(f"STS-B test: {len(pairs)} pairs, {len(sentences)} unique sentences; model {args.model}; "
          f"torch threads {args.threads}; best of {args.repeats}")
    print(f"{'what':<20} {'seconds':>8} {'x full encode':>14}  target")
    targets = {"grid (one pass)": "<= 1.30x", "export l3-d128": "speed-up >= 1.80x"}
    for name, seconds in best.items():
        ratio = seconds / unit
        print(f"{name:<20} {seconds:8.2f} {ratio:14.2f}  {targets.get(name, '')}")
    grid_ratio = best["grid (one pass)"] / unit
    speedup = unit / best["export l3-d128"]
    print(f"\ngrid cost: {grid_ratio:.2f}x one full encode ({'meets' if grid_ratio <= 1.3 else 'MISSES'} <= 1.3x)")
    print(f"exported l3-d128 speed-up: {speedup:.2f}x ({'meets' if speedup >= 1.8 else 'MISSES'} >= 1.8x)")
    print(f"exported l3-d128 Spearman {export_score:.2f} vs grid cell {cells['grid'][(3, 128)]:.2f}")


if __name__ == "__main__":
    main()
