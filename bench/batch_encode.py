"""Batch re-embedding of a corpus on a CPU: sentence-transformers' `encode` (torch) vs paperline's fast paths.

The workload: the WordNet glosses of `data/definitions` (train, dev, test in that order, every row, repeats
included: the first `--limit`, default all ~207k), as a corpus re-embedding sees them, all-MiniLM-L6-v2. Rows
(`--contenders`; by default all of them):

    torch       sentence-transformers' `encode`, fp32, batch `--torch-batch-size` (the baseline, "x torch")
    torch-bf16  the same with the weights in bfloat16 (a reference: what torch alone gets from bf16)
    ort-chars   paperline.ml.fast_encode `optimized` on ONNX Runtime, batches by character length (the order
                sentence-transformers uses, and fast_encode used before token-length batches)
    ort         the same, batches by token length (fast_encode's order now)
    ort-int8    `int8` (dynamic int8, MatMul weights) on ONNX Runtime, character order (as it was measured)
    ov-f32      `optimized` on OpenVINO, precision f32
    ov          `optimized` on OpenVINO at its default precision (bf16 on CPUs with native bf16, else f32)
    ov-int8s    `int8-static` (NNCF post-training int8, calibrated on `--calibration` sentences: half glosses,
                half STS-B train sentences, seeded) on OpenVINO at its default precision
    ov-dedupe   `ov` with `encode(..., dedupe=True)`: each distinct gloss once (same input, same output)

Each contender runs in its own child process (multiprocessing, spawn), one after another, and the rounds are
interleaved (every contender, then again), so load from other processes hits every row alike; sent/s is the
best round's. A child loads its model (timed apart as "load s"), warms up on 256 glosses, encodes the whole list
(timed), reads its own peak resident memory (VmHWM, /proc/self/status: the model, the runtime, the texts and
the vectors), then, in the first round only, measures quality (cosine to the torch embeddings on `--sample`
evenly spaced rows, STS-B test Spearman x100 of its own embeddings) and how long tokenising the list alone
takes (for torch: its tokenizer on the same character-sorted batches). Equal quality, the goal's bar: cosine
>= 0.999 to torch on every sampled row for fp32 and bf16 rows, STS-B test within 0.1 of torch for int8 rows.
The ONNX exports are made first (cached, `paperline.ml.fast_encode.cached_export`), timed apart.

Run (repo root, after `paperline data pull`; ov rows need `openvino`, ov-int8s `nncf` too):
    HF_HUB_OFFLINE=1 .venv/bin/python bench/batch_encode.py --limit 20000              # ~10 min on 2 cores
    HF_HUB_OFFLINE=1 .venv/bin/python bench/batch_encode.py                            # all ~207k rows: long
    HF_HUB_OFFLINE=1 .venv/bin/python bench/batch_encode.py --limit 5000 --rounds 1 --contenders torch,ov
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "batch_encode.md"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# name: (kind, export variant, backend, precision, batch order, dedupe, label); None: the default
CONTENDERS = {
    "torch": ("torch", None, None, "f32", None, False, "sentence-transformers encode, torch fp32"),
    "torch-bf16": ("torch", None, None, "bf16", None, False, "sentence-transformers encode, torch bf16 weights"),
    "ort-chars": ("paperline", "optimized", "onnxruntime", None, "chars", False,
                  "paperline optimized, ONNX Runtime, character order"),
    "ort": ("paperline", "optimized", "onnxruntime", None, None, False, "paperline optimized, ONNX Runtime"),
    "ort-int8": ("paperline", "int8", "onnxruntime", None, None, False,
                 "paperline int8 (dynamic), ONNX Runtime, character order"),
    "ov-f32": ("paperline", "optimized", "openvino", "f32", None, False, "paperline optimized, OpenVINO f32"),
    "ov": ("paperline", "optimized", "openvino", None, None, False,
           "paperline optimized, OpenVINO default precision"),
    "ov-int8s": ("paperline", "int8-static", "openvino", None, None, False,
                 "paperline int8-static, OpenVINO"),
    "ov-dedupe": ("paperline", "optimized", "openvino", None, None, True,
                  "paperline optimized, OpenVINO, dedupe"),
}
DEFAULT = tuple(CONTENDERS)


def read_tsv(path: Path):
    import pandas as pd

    return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)


def glosses(limit: int | None) -> list[str]:
    rows = []
    for split in ("train", "dev", "test"):
        rows += [str(s) for s in read_tsv(ROOT / "data" / "definitions" / f"{split}.tsv")["definition"]]
    return rows[:limit]


def stsb(split: str = "test"):
    frame = read_tsv(ROOT / "data" / "stsb" / f"{split}.tsv")
    return [str(s) for s in frame["sentence1"]], [str(s) for s in frame["sentence2"]], frame["score"].astype(float)


def spearman(first, second, gold) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return 100.0 * float(spearmanr(gold, cos).statistic)


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark (VmHWM), else getrusage's ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(name: str, settings: dict, queue) -> None:
    """One contender in a fresh process: load, warm up, encode the corpus (timed), peak memory, then quality."""
    try:
        queue.put(_child(name, settings))
    except BaseException as exc:  # the parent reports it and goes on with the other rows
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _child(name: str, settings: dict) -> dict:
    import numpy as np

    kind, variant, backend, precision, order, dedupe, _ = CONTENDERS[name]
    texts = glosses(settings["limit"])
    threads, batch = settings["threads"], settings["batch_size"]
    start = time.perf_counter()
    if kind == "torch":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if precision == "bf16" else {}
        model = SentenceTransformer(settings["model_path"], device="cpu", **kwargs)
        batch = settings["torch_batch_size"]

        def encode(sentences):
            return np.asarray(model.encode(sentences, batch_size=batch, convert_to_numpy=True), dtype=np.float32)

        def tokenize(sentences):
            order = np.argsort([-len(s) for s in sentences], kind="stable")
            for i in range(0, len(sentences), batch):
                model.preprocess([sentences[j] for j in order[i : i + batch]])
        used = precision
    else:
        from paperline.ml.fast_encode import OnnxEncoder

        encoder = OnnxEncoder(settings["exports"][variant], threads=threads, backend=backend, precision=precision,
                              order=order)

        def encode(sentences):
            return encoder.encode(sentences, batch_size=batch, dedupe=dedupe)

        def tokenize(sentences):
            encoder._tokenize(sentences)
        used = encoder.precision
    load = time.perf_counter() - start
    encode(texts[:256])
    start = time.perf_counter()
    vectors = encode(texts)
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "load": load, "peak_mb": peak_rss_mb(), "precision": used,
              "rows": len(texts), "torch_imported": "torch" in sys.modules}
    if settings["quality"]:
        result["sample"] = vectors[settings["sample"]]
        first, second, gold = stsb()
        result["spearman"] = spearman(encode(first), encode(second), gold)
        start = time.perf_counter()
        tokenize(texts)
        result["tokenize"] = time.perf_counter() - start
    return result


def run_child(ctx, name: str, settings: dict) -> dict:
    queue = ctx.Queue()
    process = ctx.Process(target=child, args=(name, settings, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def calibration_sentences(count: int) -> list[str]:
    """`count` sentences, seeded: half distinct train glosses, half STS-B train sentences (never test)."""
    import numpy as np

    rng = np.random.default_rng(0)
    pool = sorted(set(read_tsv(ROOT / "data" / "definitions" / "train.tsv")["definition"].astype(str)))
    first, second, _ = stsb("train")
    sentences = sorted(set(first + second))
    return ([pool[i] for i in rng.choice(len(pool), count // 2, replace=False)]
            + [sentences[i] for i in rng.choice(len(sentences), count - count // 2, replace=False)])


def corpus_shape(texts: list[str], model_path: str, batch: int) -> str:
    """Token lengths and padded/real tokens at `batch` for the character order and the token order."""
    import numpy as np
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=256,
                                                       return_attention_mask=False)["input_ids"]])

    def padded(order):
        return sum(int(lengths[order[i : i + batch]].max()) * len(order[i : i + batch])
                   for i in range(0, len(order), batch)) / lengths.sum()

    chars = padded(np.argsort([-len(s) for s in texts], kind="stable"))
    tokens = padded(np.argsort(-lengths, kind="stable"))
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
    return (f"tokens per gloss (with [CLS]/[SEP]): mean {lengths.mean():.1f}, median {p50:.0f}, p90 {p90:.0f}, "
            f"p99 {p99:.0f}, max {lengths.max()}; padded/real tokens at batch {batch}: {chars:.3f} in character "
            f"order (sentence-transformers), {tokens:.3f} in token order (paperline)")


def machine() -> str:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{os.cpu_count()} CPU cores ({model}; {', '.join(wanted) or 'no AVX-512'}), {platform.system()}"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("torch", "sentence-transformers", "transformers", "onnxruntime", "openvino", "nncf"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return ", ".join(found)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None, help="the first N corpus rows (default: all)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every contender alike")
    p.add_argument("--batch-size", type=int, default=64, help="paperline rows' batch size")
    p.add_argument("--torch-batch-size", type=int, default=None, help="the torch rows' (default: --batch-size)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sample", type=int, default=2000, help="rows compared with torch by cosine")
    p.add_argument("--calibration", type=int, default=300, help="calibration sentences for int8-static")
    p.add_argument("--contenders", default=",".join(DEFAULT), help=f"comma-separated, of {', '.join(CONTENDERS)}")
    p.add_argument("--cache", default=None, help="ONNX export cache (default: paperline's, .paperline/onnx)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or "torch" not in names:
        p.error(f"unknown contenders {unknown}" if unknown else "the torch row is the baseline: keep it")

    import numpy as np

    from paperline.ml.fast_encode import cached_export
    from paperline.ml.models import resolve_model_path

    load_start = os.getloadavg()[0]
    model_path = str(resolve_model_path(MODEL))
    texts = glosses(args.limit)
    shape = corpus_shape(texts, model_path, args.batch_size)
    exports, export_seconds = {}, {}
    for variant in sorted({CONTENDERS[n][1] for n in names if CONTENDERS[n][1]}):
        start = time.perf_counter()
        calibration = calibration_sentences(args.calibration) if variant == "int8-static" else None
        exports[variant] = str(cached_export(model_path, variant, cache_dir=args.cache, calibration=calibration)[0])
        export_seconds[variant] = time.perf_counter() - start
    settings = {"limit": args.limit, "threads": args.threads, "batch_size": args.batch_size,
                "torch_batch_size": args.torch_batch_size or args.batch_size, "model_path": model_path,
                "exports": exports, "sample": np.linspace(0, len(texts) - 1, min(args.sample, len(texts))).astype(int)}
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for name in names:
            if "error" in results.get(name, {}):
                continue
            got = run_child(ctx, name, {**settings, "quality": round_ == 0})
            print(f"round {round_ + 1} {name}: " + (got["error"] if "error" in got else
                  f"{got['rows'] / got['seconds']:,.0f} sent/s, peak {got['peak_mb']:,.0f} MB, "
                  f"load average {os.getloadavg()[0]:.2f}"), flush=True)
            if "error" in got or name not in results:
                results[name] = got
            else:
                kept = results[name]
                kept["seconds"] = min(kept["seconds"], got["seconds"])
                kept["peak_mb"] = max(kept["peak_mb"], got["peak_mb"])
    load_end = os.getloadavg()[0]
    write(args, names, results, shape, exports, export_seconds, len(texts), len(set(texts)), load_start, load_end)


def write(args, names, results, shape, exports, export_seconds, rows, distinct, load_start, load_end) -> None:
    import numpy as np

    base = results["torch"]
    reference = base.get("sample")
    lines = ["| row | what | precision | sent/s | x torch | peak RSS MB | load s | tokenize s (share) | cosine to "
             "torch, min / mean | STS-B test Spearman | vs torch | equal quality | >= 2x at equal quality |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        got = results[name]
        label = CONTENDERS[name][7]
        if "error" in got:
            lines.append(f"| {name} | {label} | - | failed: {got['error'][:150]} |" + " - |" * 9)
            continue
        ratio = base["seconds"] / got["seconds"]
        a, b = np.asarray(got["sample"], np.float64), np.asarray(reference, np.float64)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        delta = got["spearman"] - base["spearman"]
        int8 = "int8" in (CONTENDERS[name][1] or "")
        equal = abs(delta) <= 0.1 if int8 else cos.min() >= 0.999
        bar = "abs(delta) <= 0.1" if int8 else "cos >= 0.999"
        goal = "-" if name == "torch" else "yes" if equal and ratio >= 2 else "no"
        lines.append(
            f"| {name} | {label} | {got['precision']} | {rows / got['seconds']:,.0f} | {ratio:.2f} | "
            f"{got['peak_mb']:,.0f} | {got['load']:.1f} | {got['tokenize']:.1f} "
            f"({got['tokenize'] / got['seconds']:.0%}) | {cos.min():.5f} / {cos.mean():.5f} | "
            f"{got['spearman']:.2f} | {delta:+.2f} | {'yes' if equal else 'no'} ({bar}) | {goal} |")
    command = "HF_HUB_OFFLINE=1 .venv/bin/python bench/batch_encode.py " + " ".join(sys.argv[1:])
    header = [
        "# Batch re-embedding on a CPU: sentence-transformers encode vs paperline (bench/batch_encode.py)", "",
        f"command: `{command.strip()}`  ",
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {machine()}; load average "
        f"{load_start:.2f} at the start, {load_end:.2f} at the end  ",
        f"versions: {versions()}, Python {platform.python_version()}  ",
        f"corpus: WordNet glosses (data/definitions train, dev, test), {rows:,} rows ({distinct:,} distinct), "
        f"{MODEL}; {shape}  ",
        f"settings: {args.threads} threads for every row; batch {args.batch_size} (torch rows "
        f"{args.torch_batch_size or args.batch_size}); best of {args.rounds} interleaved rounds, each row in its own "
        f"spawned process; cosine on {min(args.sample, rows):,} evenly spaced rows; exports: "
        + ", ".join(f"{v} {export_seconds[v]:.1f} s" for v in exports) + " (cached after the first run)", "",
    ]
    text = "\n".join(header + lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
