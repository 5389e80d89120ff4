"""Multi-process training under torchrun: the job spec, the launcher, and the entry point every rank runs.

A config asks for it with `nproc_per_node` in a training section (`FitSection`; e.g.
`train.stages.0.nproc_per_node=2` for sbert_sts, `auto` = one process per CUDA device). The flow's train step then
writes a job spec (JSON: repository root, project, config name and overrides, the datasets with their DVC md5,
the run's workdir and upstream models, where the result goes) and runs

    python -m paperline.project.torchrun --failures <workdir>/torchrun-failures.json --monitor-interval 1.0 \
        --standalone --nproc-per-node N -m paperline.project.distributed_job SPEC

(torchrun, run in-process by `paperline.project.torchrun` so that a failed rank is written down and told in one
line: which rank, its step, the checkpoint the rerun resumes from; every rank records its progress under
<workdir>/torchrun-ranks/, paperline.ml.rank_progress).

Every rank loads the project and config named in the spec and calls the method's `train` inside the process
group (nccl on CUDA, gloo on the CPU; `paperline.ml.training.fit` runs DistributedDataParallel); rank 0 writes
the returned `TrainedModel` as JSON, which the flow reads back to evaluate, track and register as for one
process. Only methods that declare `RANK_SAFE = True` in their method.py run this way (their own saves go
through `paperline.ml.ranks.save_on_main`); the others refuse nproc_per_node > 1 with one line.

Multi-node: write the spec once with `--write-spec` (on a filesystem every node sees), then start the same
torchrun command on every node with `--nnodes`, `--node-rank` and a rendezvous endpoint
(docs/distributed-training.md):

    python -m paperline.project.distributed_job --write-spec /shared/job.json sbert_sts --config default \\
        --workdir /shared/runs/sbert train.stages.0.nproc_per_node=8
    torchrun --nnodes 2 --node-rank R --rdzv-backend c10d --rdzv-endpoint HOST:29400 --nproc-per-node 8 \\
        -m paperline.project.distributed_job /shared/job.json

No Prefect, MLflow, DVC or GX is imported here: the job runs on a bare GPU worker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from paperline.core.config import ConfigError
from paperline.core.errors import PaperlineError
from paperline.data.datasets import DataError, DatasetRef, read_pointer
from paperline.ml import rank_progress
from paperline.project import torchrun
from paperline.project.interface import ProjectData, PyfuncSpec, RunContext, TrainedModel, UpstreamModel
from paperline.project.sections import FitSection

MODULE = "paperline.project.distributed_job"
SPEC_FILE, RESULT_FILE = "torchrun-job.json", "torchrun-result.json"  # inside the run's workdir
FAILURES_FILE, PROGRESS_FOLDER = "torchrun-failures.json", "torchrun-ranks"  # which rank failed; how far each got


class DistributedTrainingError(PaperlineError):
    """The torchrun job failed; the message gives its exit code and the last lines it wrote to stderr."""


# ---- how many processes a config asks for ---------------------------------------------------------------------


def fit_sections(node: Any) -> list[FitSection]:
    """Every training section (`FitSection`) inside a config, in order (a stage list, a cycle's sides...)."""
    found: list[FitSection] = []
    if isinstance(node, FitSection):
        found.append(node)
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            found += fit_sections(getattr(node, name))
    elif isinstance(node, (list, tuple)):
        for item in node:
            found += fit_sections(item)
    elif isinstance(node, dict):
        for item in node.values():
            found += fit_sections(item)
    return found


def resolve_nproc(value: int | str) -> int:
    """`auto`: the number of CUDA devices (1 without CUDA); an int as given."""
    if value == "auto":
        import torch

        return max(1, torch.cuda.device_count())
    return int(value)


def requested_processes(cfg: Any) -> int:
    """The processes per node the train step runs with: the `nproc_per_node` of the config's training sections.

    The whole train step runs under one torchrun, so sections asking for more than one process must agree; a
    section left at 1 runs with the others' count (its `batch_size` is then per process too).
    """
    asked = sorted({resolve_nproc(s.nproc_per_node) for s in fit_sections(cfg)} - {1})
    if len(asked) > 1:
        raise ConfigError(f"the config's training sections ask for different nproc_per_node ({', '.join(map(str, asked))}); "
                          "the train step runs under one torchrun: give them the same value")
    return asked[0] if asked else 1


def check_rank_safe(project: Any, nproc: int) -> None:
    """One ConfigError line unless the method opted in to multi-process training (`RANK_SAFE = True`)."""
    if nproc > 1 and not getattr(project.method(), "RANK_SAFE", False):
        raise ConfigError(f"project '{project.name}' cannot train with nproc_per_node={nproc}: its method is not "
                          "rank-safe under torchrun (set nproc_per_node to 1, or make its saves rank-0-only with "
                          "paperline.ml.ranks.save_on_main and declare RANK_SAFE = True in method.py)")


# ---- the job spec and the result ------------------------------------------------------------------------------


@dataclass
class JobSpec:
    """Everything a rank needs to run one project's train step; JSON on disk (`write`/`read`)."""

    root: str  # the repository root (projects/ and data.dvc)
    project: str
    config: str
    overrides: list[str] = field(default_factory=list)
    data: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {name, kind, path, md5}
    workdir: str = ""
    upstream: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> UpstreamModel fields
    progress: bool = True
    result: str = ""  # where rank 0 writes the TrainedModel; default <workdir>/torchrun-result.json

    @classmethod
    def build(cls, root: Path, project: str, config: str, overrides: list[str] | None, refs: dict[str, DatasetRef],
              workdir: Path, upstream: dict[str, UpstreamModel] | None = None, progress: bool = True) -> JobSpec:
        return cls(root=str(root), project=project, config=config, overrides=list(overrides or []),
                   data={n: {"name": r.name, "kind": r.kind, "path": str(r.path), "md5": r.md5} for n, r in refs.items()},
                   workdir=str(workdir), progress=progress, result=str(Path(workdir) / RESULT_FILE),
                   upstream={role: {**asdict(m), "path": str(m.path)} for role, m in (upstream or {}).items()})

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def read(cls, path: Path) -> JobSpec:
        try:
            spec = cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read the job spec {path}: {exc}; write one with "
                              f"`python -m {MODULE} --write-spec {path} PROJECT --config NAME`") from None
        return spec

    @property
    def result_path(self) -> Path:
        return Path(self.result or Path(self.workdir) / RESULT_FILE)

    def refs(self) -> dict[str, DatasetRef]:
        return {n: DatasetRef(name=r["name"], kind=r["kind"], path=Path(r["path"]), md5=r["md5"])
                for n, r in self.data.items()}

    def upstream_models(self) -> dict[str, UpstreamModel]:
        return {role: UpstreamModel(**{**m, "path": Path(m["path"])}) for role, m in self.upstream.items()}


