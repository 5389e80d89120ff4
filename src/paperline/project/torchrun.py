"""torchrun with its failed ranks written down, and the one line that names the rank that brought a job down.

`python -m paperline.project.torchrun --failures FILE [torchrun arguments]` is `torchrun [torchrun arguments]`
(torch.distributed.run, in this process), except when a rank fails: torchrun stops the other ranks, then raises
ChildFailedError, which it prints as a traceback and a table. Here each failed rank (global rank, exit code, the
signal that killed it) goes to FILE as JSON instead, and the exit code is 1. The launcher
(`distributed_job.launch`) reads FILE back with every rank's progress record (paperline.ml.rank_progress) and
says, in one line, which rank died, at which step, and which checkpoint the rerun resumes from:

    rank 1 of 2 died (signal SIGKILL) at step 7; the checkpoint of step 4 is kept: rerun the same command to
    resume on every rank

How long a job takes to end after a rank dies: torchrun polls its workers every `--monitor-interval` (MONITOR_INTERVAL
here), then sends SIGTERM to the others and waits up to 30 s before SIGKILL; a survivor blocked in a collective
on a dead peer is also released by gloo's closed connection, or by the process group's timeout
(paperline.ml.ranks.collective_timeout) when the peer hangs instead of dying.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

MODULE = "paperline.project.torchrun"
# Seconds between torchrun's checks of its workers: how long a dead rank goes unnoticed. torch's default is 0.1 in
# 2.4+ (5 before); set here so that the bound does not move with the torch version. A check is one waitpid per
# worker, so a second costs nothing measurable and keeps the end within about a second of the death.
MONITOR_INTERVAL = 1.0
STOP_SIGNALS = {"SIGTERM", "SIGINT"}  # what torchrun (or the user's Ctrl-C) sends: a consequence, not a cause


def command(failures: Path, torchrun_args: list[str]) -> list[str]:
    return [sys.executable, "-m", MODULE, "--failures", str(failures), "--monitor-interval", str(MONITOR_INTERVAL),
            *torchrun_args]


def write_failures(path: Path, error: Any) -> None:
    """ChildFailedError -> [{"rank", "local_rank", "pid", "exitcode", "signal"}] in `path`."""
    rows = []
    for rank, failure in sorted(error.failures.items()):
        name = None
        if failure.exitcode < 0:
            try:
                name = signal.Signals(-failure.exitcode).name
            except ValueError:
                name = f"signal {-failure.exitcode}"
        rows.append({"rank": int(rank), "local_rank": int(failure.local_rank), "pid": int(failure.pid),
                     "exitcode": int(failure.exitcode), "signal": name})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))


def read_failures(path: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError):
        return []


def cause(failures: list[dict[str, Any]], progress: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """The failed rank that brought the job down, not the ones that fell with it.

    In order: a rank killed by a signal other than the stop signals (it died: nothing else explains it); a rank
    that raised an error of its own (its progress record has `error` without `peer_lost`); a rank that exited
    non-zero without saying why; then any failed rank. Ranks that lost a peer in a collective come last.
    """
    def order(row: dict[str, Any]) -> tuple[int, int]:
        record = progress.get(row["rank"], {})
        if row.get("signal") and row["signal"] not in STOP_SIGNALS:
            return 0, row["rank"]
        if record.get("error") and not record.get("peer_lost"):
            return 1, row["rank"]
        if not record.get("error"):
            return 2, row["rank"]
        return 3, row["rank"]

    return min(failures, key=order) if failures else None


def describe(failures: list[dict[str, Any]], progress: dict[int, dict[str, Any]], nproc: int) -> str | None:
    """The one line for a failed job, or None when no rank failure was written down (torchrun itself failed)."""
    from paperline.ml.checkpoints import CheckpointError, last_checkpoint

    row = cause(failures, progress)
    if row is None:
        return None
    record = progress.get(row["rank"], {})
    world = record.get("world_size") or nproc
    who = f"rank {row['rank']} of {world}"
    own_error = record.get("error") if not record.get("peer_lost") else None
    if own_error and record.get("paperline"):  # paperline's own line already says what to do
        return f"{who}: {own_error}"
    if row.get("signal"):
        what, why = f"{who} died (signal {row['signal']})", ""
    elif own_error:
        what = f"{who} failed"
        why = f" ({own_error}; traceback in {record['traceback']})" if record.get("traceback") else f" ({own_error})"
    else:
        what, why = f"{who} exited with code {row['exitcode']}", ""
    if "step" not in record:
        return f"{what} before training started{why}: rerun the same command"
    what += f" at step {record['step']}{why}"
    kept = None
    if record.get("output_dir"):
        try:
            kept = last_checkpoint(Path(record["output_dir"]), tuple(record.get("required", ())),
                                   remove_incomplete=False)
        except (CheckpointError, OSError, ValueError):  # a corrupted checkpoint: the rerun says which in one line
            kept = None
    if kept is None:
        return f"{what}; no checkpoint was complete yet: rerun the same command to start over on every rank"
    step = json.loads((kept / "trainer_state.json").read_text()).get("global_step", kept.name.split("-")[-1])
    return f"{what}; the checkpoint of step {step} is kept: rerun the same command to resume on every rank"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "--failures":
        print(f"usage: python -m {MODULE} --failures FILE [torchrun arguments]", file=sys.stderr)
        return 2
    failures, torchrun_args = Path(argv[1]), argv[2:]
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(torchrun_args))
    except ChildFailedError as error:
        write_failures(failures, error)
        return 1
    except SignalException as stopped:  # Ctrl-C or SIGTERM: torchrun has stopped the ranks; the caller says so
        return 128 + int(stopped.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
