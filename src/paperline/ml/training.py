"""The thin trainer: device, precision, seeding and resumable checkpoints around sentence-transformers' trainer.

Importable and runnable without Prefect, MLflow, DVC or Great Expectations, so a training job can run on a
bare GPU worker. The loop itself is `SentenceTransformerTrainer` (or `CrossEncoderTrainer` for a
`CrossEncoder`); this module only decides the settings a production job needs and makes a killed job resume
from its last checkpoint instead of step 0.

A loss may own trainable weights of its own (a pair head, like SoftmaxLoss's classifier): the trainer optimises
them but saves only the model, so `fit` writes them beside each checkpoint (`loss.safetensors`) and loads them
back on resume; otherwise a resumed job would continue with a re-initialised head.

Under `torchrun` (WORLD_SIZE > 1 in the environment) `fit` joins the process group (nccl on CUDA, gloo on the
CPU; the trainer then runs DistributedDataParallel) and stays rank-safe: only rank 0 removes a half-written
checkpoint and writes the loss state, every rank resumes from the same complete checkpoint, and a method saves its
own files with `paperline.ml.ranks.save_on_main` (rank 0 writes, every rank waits at a barrier).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from paperline.ml import rank_progress
from paperline.ml.checkpoints import (
    LOSS_STATE,
    MANIFEST,
    CheckpointError,
    last_checkpoint,
    write_manifest,
)
from paperline.ml.history import log_history, record_history
from paperline.ml.ranks import barrier, init_distributed, is_main_process, world_size


def select_device(preference: str = "auto") -> str:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; any other value is used as given."""
    import torch

    if preference != "auto":
        return preference
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def mixed_precision(device: str) -> str:
    """bf16 autocast on CUDA cards that support it (no loss scaling needed), else full fp32."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    global_step: int
    resumed_from_step: int  # 0 when the job started fresh
    train_seconds: float
    samples_per_second: float
    device: str
    precision: str
    train_loss: float | None
    # How the optimizer saw the data: per-device batch x processes x gradient accumulation, and the schedule.
    world_size: int = 1
    effective_batch_size: int = 0
    warmup_steps: int = 0
    total_steps: int = 0
    lr_scheduler: str = "linear"
    # The trainer's log every `logging_steps`: [{"step", "epoch", "loss", "learning_rate"(, "grad_norm")}], plain
    # numbers (JSON-serialisable), for a learning curve; `metrics()` leaves it out.
    history: list[dict[str, float]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """The numbers a run logs as metrics (steps, seconds, throughput, loss, batch and schedule sizes)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def notes(self) -> dict[str, str]:
        """Where and how it trained (device, precision, processes, effective batch, learning-rate schedule),
        which a run records as tags."""
        return {"device": self.device, "precision": self.precision, "world_size": str(self.world_size),
                "effective_batch_size": str(self.effective_batch_size),
                "lr_schedule": f"{self.lr_scheduler}, {self.warmup_steps} warm-up steps of {self.total_steps}"}




@dataclass
class TrainSettings:
    """What the trainer needs besides the model, data and loss; projects fill it from their config."""

    output_dir: Path
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    seed: int = 0
    checkpoint_every: int = 100
    max_steps: int = -1  # > 0 caps the steps (smoke configs)
    device: str = "auto"
    progress: bool = True
    group_by_length: bool = False  # length-grouped batches (paperline.ml.batching): less padding, same rows
    group_pool_batches: int = 50  # batches per length-sorted pool: fewer pools mix lengths (and topics) more
    # the fast path: ids from the token cache (paperline.ml.token_cache: tokenized once per dataset version and
    # tokenizer), and on CUDA a fused AdamW, pinned memory and, as an option, torch.compile
    token_cache: bool = True
    compile: bool = False  # torch.compile the model (CUDA; minutes of compilation before the first step)
    dataloader_workers: int = 0  # worker processes building batches (0: in the training process)
    # regex over parameter names -> learning rate, e.g. {r"^head\\.": 1e-3} for a freshly initialised head in
    # the loss, which would barely move at an encoder's fine-tuning rate (sentence-transformers' mapping)
    learning_rate_mapping: dict[str, float] | None = None