def model_to_json(model: TrainedModel) -> dict[str, Any]:
    serving = None
    if model.serving is not None:
        s = model.serving
        serving = {"python_model": str(s.python_model), "artifacts": {k: str(v) for k, v in s.artifacts.items()},
                   "pip_requirements": list(s.pip_requirements), "code_paths": [str(p) for p in s.code_paths],
                   "metadata": s.metadata, "input_example": s.input_example}
    return {"path": str(model.path), "flavor": model.flavor, "serving": serving, "metrics": model.metrics,
            "notes": {k: str(v) for k, v in model.notes.items()}, "outputs": {k: str(v) for k, v in model.outputs.items()},
            "history": list(model.history)}


def model_from_json(data: dict[str, Any]) -> TrainedModel:
    s = data.get("serving")
    serving = None if s is None else PyfuncSpec(
        python_model=Path(s["python_model"]), artifacts={k: Path(v) for k, v in s["artifacts"].items()},
        pip_requirements=list(s["pip_requirements"]), code_paths=[Path(p) for p in s["code_paths"]],
        metadata=dict(s["metadata"]), input_example=s.get("input_example"))
    return TrainedModel(path=Path(data["path"]), flavor=data["flavor"], serving=serving, metrics=dict(data["metrics"]),
                        notes=dict(data["notes"]), outputs={k: Path(v) for k, v in data["outputs"].items()},
                        history=list(data.get("history", [])))


# ---- the launcher (the flow's side) ----------------------------------------------------------------------------


def torchrun_command(spec_path: Path, nproc: int, failures: Path) -> list[str]:
    """One node, all ranks here: torchrun's `--standalone` picks a free rendezvous port on localhost; a failed
    rank is written to `failures` (paperline.project.torchrun) instead of torchrun's traceback."""
    return torchrun.command(failures, ["--standalone", "--nproc-per-node", str(nproc), "-m", MODULE,
                                       str(spec_path)])


