"""Progress on long steps: one bar per training job, instead of the libraries' own bars and log dicts.

By default (quiet) the transformers and Hugging Face Hub bars ("Loading weights", "Writing model shards",
"Computing widget examples") are off (`quiet_environment`), and the trainer's bar and its printed loss dicts are
replaced by one `training` bar that shows the step, the loss and the learning rate. `paperline --verbose` (the
variable PAPERLINE_VERBOSE=1) brings the libraries' own output back, as a plain sentence-transformers script
would print it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

VERBOSE_ENV = "PAPERLINE_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _interval() -> float:
    # On a terminal the bar redraws in place; into a log file (CI, a Prefect worker) a line every 30 s is enough.
    return 0.5 if sys.stderr.isatty() else 30.0


def bar(total: int | None, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True, leave: bool = True):
    """A tqdm bar on stderr that the quiet environment does not switch off (it asks for itself explicitly)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, leave=leave,
                mininterval=_interval(), dynamic_ncols=True, file=sys.stderr)


def training_callback() -> Any:
    """A trainer callback drawing one `training` bar (rank 0 only), with the last logged loss and learning rate."""
    from transformers import TrainerCallback

    class TrainingProgress(TrainerCallback):
        def __init__(self) -> None:
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = bar(state.max_steps, "training", unit="step", initial=state.global_step,
                           enabled=state.is_world_process_zero)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                shown = {"loss": f"{float(logs['loss']):.4g}"}
                if "learning_rate" in logs:
                    shown["lr"] = f"{float(logs['learning_rate']):.2e}"
                self.bar.set_postfix(shown, refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return TrainingProgress()


def quiet_trainer(trainer: Any) -> None:
    """Take the trainer's own printing callbacks off (its bar, the loss dicts it prints every logging step)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