def loss_parameters(loss: Any, model: Any) -> dict[str, Any]:
    """The trainable weights a loss holds besides the model's (a pair head), by name; {} for most losses."""
    model_params = {id(p) for p in model.parameters()}
    return {name: p for name, p in loss.named_parameters() if id(p) not in model_params}


def _trainer_classes(model: Any) -> tuple[Any, Any]:
    """(trainer, training arguments) of sentence-transformers for this kind of model."""
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )

    if isinstance(model, CrossEncoder):
        return _rank_zero_saves(CrossEncoderTrainer), CrossEncoderTrainingArguments
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    return _rank_zero_saves(SentenceTransformerTrainer), SentenceTransformerTrainingArguments


def _rank_zero_saves(trainer_class: Any) -> Any:
    """The trainer, with the model files of a checkpoint written by the saving rank alone.

    transformers 5's `save_model` calls `_save` on every rank in plain DDP, and sentence-transformers' `_save`
    assumes it runs on rank 0 only: under torchrun rank 1 rewrote the weights, README.md and training_args.bin of
    a checkpoint whose manifest rank 0 had already written, so a sound checkpoint read as corrupted.
    """

    class RankZeroSaves(trainer_class):
        def _save(self, output_dir=None, state_dict=None):
            if self.args.should_save:
                super()._save(output_dir, state_dict=state_dict)

    RankZeroSaves.__name__ = RankZeroSaves.__qualname__ = trainer_class.__name__
    return RankZeroSaves


