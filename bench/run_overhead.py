"""The cost of the platform: `paperline run` against the bare train + evaluate work, and an unchanged rerun.

Three timings of whole commands (each a new process, as a user runs them), in one workspace, one data version:
- bare: a script that loads the config and data and calls the project's `train` and `evaluate`, nothing else;
- `paperline run` with the same config and a fresh cache key: resolve data (DVC), data gate (GX), train,
  evaluate, MLflow tracking, model logging, registration and the promotion policy, under Prefect;
- the same `paperline run` again, unchanged: everything but the bookkeeping comes from the cache.
The workspace's Prefect server is started (and timed) first; a warm-up run of the smoke config creates the
MLflow database and gates this data version once, as any first run in a workspace does.

Run:  .venv/bin/python bench/run_overhead.py [--config default] [--project sbert_sts]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]

BARE = """
import sys
from pathlib import Path
from paperline.data.datasets import dataset_ref, resolve_data_version
from paperline.project.interface import ProjectData, RunContext
from paperline.project.discovery import get_project
project = get_project(Path("projects"), sys.argv[1])
cfg = project.load_config(sys.argv[2], sys.argv[4:])
version = resolve_data_version(Path("."), pull=False)
data = ProjectData({n: dataset_ref(version, n, u.kind) for n, u in cfg.data.items()})
ctx = RunContext(workdir=Path(sys.argv[3]), progress=False)
model = project.method().train(cfg, data, ctx)
print(project.method().evaluate(model, cfg, data, ctx).metrics)
"""


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(args[:4])} failed:\n{result.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="sbert_sts")
    parser.add_argument("--config", default="default")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from paperline.ops.services.prefect_server import ensure_local_server, stop_local_server

    seed = str(int(time.time()) % 100_000)  # a cache key no earlier run of this workspace has
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "workspace"
        env = {**os.environ, "PAPERLINE_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1",
               "PAPERLINE_PREFECT_PORT": "4291", "TRANSFORMERS_VERBOSITY": "error"}
        for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PAPERLINE_STORE_URL"):
            env.pop(key, None)
        started = time.perf_counter()
        ensure_local_server(workspace / "prefect", announce=lambda _: None)
        server = time.perf_counter() - started
        run = [str(BIN / "paperline"), "run", args.project, "--config", args.config]
        try:
            # The smoke config reads the same splits: it creates the MLflow database and gates this data version.
            warmup = timed([*run[:3], "--config", "smoke", f"seed={seed}1"], env)
            bare = timed([sys.executable, "-c", BARE, args.project, args.config, str(Path(tmp) / "bare"),
                          f"seed={seed}2"], env)
            first = timed([*run, f"seed={seed}2"], env)
            rerun = timed([*run, f"seed={seed}2"], env)
        finally:
            stop_local_server(workspace / "prefect")
    print(f"{args.project} --config {args.config}, CPU ({os.cpu_count()} cores); wall seconds of whole commands")
    rows = [
        ("local Prefect server start (once per workspace)", server, ""),
        ("warm-up: first run in a new workspace (smoke config)", warmup, ""),
        ("bare train + evaluate", bare, ""),
        ("paperline run (new cache key)", first, f"overhead {first - bare:+.1f} s (goal <= 15 s)"),
        ("paperline run, unchanged rerun (cached)", rerun, f"{100 * rerun / first:.1f}% of the run (goal <= 10%)"),
    ]
    for name, seconds, note in rows:
        print(f"{name:<50} {seconds:7.1f}  {note}")


if __name__ == "__main__":
    main()
