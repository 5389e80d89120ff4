"""The data gate on the real captioned_images set: time and peak memory, all three splits (9,554 pictures).

The question: does the picture part of the gate (open every PNG, check path, size, mode and blankness, and take
its perceptual hash; `derive` in paperline/data/kinds/captioned_images.py) stay small beside a run, and what
does it cost against the loop a user would write by hand (Pillow open + load of each file, one thread, no
checks)? Rows:

- `gate`: what `paperline data validate` and a run do for the set: read the three TSVs, derive the picture
  columns, run every GX expectation (56), build the result with its sample thumbnails;
- `gate, 1 thread`: the same with the thread pool cut to one thread (what the pool buys);
- `derive only`: the picture work alone (default threads), no GX;
- `Pillow open+load loop`: the hand-written baseline: decodes every file, checks and hashes nothing.

Each row runs in a fresh Python process (so peak memory is its own, and no file-cache or import advantage
carries over except the OS page cache, warm for every row after the first round); time is the best of
`--rounds` interleaved rounds, peak memory the process's peak resident set (ru_maxrss) and its growth over
the same process right after its imports.

Run (repo root, after `paperline data pull`):
    OMP_NUM_THREADS=1 .venv/bin/python bench/image_gate.py              # 3 rounds
    OMP_NUM_THREADS=1 .venv/bin/python bench/image_gate.py --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "data" / "captioned_images"
SPLITS = ("train", "dev", "test")
ROWS = {
    "gate": "gate (read + derive + 56 GX expectations)",
    "gate_1_thread": "gate, 1 thread",
    "derive": "derive only (checks + phash)",
    "pillow_loop": "Pillow open+load loop (baseline)",
}


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(row: str) -> dict:
    """One row in this process: import, note the peak RSS, time the work, note the peak RSS again."""
    import paperline.data.kinds.captioned_images as kind_file
    from paperline.data.quality import _import_gx, gate_splits, read_split_file

    _import_gx()
    from PIL import Image

    if row == "gate_1_thread":
        kind_file._workers = lambda: 1  # the pool's size, nothing else changed
    after_imports = _rss_mb()
    started = time.perf_counter()
    pictures = 0
    if row in ("gate", "gate_1_thread"):
        frames = {split: read_split_file(FOLDER / f"{split}.tsv", "captioned_images", split)[0] for split in SPLITS}
        result = gate_splits("captioned_images", "captioned_images", frames, folder=FOLDER)
        assert result.passed, result.summary_lines()
        pictures = sum(result.split_rows.values())
    elif row == "derive":
        for split in SPLITS:
            frame = read_split_file(FOLDER / f"{split}.tsv", "captioned_images", split)[0]
            pictures += len(kind_file.derive(frame, FOLDER))
    else:
        for split in SPLITS:
            frame = read_split_file(FOLDER / f"{split}.tsv", "captioned_images", split)[0]
            for image in frame["image"]:
                with Image.open(FOLDER / image) as picture:
                    picture.load()
                pictures += 1
    seconds = time.perf_counter() - started
    return {"row": row, "seconds": seconds, "pictures": pictures, "peak_mb": _rss_mb(), "imports_mb": after_imports}


def run_child(row: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", row], capture_output=True, text=True, check=True,
                          cwd=ROOT, env={**os.environ, "GX_ANALYTICS_ENABLED": "false"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=list(ROWS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    if not (FOLDER / "images").is_dir():
        sys.exit(f"{FOLDER / 'images'} does not exist; run `paperline data pull` first")
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for row in ROWS:  # interleaved: load from other processes hits every row alike
            found = run_child(row)
            kept = best.get(row)
            if kept is None or found["seconds"] < kept["seconds"]:
                best[row] = found | {"peak_mb": max(found["peak_mb"], (kept or found)["peak_mb"])}
    print(_header(args.rounds))
    print("| what | pictures | wall s (best of rounds) | ms / picture | peak RSS MB | growth over imports MB |")
    print("|---|---|---|---|---|---|")
    for row, label in ROWS.items():
        r = best[row]
        print(f"| {label} | {r['pictures']:,} | {r['seconds']:.2f} | {1000 * r['seconds'] / r['pictures']:.3f} | "
              f"{r['peak_mb']:.0f} | {r['peak_mb'] - r['imports_mb']:.0f} |")


def _header(rounds: int) -> str:
    from importlib.metadata import version

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    libraries = ", ".join(f"{name} {version(name)}" for name in ("pillow", "imagehash", "great_expectations"))
    return (f"# Data gate on captioned_images (bench/image_gate.py)\n\n"
            f"machine: {cores} CPU cores, {platform.system()} {platform.machine()}, Python "
            f"{platform.python_version()}; {libraries}; load average at the end {load:.2f}; {rounds} rounds\n")


if __name__ == "__main__":
    main()
