"""`fit()` under a real 2-process torchrun (torch.distributed with gloo on the CPU), and the launcher around it.

The defects these guard against: every rank removed a half-written `checkpoint-N/` (rank 0 then died with
FileNotFoundError), every rank wrote the loss state, and every rank wrote the model files of a checkpoint (rank 1
after rank 0's manifest, which then read as corrupted). A tiny random BERT keeps each torchrun to seconds; each
process runs with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from paperline.core.config import ConfigError
from paperline.ml.checkpoints import LOSS_STATE, MANIFEST, last_checkpoint
from paperline.project import distributed_job as dj
from paperline.project.interface import PyfuncSpec, TrainedModel


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import tiny_sentence_transformer

    return tiny_sentence_transformer(tmp_path_factory.mktemp("tiny"))


# Each rank: fit a tiny SentenceTransformer with a loss that owns a head (so there is a loss state to write), log
# which rank writes each loss state, and write its own TrainResult.
WORKER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    import safetensors.torch

    _save_file = safetensors.torch.save_file

    def logged_save_file(tensors, filename, *args, **kwargs):
        if str(filename).endswith("loss.safetensors"):
            with open(os.environ["LOSS_STATE_LOG"], "a") as log:
                log.write(f"{os.environ['RANK']} {Path(filename).parent.name}\\n")
        return _save_file(tensors, filename, *args, **kwargs)

    safetensors.torch.save_file = logged_save_file  # before fit imports it

    import shutil

    _rmtree = shutil.rmtree

    def logged_rmtree(path, *args, **kwargs):
        with open(os.environ["LOSS_STATE_LOG"] + ".rmtree", "a") as log:
            log.write(f"{os.environ['RANK']} {Path(path).name}\\n")
        return _rmtree(path, *args, **kwargs)

    shutil.rmtree = logged_rmtree  # who removes checkpoints (the half-written one, the trainer's rotation)

    import torch

    _torch_save = torch.save

    def logged_torch_save(obj, f, *args, **kwargs):
        if str(f).endswith("training_args.bin"):  # one of the model files a checkpoint's save writes
            with open(os.environ["LOSS_STATE_LOG"] + ".model_files", "a") as log:
                log.write(f"{os.environ['RANK']} {Path(f).parent.name}\\n")
        return _torch_save(obj, f, *args, **kwargs)

    torch.save = logged_torch_save

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    from paperline.ml.training import TrainSettings, fit

    out, steps, results = Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    results.mkdir(parents=True, exist_ok=True)
    (results / f"pid{os.environ['RANK']}").write_text(str(os.getpid()))

    class HeadLoss(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.head = model, torch.nn.Linear(64, 1)

        def forward(self, features, labels):
            u, v = (self.model(f)["sentence_embedding"] for f in features)
            return torch.nn.functional.mse_loss(self.head(torch.cat([u, v], -1)).squeeze(-1), labels.float())

    model = SentenceTransformer(sys.argv[1], device="cpu")
    rows = Dataset.from_dict({"sentence1": ["a b c", "d e", "f g h i"] * 40, "sentence2": ["c b a", "e", "i"] * 40,
                              "score": [0.9, 0.5, 0.1] * 40})
    result = fit(model, rows, HeadLoss(model), TrainSettings(output_dir=out, batch_size=2, checkpoint_every=3,
                 max_steps=steps, progress=False, device="cpu"))
    (results / f"rank{os.environ['RANK']}.json").write_text(json.dumps(
        {**result.notes(), **result.metrics(), "rank": os.environ["RANK"]}))
    """
)


