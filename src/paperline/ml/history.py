"""The learning curve of a training job: the trainer's log history (loss and learning rate every logging step).

`fit` (paperline.ml.training) reads it from sentence-transformers' trainer and hands it here; the code that calls
a method's `train` gathers every fit of the run with `recording_history()` and puts the list on the
`TrainedModel`, so a method that trains in stages, arms or cycles needs no code of its own for its curve.
Plain numbers only: the list travels in cached task results and the torchrun job's JSON result.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

KEYS = ("epoch", "loss", "learning_rate", "grad_norm")
_recorder: ContextVar[list[dict[str, float]] | None] = ContextVar("paperline_train_history", default=None)


def log_history(entries: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The training-loss entries of a trainer's `state.log_history` (not its evaluation or end-of-training
    summaries), as {"step", "epoch", "loss", "learning_rate"(, "grad_norm")} of plain numbers."""
    history = []
    for entry in entries:
        if "loss" not in entry or "step" not in entry:
            continue
        row: dict[str, float] = {"step": int(entry["step"])}
        row.update({k: float(entry[k]) for k in KEYS if isinstance(entry.get(k), (int, float))})
        history.append(row)
    return history


@contextmanager
def recording_history() -> Iterator[list[dict[str, float]]]:
    """Gather the history of every `fit` inside the block into one list: steps continue across fits (a second
    stage's first step follows the first stage's last), and each row says which fit it came from (`fit`: 0, 1..).

        with recording_history() as history:
            model = method.train(cfg, data, ctx)
    """
    record: list[dict[str, float]] = []
    token = _recorder.set(record)
    try:
        yield record
    finally:
        _recorder.reset(token)


def record_history(history: list[dict[str, float]], main_process: bool = True) -> None:
    """Add one fit's history to the list of the enclosing `recording_history()`; nothing outside one, or on a
    rank other than 0 (every rank logs the same steps)."""
    record = _recorder.get()
    if record is None or not main_process:
        return
    offset = int(record[-1]["step"]) if record else 0
    fit = int(record[-1]["fit"]) + 1 if record else 0
    record.extend({**row, "step": int(row["step"]) + offset, "fit": fit} for row in history)