def launch(spec: JobSpec, nproc: int, stderr: Any = None) -> TrainedModel:
    """Run the train step of `spec` under torchrun with `nproc` processes and return rank 0's TrainedModel.

    Output passes through (stdout as is, stderr copied to `stderr`); a failure is one DistributedTrainingError
    line, naming the rank that brought the job down, the step it reached and the checkpoint a rerun resumes
    from (paperline.project.torchrun); Ctrl-C or SIGTERM while it runs stops torchrun and its workers before the
    interrupt goes on.
    """
    workdir = Path(spec.workdir)
    spec_path = spec.write(workdir / SPEC_FILE)
    spec.result_path.unlink(missing_ok=True)  # a stale result must not pass for this run's
    failures, progress = workdir / FAILURES_FILE, workdir / PROGRESS_FOLDER
    failures.unlink(missing_ok=True)  # nor a previous attempt's failed ranks and progress
    shutil.rmtree(progress, ignore_errors=True)
    env = dict(os.environ)
    env[rank_progress.PROGRESS_ENV] = str(progress)
    if "OMP_NUM_THREADS" not in env:  # torchrun would set 1; share the cores between the processes instead
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    try:
        run_command(torchrun_command(spec_path, nproc, failures), f"training under torchrun ({nproc} processes)",
                    env=env, stderr=stderr)
    except DistributedTrainingError:
        line = torchrun.describe(torchrun.read_failures(failures), rank_progress.read_all(progress), nproc)
        if line is None:  # torchrun itself failed (rendezvous, a bad argument): its own last lines say why
            raise
        raise DistributedTrainingError(line) from None
    if not spec.result_path.is_file():
        raise DistributedTrainingError(f"torchrun finished but rank 0 wrote no result to {spec.result_path}")
    return model_from_json(json.loads(spec.result_path.read_text()))