def _save_loss_state_callback(loss: Any, model: Any):
    """A trainer callback that writes the loss's own weights into each checkpoint the trainer has just saved."""
    from safetensors.torch import save_file
    from transformers import TrainerCallback

    class SaveLossState(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            # under torchrun every rank holds the same (synchronised) weights: rank 0 writes them once
            if state.is_world_process_zero and folder.is_dir():
                tensors = {k: v.detach().cpu().contiguous() for k, v in loss_parameters(loss, model).items()}
                save_file(tensors, str(folder / LOSS_STATE))
            return control

    return SaveLossState()


def _write_manifest_callback():
    """A trainer callback that writes each checkpoint's manifest once the checkpoint is complete (last of all)."""
    from transformers import TrainerCallback

    class WriteManifest(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            # every rank writes its own RNG state into the checkpoint: the manifest waits until all have
            barrier()
            if state.is_world_process_zero and folder.is_dir():
                write_manifest(folder)
            return control

    return WriteManifest()


def _load_loss_state(loss: Any, model: Any, checkpoint: Path) -> None:
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(checkpoint / LOSS_STATE))
    with torch.no_grad():
        for name, param in loss_parameters(loss, model).items():
            if name not in saved or saved[name].shape != param.shape:
                raise CheckpointError(f"checkpoint {checkpoint} holds no weights for the loss's {name!r}; "
                                      f"delete {checkpoint.parent} to start over")
            param.copy_(saved[name].to(param.device))


def training_arguments(settings: TrainSettings, device: str, precision: str) -> dict[str, Any]:
    """The trainer's arguments for these settings on this device: PyTorch's fused AdamW (one kernel for the whole
    update instead of several per parameter; transformers' default too, named so a change of default does not
    change our runs), pinned host memory for the batches (the default), and on CUDA bf16 autocast where the card
    has it and torch.compile when asked (on a CPU compile costs minutes for little)."""
    from paperline.ml import progress
    from paperline.ml.batching import LengthGroupedBatchSampler

    cuda = device.startswith("cuda")
    return dict(
        output_dir=str(settings.output_dir),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a ratio of the total steps
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=precision == "bf16",
        optim="adamw_torch_fused",
        torch_compile=settings.compile and cuda,
        dataloader_num_workers=settings.dataloader_workers,
        save_strategy="steps",
        save_steps=settings.checkpoint_every,
        save_total_limit=2,
        logging_steps=max(1, min(50, settings.checkpoint_every)),
        report_to="none",
        disable_tqdm=not (settings.progress and progress.verbose()),  # else paperline's own bar (ml.progress)
        use_cpu=device == "cpu",
        **({"learning_rate_mapping": settings.learning_rate_mapping} if settings.learning_rate_mapping else {}),
        **({"batch_sampler": partial(LengthGroupedBatchSampler, pool_batches=settings.group_pool_batches)}
           if settings.group_by_length else {}),
    )


def use_token_cache(trainer: Any, model: Any, train_dataset: Any) -> bool:
    """Serve the trainer's collator from the token cache (paperline.ml.token_cache); False where it does not
    apply (a CrossEncoder, whose loss tokenizes pairs itself, or a model whose first module is not a text
    Transformer). Every rank reads the same content-addressed entry; rank 0 builds it first."""
    from sentence_transformers import SentenceTransformer

    from paperline.ml import token_cache

    collator = getattr(trainer, "data_collator", None)
    original = getattr(collator, "preprocess_fn", None)
    if original is None or not isinstance(model, SentenceTransformer):
        return False
    if is_main_process():
        cached = token_cache.cached_preprocess(model, train_dataset, original)
    barrier()
    if not is_main_process():
        cached = token_cache.cached_preprocess(model, train_dataset, original)
    if cached is None:
        return False
    collator.preprocess_fn = cached
    return True


def fit(model: Any, train_dataset: Any, loss: Any, settings: TrainSettings) -> TrainResult:
    """Train `model` on a `datasets.Dataset` with a sentence-transformers loss, resuming when possible.

    `model` is a `SentenceTransformer` or a `CrossEncoder`; the matching sentence-transformers trainer runs.
    Checkpoints go to `settings.output_dir/checkpoint-N` every `checkpoint_every` steps (the two newest are
    kept); when the folder already holds one, training continues from it with the same data order.

    Under torchrun each process trains on its share of every step's batches (`batch_size` is per process, so
    the effective batch is `batch_size` x processes); `output_dir` must be one folder every rank sees (a shared
    filesystem across nodes).
    """
    from paperline.ml import progress

    init_distributed()
    trainer_class, args_class = _trainer_classes(model)
    device = select_device(settings.device)
    if device == "cuda" and world_size() > 1:
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    precision = mixed_precision(device)
    seed_everything(settings.seed)
    model.to(device)
    loss.to(device)  # a head inside the loss trains on the same device as the model
    own_weights = bool(loss_parameters(loss, model))
    required = (LOSS_STATE, MANIFEST) if own_weights else (MANIFEST,)
    # Only rank 0 removes a half-written checkpoint (every rank doing it raced: FileNotFoundError); the others
    # wait for it, then find the same complete checkpoint without removing anything.
    if is_main_process():
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        resume_from = last_checkpoint(settings.output_dir, required)
    barrier()
    if not is_main_process():
        resume_from = last_checkpoint(settings.output_dir, required, remove_incomplete=False)
    # Read now: the trainer's rotation may delete this checkpoint once newer ones exist.
    resumed_step = int(json.loads((resume_from / "trainer_state.json").read_text())["global_step"]) if resume_from else 0
    if resume_from and own_weights:
        _load_loss_state(loss, model, resume_from)
    # under torchrun, how far this rank got (paperline.ml.rank_progress): what the launcher names if it dies
    rank_progress.record(output_dir=str(settings.output_dir), required=list(required))
    rank_progress.announce_resume(resumed_step)
    args = args_class(**training_arguments(settings, device, precision))
    # the manifest comes last, after the loss's own weights: it vouches for every file of the checkpoint
    callbacks = [*([_save_loss_state_callback(loss, model)] if own_weights else []), _write_manifest_callback()]
    if world_size() > 1:
        callbacks.append(rank_progress.step_callback())
    trainer = trainer_class(model=model, args=args, train_dataset=train_dataset, loss=loss, callbacks=callbacks)
    if settings.token_cache:
        use_token_cache(trainer, model, train_dataset)
    if not progress.verbose():
        progress.quiet_trainer(trainer)
        if settings.progress:
            trainer.add_callback(progress.training_callback())
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    total_steps = int(trainer.state.max_steps)
    scheduler = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    history = log_history(trainer.state.log_history)
    record_history(history, is_main_process())
    return TrainResult(
        global_step=output.global_step,
        resumed_from_step=resumed_step,
        train_seconds=seconds,
        samples_per_second=float(output.metrics.get("train_samples_per_second", 0.0)),
        device=device,
        precision=precision,
        train_loss=output.training_loss,
        world_size=args.world_size,
        effective_batch_size=args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps,
        warmup_steps=args.get_warmup_steps(total_steps),
        total_steps=total_steps,
        lr_scheduler=str(scheduler),
        history=history,
    )