def _torchrun(script: Path, tiny_model_dir: Path, out: Path, steps: int, results: Path, log: Path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOSS_STATE_LOG": str(log)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               str(tiny_model_dir), str(out), str(steps), str(results)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_two_rank_run_with_a_half_written_checkpoint_resumes_on_both_ranks(tiny_model_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out, first, second = tmp_path / "ckpt", tmp_path / "first", tmp_path / "second"

    # 1. A long 2-rank run, killed mid-way (SIGKILL to rank 0, as the OOM killer would) once a checkpoint with its
    #    loss state and manifest is complete; torchrun then stops rank 1 and fails.
    job = _torchrun(script, tiny_model_dir, out, 100_000, first, tmp_path / "first.log")
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and not list(out.glob(f"checkpoint-*/{MANIFEST}")):
        assert job.poll() is None, job.communicate()[1][-3000:]
        time.sleep(0.05)
    os.kill(int((first / "pid0").read_text()), signal.SIGKILL)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode != 0, stderr[-2000:]
    for rank in (0, 1):  # no rank lives on, and none finished
        with pytest.raises(ProcessLookupError):
            _wait_gone(int((first / f"pid{rank}").read_text()))
        assert not (first / f"rank{rank}.json").exists()

    # 2. The newest complete checkpoint, and after it a save the kill cut short: weights but no trainer_state.json.
    resume_at = last_checkpoint(out, (LOSS_STATE, MANIFEST), remove_incomplete=False)
    step = int(resume_at.name.split("-")[1])
    newest = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    half = out / f"checkpoint-{newest + 1000}"  # past every step the rerun reaches, so it never saves there
    shutil.copytree(resume_at, half)
    (half / "trainer_state.json").unlink()

    # 3. The rerun: no rank crashes, both resume from that step, and rank 0 alone writes each loss state.
    log = tmp_path / "second.log"
    again = _torchrun(script, tiny_model_dir, out, step + 6, second, log)
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-4000:]
    assert "FileNotFoundError" not in stderr
    results = [json.loads((second / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for result in results:
        assert result["resumed_from_step"] == step and result["global_step"] == step + 6
        assert result["world_size"] == 2 and result["effective_batch_size"] == 4  # 2 per device x 2 x 1
        assert result["lr_schedule"].startswith("linear, ")
    assert not half.exists()
    removals = (tmp_path / "second.log.rmtree").read_text().split("\n")[:-1]
    assert f"0 {half.name}" in removals and all(r.startswith("0 ") for r in removals), removals  # rank 0 alone
    assert all((p / "trainer_state.json").exists() and (p / LOSS_STATE).exists() for p in out.glob("checkpoint-*"))
    writes = log.read_text().split("\n")[:-1]
    assert writes == [f"0 checkpoint-{step + 3}", f"0 checkpoint-{step + 6}"], writes
    # the model files too: rank 1 rewriting them after rank 0's manifest made a sound checkpoint read as corrupted
    model_files = (tmp_path / "second.log.model_files").read_text().split("\n")[:-1]
    assert model_files == writes, model_files


def _wait_gone(pid: int, seconds: float = 30) -> None:
    """Raise ProcessLookupError once `pid` no longer exists (or is a zombie nobody reaps); fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        os.kill(pid, 0)  # ProcessLookupError when gone
        status = Path(f"/proc/{pid}/stat")
        if status.exists() and status.read_text().split(") ")[-1].startswith("Z"):
            raise ProcessLookupError(pid)
        time.sleep(0.1)
    pytest.fail(f"process {pid} still runs {seconds} s after torchrun failed")


# ---- the launcher, with stand-in commands (no torchrun needed) -------------------------------------------------


def test_a_failed_job_is_one_line_with_its_exit_code_and_last_stderr_lines(tmp_path):
    failing = "import sys; sys.stderr.write('step 1\\rstep 2\\nTraceback (most recent call last)\\nValueError: boom\\n'); sys.exit(3)"
    with pytest.raises(dj.DistributedTrainingError, match=r"failed with exit code 3: .*ValueError: boom$") as caught:
        dj.run_command([sys.executable, "-c", failing], "training", stderr=io.StringIO())
    assert "\n" not in str(caught.value)
    ours = "import sys; sys.stderr.write('paperline: error: checkpoint x is corrupted; delete x\\nChildFailedError\\n'); sys.exit(1)"
    with pytest.raises(dj.DistributedTrainingError, match=r"exit code 1: checkpoint x is corrupted; delete x$"):
        dj.run_command([sys.executable, "-c", ours], "training", stderr=io.StringIO())


INTERRUPTED_PARENT = """
import _thread, io, signal, sys, threading, time
from pathlib import Path
from paperline.project import distributed_job as dj

signal.signal(signal.SIGINT, signal.default_int_handler)  # a pytest-xdist worker's children inherit SIGINT ignored

pid_file = Path(sys.argv[1])
sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"

def interrupt_when_started():
    while not pid_file.exists() or not pid_file.read_text():
        time.sleep(0.05)
    _thread.interrupt_main()  # what Ctrl-C, or the CLI's SIGTERM handler, raises in the flow's thread

threading.Thread(target=interrupt_when_started, daemon=True).start()
started = time.monotonic()
try:
    dj.run_command([sys.executable, "-c", sleeper], "training", stderr=io.StringIO(), stop_timeout=10)
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - started:.1f} s")
"""


def test_an_interrupt_stops_the_child_before_it_goes_on(tmp_path):
    # In a process of its own: the interrupt goes to the main thread, which under pytest-xdist is not the test's
    # (and SIGINT is ignored there).
    pid_file = tmp_path / "pid"
    parent = subprocess.run([sys.executable, "-c", INTERRUPTED_PARENT, str(pid_file)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert parent.stdout.startswith("interrupted after "), parent.stderr[-2000:]
    assert float(parent.stdout.split()[2]) < 30
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # stopped and reaped


# ---- the config key and the opt-in -------------------------------------------------------------------------------


def _sbert_config(*overrides):
    from paperline.project.discovery import get_project

    project = get_project(Path(__file__).resolve().parents[2] / "projects", "sbert_sts")
    return project, project.load_config("nli_then_sts", list(overrides))


def test_nproc_per_node_is_validated_and_read_from_every_training_section():
    project, cfg = _sbert_config()
    assert dj.requested_processes(cfg) == 1
    _, cfg = _sbert_config("train.stages.1.nproc_per_node=2")
    assert dj.requested_processes(cfg) == 2  # stages left at 1 run under the same torchrun
    _, cfg = _sbert_config("train.stages.0.nproc_per_node=auto")
    assert dj.requested_processes(cfg) == dj.resolve_nproc("auto") >= 1
    _, cfg = _sbert_config("train.stages.0.nproc_per_node=2", "train.stages.1.nproc_per_node=4")
    with pytest.raises(ConfigError, match=r"different nproc_per_node \(2, 4\)"):
        dj.requested_processes(cfg)
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="nproc_per_node"):
            _sbert_config(f"train.stages.0.nproc_per_node={bad}")
    dj.check_rank_safe(project, 2)  # sbert_sts opted in


def test_a_method_that_is_not_rank_safe_refuses_more_than_one_process():
    other = SimpleNamespace(name="other", method=lambda: SimpleNamespace(train=None))
    dj.check_rank_safe(other, 1)
    with pytest.raises(ConfigError, match=r"project 'other' cannot train with nproc_per_node=2: .*RANK_SAFE = True"):
        dj.check_rank_safe(other, 2)


def test_the_job_spec_and_the_result_round_trip_through_json(tmp_path):
    from paperline.data.datasets import DatasetRef
    from paperline.project.interface import UpstreamModel

    refs = {"stsb": DatasetRef(name="stsb", kind="scored_pairs", path=tmp_path / "data" / "stsb", md5="abc.dir")}
    teacher = UpstreamModel(role="teacher", project="p", name="m", alias="champion", version="3", run_id=None,
                            cache_key="k", path=tmp_path / "teacher")
    spec = dj.JobSpec.build(tmp_path, "sbert_sts", "smoke", ["seed=1"], refs, tmp_path / "run", {"teacher": teacher})
    back = dj.JobSpec.read(spec.write(tmp_path / "job.json"))
    assert back == spec and back.refs() == refs and back.upstream_models() == {"teacher": teacher}
    assert back.result_path == tmp_path / "run" / dj.RESULT_FILE
    model = TrainedModel(path=tmp_path / "m", flavor="pyfunc", metrics={"steps": 4.0}, notes={"device": "cpu"},
                         outputs={"base": tmp_path / "b"},
                         serving=PyfuncSpec(python_model=tmp_path / "serve.py", artifacts={"m": tmp_path / "m"},
                                            pip_requirements=["torch==2.13.0"], metadata={"k": 1}))
    assert dj.model_from_json(json.loads(json.dumps(dj.model_to_json(model)))) == model
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="cannot read the job spec"):
        dj.JobSpec.read(tmp_path / "bad.json")


def test_a_job_spec_for_a_multi_node_run_is_written_from_the_config(tmp_path, monkeypatch, capsys):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("PAPERLINE_ROOT", str(root))
    monkeypatch.setenv("PAPERLINE_WORKSPACE", str(tmp_path / "ws"))
    spec_path = tmp_path / "job.json"
    code = dj.main(["--write-spec", str(spec_path), "sbert_sts", "--config", "smoke", "train.stages.0.nproc_per_node=2"])
    assert code == 0 and "torchrun --nnodes N --node-rank R" in capsys.readouterr().out
    spec = dj.JobSpec.read(spec_path)
    assert (spec.project, spec.config, spec.overrides) == ("sbert_sts", "smoke", ["train.stages.0.nproc_per_node=2"])
    from paperline.data.datasets import read_pointer

    assert spec.data["stsb"]["md5"] == read_pointer(root)["md5"]
    assert Path(spec.workdir) == (tmp_path / "ws").resolve() / "runs" / "torchrun-sbert_sts-smoke"
    code = dj.main(["--write-spec", str(spec_path), "cross_encoder_sts", "--config", "smoke", "train.nproc_per_node=2"])
    assert code == 2 and "not rank-safe" in capsys.readouterr().err


# ---- a rank that dies or raises: which rank, at which step, and what the rerun resumes from --------------------

from paperline.ml import rank_progress  # noqa: E402
from paperline.project import torchrun  # noqa: E402


def _checkpoint(folder: Path, step: int, complete: bool = True) -> None:
    (folder / f"checkpoint-{step}").mkdir(parents=True)
    if complete:
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (folder / f"checkpoint-{step}" / MANIFEST).write_text("{}")


def test_the_line_names_the_rank_that_died_not_the_one_that_lost_its_peer(tmp_path, monkeypatch):
    monkeypatch.setattr("paperline.ml.checkpoints.check_checkpoint", lambda path: None)  # no real weights here
    out = tmp_path / "sts"
    _checkpoint(out, 4)
    _checkpoint(out, 8, complete=False)  # the save the kill cut short is not what the rerun resumes from
    common = {"world_size": 2, "output_dir": str(out), "required": [MANIFEST]}
    progress = {0: {**common, "rank": 0, "step": 7, "error": "DistBackendError: Connection closed by peer",
                    "peer_lost": True},
                1: {**common, "rank": 1, "step": 8}}
    failures = [{"rank": 0, "exitcode": 1, "signal": None}, {"rank": 1, "exitcode": -9, "signal": "SIGKILL"}]
    assert torchrun.describe(failures, progress, 2) == (
        "rank 1 of 2 died (signal SIGKILL) at step 8; the checkpoint of step 4 is kept: rerun the same command to "
        "resume on every rank")
    # a rank that raised; the other was stopped by torchrun (SIGTERM is a consequence, not a cause)
    progress[1] |= {"error": "ValueError: boom", "traceback": "/w/rank-1.traceback"}
    failures = [{"rank": 0, "exitcode": -15, "signal": "SIGTERM"}, {"rank": 1, "exitcode": 1, "signal": None}]
    assert torchrun.describe(failures, progress, 2) == (
        "rank 1 of 2 failed at step 8 (ValueError: boom; traceback in /w/rank-1.traceback); the checkpoint of step 4 "
        "is kept: rerun the same command to resume on every rank")
    assert torchrun.describe([{"rank": 1, "exitcode": -9, "signal": "SIGKILL"}], {}, 2) == (
        "rank 1 of 2 died (signal SIGKILL) before training started: rerun the same command")
    assert torchrun.describe([], progress, 2) is None  # torchrun's own failure: its last lines say why
    progress[1] |= {"error": "checkpoint x is corrupted; delete x", "paperline": True}  # its own line says what to do
    assert torchrun.describe(failures, progress, 2) == "rank 1 of 2: checkpoint x is corrupted; delete x"


RAISING_RANK = """
import os, sys, time
from paperline.ml import rank_progress
from paperline.ml.ranks import barrier, init_distributed
from paperline.project.distributed_job import _report_rank_error

try:
    init_distributed()
    rank_progress.record(step=3)
    if os.environ["RANK"] == "1":
        open(sys.argv[1], "w").write(str(time.time()))
        raise ValueError("boom")
    time.sleep(0.5)
    barrier()  # rank 0 waits here for a rank that will never come
except Exception as exc:
    sys.exit(_report_rank_error(exc))  # what distributed_job.main does with an error in a rank
"""


def test_a_rank_that_raises_ends_the_job_at_once_with_its_rank_in_the_failures(tmp_path):
    script, failures, progress = tmp_path / "rank.py", tmp_path / "failures.json", tmp_path / "ranks"
    script.write_text(RAISING_RANK)
    env = {**os.environ, "OMP_NUM_THREADS": "1", rank_progress.PROGRESS_ENV: str(progress)}
    raised_at = tmp_path / "raised-at"
    job = subprocess.run(torchrun.command(failures, ["--standalone", "--nproc-per-node", "2", str(script),
                                                     str(raised_at)]), env=env, capture_output=True, text=True,
                         timeout=300)
    took = time.time() - float(raised_at.read_text())  # from the error to torchrun's exit, not counting start-up
    assert job.returncode == 1, job.stderr[-3000:]
    assert "ChildFailedError" not in job.stderr  # written down, not torchrun's traceback and table
    rows, records = torchrun.read_failures(failures), rank_progress.read_all(progress)
    assert torchrun.cause(rows, records)["rank"] == 1, (rows, records)
    line = torchrun.describe(rows, records, 2)
    assert line == (f"rank 1 of 2 failed at step 3 (ValueError: boom; traceback in {progress / 'rank-1.traceback'}); "
                    "no checkpoint was complete yet: rerun the same command to start over on every rank"), line
    assert "Traceback" not in job.stderr and "ValueError: boom" in (progress / "rank-1.traceback").read_text()
    print(f"the job ended {took:.1f} s after rank 1 raised")
    assert took < 40, took  # no wait for the collective timeout (600 s); measured 13.7 s on this loaded 2-core machine


def test_the_collective_timeout_is_a_positive_number_of_seconds(monkeypatch):
    from paperline.ml.ranks import collective_timeout

    monkeypatch.delenv("PAPERLINE_COLLECTIVE_TIMEOUT", raising=False)
    assert collective_timeout() == 600
    monkeypatch.setenv("PAPERLINE_COLLECTIVE_TIMEOUT", "90")
    assert collective_timeout() == 90
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv("PAPERLINE_COLLECTIVE_TIMEOUT", bad)
        with pytest.raises(ConfigError, match="PAPERLINE_COLLECTIVE_TIMEOUT"):
            collective_timeout()