def run_command(command: list[str], what: str, env: dict[str, str] | None = None, stderr: Any = None,
                tail_lines: int = 6, stop_timeout: float = 30.0) -> None:
    """Run `command`, copying its stderr through while keeping the tail for the error line."""
    out = stderr or sys.stderr
    tail: deque[bytes] = deque(maxlen=64)  # the last chunks of stderr
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, env=env)

    def pump() -> None:
        for chunk in iter(lambda: proc.stderr.read1(65536), b""):
            tail.append(chunk)
            try:
                out.write(chunk.decode(errors="replace"))
                out.flush()
            except (OSError, ValueError):  # a closed terminal must not kill the copy, nor the job
                pass

    copier = threading.Thread(target=pump, daemon=True)
    copier.start()
    try:
        while True:  # short waits, not one blocking waitpid: an interrupt is handled at once
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
    except BaseException:  # Ctrl-C, SIGTERM (as KeyboardInterrupt or Prefect's TerminationSignal), a cancel
        stop(proc, stop_timeout)
        raise
    finally:
        copier.join(timeout=5)
    if code != 0:
        raise DistributedTrainingError(f"{what} failed with exit code {code}: {_last_lines(b''.join(tail), tail_lines)}")


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM to torchrun (it forwards it to its workers and waits for them), SIGKILL if that does not end it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _last_lines(raw: bytes, n: int) -> str:
    """A method's own `paperline: error:` line when a rank printed one, else the last `n` lines of stderr."""
    lines = [line.rsplit("\r", 1)[-1].strip() for line in raw.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    ours = [line for line in lines if line.startswith("paperline: error:")]
    if ours:
        return ours[-1].removeprefix("paperline: error:").strip()
    return " | ".join(lines[-n:])[-2000:] or "(no output on stderr)"


# ---- every rank ------------------------------------------------------------------------------------------------


def run_rank(spec: JobSpec) -> TrainedModel:
    """This rank's part of the train step: the method's `train` on the spec's project, config and data."""
    from paperline.ml.ranks import is_main_process
    from paperline.project.discovery import get_project

    project = get_project(Path(spec.root) / "projects", spec.project)
    cfg = project.load_config(spec.config, spec.overrides)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    check_rank_safe(project, int(os.environ.get("WORLD_SIZE", "1")))
    asked = requested_processes(cfg)
    if asked != processes and is_main_process():
        print(f"paperline: note: the config asks for nproc_per_node={asked}, torchrun started {processes} per node; "
              "batch_size is per process", file=sys.stderr, flush=True)
    refs = spec.refs()
    here = read_pointer(Path(spec.root))["md5"]
    for ref in refs.values():
        if ref.md5 != here:
            raise DataError(f"data.dvc in {spec.root} is at version {here}, the job spec needs {ref.md5} for "
                            f"'{ref.name}'; check out the same commit on every node and run `paperline data pull`")
    ctx = RunContext(workdir=Path(spec.workdir), progress=spec.progress, upstream=spec.upstream_models())
    return project.build_model(cfg, ProjectData(refs), ctx)


def write_spec_for(out: Path, project_name: str, config_name: str, overrides: list[str],
                   workdir: Path | None = None) -> JobSpec:
    """A job spec for a training job started by hand (multi-node): the data at the version in data.dvc."""
    from paperline.core.settings import Settings
    from paperline.data.datasets import DataVersion, dataset_ref
    from paperline.project.discovery import get_project

    settings = Settings.from_env()
    project = get_project(settings.projects_dir, project_name)
    cfg = project.load_config(config_name, overrides)
    check_rank_safe(project, requested_processes(cfg))
    pointer = read_pointer(settings.root)
    version = DataVersion(md5=pointer["md5"], path=settings.root / pointer.get("path", "data"), nfiles=None,
                          pulled=False)
    refs = {name: dataset_ref(version, name, use.kind) for name, use in cfg.data.items()}
    if cfg.upstream:
        raise ConfigError(f"config '{config_name}' consumes upstream models ({', '.join(cfg.upstream)}); "
                          "run it through `paperline run`, which resolves them")
    workdir = Path(workdir or settings.workspace / "runs" / f"torchrun-{project_name}-{config_name}").resolve()
    spec = JobSpec.build(settings.root, project_name, config_name, overrides, refs, workdir)
    spec.write(out)
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("args", nargs="*", metavar="SPEC | PROJECT [key=value ...]",
                        help="the job spec every rank reads; with --write-spec, the project and its overrides")
    parser.add_argument("--write-spec", metavar="SPEC", help="write a job spec for PROJECT instead of running one")
    parser.add_argument("--config", default="default", help="with --write-spec: the config name")
    parser.add_argument("--workdir", default=None, help="with --write-spec: where checkpoints and the model go "
                        "(default: <workspace>/runs/torchrun-<project>-<config>; shared by every node)")
    args = parser.parse_intermixed_args(argv)
    if args.write_spec is None and len(args.args) != 1:
        parser.error("give one job spec (or --write-spec SPEC PROJECT [key=value ...])")
    if args.write_spec is not None and not args.args:
        parser.error("--write-spec needs the project")
    try:
        if args.write_spec is not None:
            project, *overrides = args.args
            spec = write_spec_for(Path(args.write_spec), project, args.config, overrides, args.workdir)
            print(f"wrote {args.write_spec} (workdir {spec.workdir}); start on every node:\n"
                  f"  torchrun --nnodes N --node-rank R --rdzv-backend c10d --rdzv-endpoint HOST:29400 "
                  f"--nproc-per-node P -m {MODULE} {args.write_spec}")
            return 0
        return _run(JobSpec.read(Path(args.args[0])))
    except PaperlineError as exc:
        if _under_launcher():  # the launcher prints the error line; this is the rank's own, for the log
            rank_progress.record(error=str(exc), paperline=True, peer_lost=False)
            print(f"paperline: {_rank_name()} failed: {exc}", file=sys.stderr, flush=True)
        else:
            print(f"paperline: error: {exc}", file=sys.stderr, flush=True)
        return 2 if isinstance(exc, ConfigError) else 1
    except Exception as exc:
        if not _under_launcher():  # torchrun started by hand: the traceback, as Python prints it
            raise
        return _report_rank_error(exc)


def _under_launcher() -> bool:
    """True in a rank that `launch` started: it reads the ranks' progress records and prints the one line."""
    return rank_progress.progress_folder() is not None and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _rank_name() -> str:
    return f"rank {os.environ.get('RANK', '0')} of {os.environ.get('WORLD_SIZE', '1')}"


def _lost_peer(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing because another rank is gone (gloo: the peer closed its connection;
    nccl: a communicator error or the timeout), as opposed to an error of this rank's own."""
    try:
        import torch.distributed as dist

        if isinstance(exc, getattr(dist, "DistError", ())):
            return True
    except ImportError:
        pass
    text = str(exc)
    return any(marker in text for marker in ("Connection closed by peer", "Connection reset by peer", "gloo/transport",
                                             "ProcessGroupGloo", "ProcessGroupNCCL", "NCCL error"))


def _report_rank_error(exc: Exception) -> int:
    """An unexpected error in a rank under the launcher: the traceback to a file beside the progress records,
    the error (first line) in this rank's record, and one line on stderr instead of the traceback."""
    import traceback

    rank = int(os.environ.get("RANK", "0") or 0)
    folder = rank_progress.progress_folder()
    trace = folder / f"rank-{rank}.traceback"
    try:
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.write_text("".join(traceback.format_exception(exc)))
    except OSError:
        trace = None
    summary = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
    summary = summary[:300]
    peer = _lost_peer(exc)
    rank_progress.record(error=summary, peer_lost=peer, traceback=str(trace) if trace else None)
    what = "stopped: another rank is gone" if peer else "failed"
    print(f"paperline: {_rank_name()} {what} ({summary}; traceback in {trace})", file=sys.stderr, flush=True)
    return 1


def _run(spec: JobSpec) -> int:
    from paperline.ml.ranks import barrier, init_distributed, is_main_process

    init_distributed()
    model = run_rank(spec)
    if is_main_process():
        tmp = spec.result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(model_to_json(model), indent=1))
        tmp.replace(spec.result_path)  # whole or absent: the launcher never reads half a result
    barrier()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
