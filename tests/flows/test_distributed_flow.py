"""`paperline run` with `nproc_per_node=2`: the train step under a real 2-process torchrun (gloo on the CPU).

The 2-process run and the single-process smoke run see the same effective batch (4 per process x 2 processes
vs 8 in one), 32 of the 48 smoke rows (every rank orders them with the same seed and takes every other batch of
4), and the same linear schedule over 4 steps. They still differ: CoSENT ranks every pair of a batch against every other, so two batches of 4 give 2 x 6 = 12
ranking pairs where one batch of 8 gives 28, and DDP averages the two ranks' gradients instead of taking one
gradient over 8 rows (the reported train loss differs for the same reason: 3.72 vs 1.48, so it is not compared).

Tolerance: 1.5 Spearman points (x100, 40 STS-B rows per split). Measured on this 2-core machine (CPU, gloo,
OMP_NUM_THREADS=1), |1-process - 2-process| for seeds 0, 1, 2: dev 0.36, 0.40, 0.50; test 0.19, 0.64, 0.27.
The test runs seed 0, which is deterministic here (94.46 vs 94.82 dev, 93.08 vs 92.89 test, the same in the
flow and in a direct run); 1.5 is over twice the largest difference seen on any seed, room for other CPUs and
thread counts summing in another order. What it cannot show: 4 smoke steps move the model only 0.15-0.3 points
from the untrained baseline, so the steps, effective batch and schedule are asserted exactly beside it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from repo_copy import BIN

from paperline.ml.checkpoints import MANIFEST
from paperline.ops.store.audit import AuditStore

MODEL = "sbert_sts-smoke"
SPEARMAN = ("stsb_dev_spearman", "stsb_test_spearman")
TOLERANCE = 1.5  # Spearman points (x100): see the module docstring for what was measured


def _runs(ws):
    client = ws.client()
    experiment = client.get_experiment_by_name("sbert_sts")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_a_two_process_run_registers_a_model_that_matches_the_single_process_run(shared_workspace):
    ws = shared_workspace
    single = ws.paperline("run", "sbert_sts", "--config", "smoke")
    assert single.returncode == 0, single.stderr[-3000:]
    double = ws.paperline("run", "sbert_sts", "--config", "smoke", "train.stages.0.nproc_per_node=2",
                          "train.stages.0.batch_size=4")
    assert double.returncode == 0, double.stderr[-4000:]
    assert "registered" in double.stdout, double.stdout

    one, two = _runs(ws)[-2:]
    assert two.data.params["train.stages.0.nproc_per_node"] == "2"
    assert (one.data.tags["train.sts_world_size"], two.data.tags["train.sts_world_size"]) == ("1", "2")
    # the same effective batch and learning-rate schedule, reported by both runs
    assert one.data.tags["train.sts_effective_batch_size"] == two.data.tags["train.sts_effective_batch_size"] == "8"
    assert one.data.tags["train.sts_lr_schedule"] == two.data.tags["train.sts_lr_schedule"] == "linear, 1 warm-up steps of 4"
    assert two.data.metrics["sts_global_step"] == one.data.metrics["sts_global_step"] == 4
    for name in ("baseline_stsb_dev_spearman", "baseline_stsb_test_spearman"):  # the same untrained model
        assert two.data.metrics[name] == one.data.metrics[name]
    differences = {name: abs(two.data.metrics[name] - one.data.metrics[name]) for name in SPEARMAN}
    print("1-process vs 2-process:", {n: (one.data.metrics[n], two.data.metrics[n]) for n in SPEARMAN})
    assert all(d <= TOLERANCE for d in differences.values()), differences

    client = ws.client()
    version = client.get_model_version_by_alias(MODEL, "challenger")
    assert version.run_id == two.info.run_id
    import mlflow

    mlflow.set_tracking_uri(ws.tracking_uri)
    model = mlflow.sentence_transformers.load_model(f"models:/{MODEL}/{version.version}")
    assert model.encode(["a plane is taking off"]).shape == (1, 384)


def test_a_method_that_is_not_rank_safe_refuses_two_processes_in_one_line(shared_workspace):
    result = shared_workspace.paperline("run", "cross_encoder_sts", "--config", "smoke", "train.nproc_per_node=2")
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("paperline: error:")]
    assert line.startswith("paperline: error: project 'cross_encoder_sts' cannot train with nproc_per_node=2")
    assert "Traceback" not in result.stderr


# ---- a rank that dies mid-training -----------------------------------------------------------------------------

DIED = re.compile(r"^paperline: error: rank 1 of 2 died \(signal SIGKILL\) at step (\d+); the checkpoint of step "
                  r"(\d+) is kept: rerun the same command to resume on every rank$")
RESUMED = re.compile(r"^paperline: rank (\d) of 2 resumed from step (\d+)$", re.MULTILINE)
# Seconds from the kill to the run's exit. Measured 5.8 s and 12.4 s on this loaded 2-core machine (torchrun notices within its
# 1 s monitor interval, stops rank 0, and the flow closes the MLflow run and the lineage); today's code took 4.3 s
# too, but ended with torchrun's failure table instead of a line. 60 s leaves room for torchrun's 30 s SIGTERM grace.
END_BOUND = 60


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children of children: paperline -> torchrun -> the ranks)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rank_pid(parent: int, rank: int) -> int | None:
    """The torchrun worker of `rank` below `parent`: a distributed_job process whose environment has RANK."""
    for pid in _descendants(parent):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"paperline.project.distributed_job" in cmdline and f"RANK={rank}".encode() in environ:
            return pid
    return None


def test_a_rank_killed_mid_training_ends_the_run_in_one_line_and_the_rerun_resumes_on_every_rank(workspace):
    command = [str(BIN / "paperline"), "run", "sbert_sts", "--config", "smoke", "train.stages.0.nproc_per_node=2",
               "train.stages.0.batch_size=4", "train.stages.0.max_steps=24", "train.stages.0.checkpoint_every=4"]
    env = {**workspace.env, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=workspace.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        runs = workspace.root / ".paperline" / "runs"
        deadline = time.monotonic() + 400
        while not list(runs.glob(f"**/checkpoint-*/{MANIFEST}")):  # a complete checkpoint to resume from
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 400 s"
            time.sleep(0.2)
        victim = _rank_pid(process.pid, 1)
        assert victim is not None, "no rank-1 worker below the run"
        os.kill(victim, signal.SIGKILL)  # as the OOM killer would
        killed = time.monotonic()
        try:
            _, stderr = process.communicate(timeout=END_BOUND)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run still runs {END_BOUND} s after rank 1 was killed")
        ended = time.monotonic() - killed
    finally:
        if process.poll() is None:
            for pid in _descendants(process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.kill()
            process.wait(timeout=30)
    print(f"the run ended {ended:.1f} s after rank 1 was killed")
    assert process.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("paperline: error:")]
    assert len(errors) == 1 and DIED.match(errors[0]), stderr[-3000:]
    died_at, kept = map(int, DIED.match(errors[0]).groups())
    print(errors[0])
    assert 0 < kept <= died_at
    assert "Traceback" not in stderr, stderr[-3000:]
    assert workspace.client().search_registered_models() == []
    (run,) = workspace.client().search_runs([workspace.client().get_experiment_by_name("sbert_sts").experiment_id])
    assert run.info.status == "FAILED"
    assert [r.status for r in AuditStore(workspace.store_url).lineage(project="sbert_sts")] == ["failed"]

    again = subprocess.run(command, cwd=workspace.root, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = dict(RESUMED.findall(again.stderr))
    assert resumed == {"0": str(kept), "1": str(kept)}, again.stderr[-3000:]  # every rank, the same step
    assert "registered" in again.stdout
