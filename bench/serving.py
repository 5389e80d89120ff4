"""`mlflow models serve` of a sentence-transformers model: PyTorch (the sentence_transformers flavor, what a
registered champion serves) vs the ONNX Runtime pyfunc of `paperline export-onnx`, side by side.

A throwaway MLflow store (SQLite in a temporary folder) gets the model registered as `bench@champion` in the
sentence_transformers flavor, as `paperline run` logs a champion, and `paperline.ops.registry.onnx_export` exports it as
`bench_onnx@champion` (fp32 optimised; `--int8` for the quantised one). Both are served at once on 127.0.0.1,
each on a free port, `--env-manager local`, one worker each. The load loop is bounded: `--requests` requests per
server per round (each `--batch` STS-B test sentences, one client, sequential), rounds alternating between the
two servers, and a time cap (`--max-seconds`) per round; a failed or timed-out request counts as an error. The
idle server takes no CPU while the other is measured. Requests/s is completed requests over the rounds' wall
time; p50/p95 are per-request latencies over all rounds.

Run (repo root, after `paperline data pull`):
    HF_HUB_OFFLINE=1 .venv/bin/python bench/serving.py                        # 200 requests x 2 rounds, batch 1
    HF_HUB_OFFLINE=1 .venv/bin/python bench/serving.py --requests 20 --rounds 1  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(model_uri: str, tracking_uri: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # the server runs `uvicorn` by name: the venv's bin must be on PATH, as in an activated environment
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(log, "w"),  # noqa: SIM115 (the server's, till it ends)
                              start_new_session=True)
    return server, f"http://127.0.0.1:{port}"


def wait_ready(server: subprocess.Popen, url: str, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            sys.exit(f"serving.py: mlflow models serve exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{url}/ping", timeout=5).close()
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                sys.exit(f"serving.py: {url} did not answer /ping in {timeout:.0f} s")
            time.sleep(1)


def post(url: str, sentences: list[str]) -> list:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"inputs": sentences}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"]


def load_round(url: str, batches: list[list[str]], max_seconds: float) -> tuple[list[float], int, float]:
    """(latencies of the completed requests, errors, wall seconds): stops at the time cap."""
    latencies, errors = [], 0
    begin = time.perf_counter()
    for batch in batches:
        if time.perf_counter() - begin > max_seconds:
            break
        start = time.perf_counter()
        try:
            post(url, batch)
            latencies.append(time.perf_counter() - start)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            errors += 1
    return latencies, errors, time.perf_counter() - begin


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="hub id or model folder")
    p.add_argument("--requests", type=int, default=200, help="requests per server per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=1, help="sentences per request")
    p.add_argument("--max-seconds", type=float, default=120, help="time cap of one server's round")
    p.add_argument("--int8", action="store_true", help="serve the int8 export instead of the fp32 one")
    args = p.parse_args()

    import mlflow
    import numpy as np
    from mlflow import MlflowClient

    from paperline.data.datasets import DatasetRef, read_split
    from paperline.ml.models import load_sentence_transformer
    from paperline.ops.registry.onnx_export import export_registered, min_cosine

    pairs = read_split(DatasetRef("stsb", "scored_pairs", ROOT / "data" / "stsb", "-"), "test")
    sentences = [s for p in pairs for s in (p.sentence1, p.sentence2)]
    n = args.requests * args.batch
    batches = [sentences[i % len(sentences): i % len(sentences) + args.batch] for i in range(0, n, args.batch)]
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        model = load_sentence_transformer(args.model, device="cpu")
        # artifacts in the temporary folder too (the Default experiment's would go to ./mlruns of the checkout)
        experiment = client.create_experiment("bench", artifact_location=f"{tmp}/artifacts")
        with mlflow.start_run(experiment_id=experiment):
            info = mlflow.sentence_transformers.log_model(model, name="bench", input_example=sentences[:2],
                                                          pip_requirements=[])
        version = mlflow.register_model(info.model_uri, "bench")
        client.set_registered_model_alias("bench", "champion", version.version)
        start = time.perf_counter()
        onnx = export_registered(client, "bench@champion", "int8" if args.int8 else "optimized")
        export_s = time.perf_counter() - start
        label = f"onnx {onnx.variant} pyfunc"
        servers = {"pytorch (sentence_transformers flavor)": serve("models:/bench@champion", uri, Path(tmp) / "a.log"),
                   label: serve("models:/bench_onnx@champion", uri, Path(tmp) / "b.log")}
        try:
            for i, (server, url) in enumerate(servers.values()):
                wait_ready(server, url, Path(tmp) / ("a.log" if i == 0 else "b.log"))
            answers = {name: np.asarray(post(url, sentences[:8]), dtype=np.float32)
                       for name, (_, url) in servers.items()}  # also the warm-up request
            agreement = min_cosine(*answers.values())
            for _, url in servers.values():
                for batch in batches[:10]:
                    post(url, batch)
            results = {name: ([], 0, 0.0) for name in servers}
            for _ in range(args.rounds):
                for name, (_, url) in servers.items():
                    latencies, errors, wall = load_round(url, batches, args.max_seconds)
                    before = results[name]
                    results[name] = (before[0] + latencies, before[1] + errors, before[2] + wall)
        finally:
            for server, _ in servers.values():
                try:
                    os.killpg(server.pid, signal.SIGTERM)  # the scoring server runs in worker processes of its own
                except ProcessLookupError:
                    pass
                server.wait(timeout=30)

    print(f"model {args.model}; {args.rounds} rounds x {args.requests} requests of {args.batch} sentence(s) per "
          f"server, one sequential client, cap {args.max_seconds:.0f} s a round; 127.0.0.1, --workers 1; ONNX "
          f"export + check + registration {export_s:.1f} s; load average {os.getloadavg()[0]:.2f} at the end")
    print(f"served embeddings agree: min cosine {agreement:.5f} (PyTorch vs ONNX, 8 sentences)")
    print("| served model | requests | errors | requests/s | x torch | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    rates = {}
    for name, (latencies, errors, wall) in results.items():
        rates[name] = len(latencies) / wall if wall else 0.0
        ordered = sorted(latencies) or [float("nan")]
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        first = next(iter(rates.values()))
        print(f"| {name} | {len(latencies)} | {errors} | {rates[name]:.1f} | {rates[name] / first:.2f} | "
              f"{1000 * statistics.median(ordered):.1f} | {1000 * p95:.1f} |")


if __name__ == "__main__":
    main()
