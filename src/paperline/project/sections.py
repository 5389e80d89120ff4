"""Config sections and helpers that every method shares, so a `method.py` keeps only what its paper adds.

- `FitSection`: the training fields of one training job (epochs, batch size, learning rate, warm-up, row and step
  caps, checkpoint interval, device, length grouping), validated once; `settings()` builds the training core's
  `TrainSettings`. A method subclasses it to add its own fields or change a default
  (`learning_rate: float = Field(8e-5, gt=0)`).
- `EvaluateSection`: which dataset and splits are scored, a row cap for smoke runs, and whether the untrained
  base model is scored in the same run (the baseline); `rows()` reads the splits, `metric_names()` names the
  metrics it produces (`stsb_test_spearman`, `baseline_stsb_test_spearman`).
- `sts_evaluation`: the `evaluate` of a sentence encoder on STS (its Spearman, the baseline's, the predictions).
- `scored_pairs_dataset`, `pyfunc_spec`: rows -> `datasets.Dataset`, and a pyfunc serving spec with pinned
  requirements and an input example (`SENTENCES_EXAMPLE`, `PAIRS_EXAMPLE`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from paperline.core.config import StrictModel
from paperline.core.requirements import pinned_requirements
from paperline.ml.training import TrainSettings
from paperline.project.interface import Evaluation, ProjectData, PyfuncSpec
from paperline.project.metrics import spearman_name, spearman_names


class FitSection(StrictModel):
    """One training job's settings (paperline.ml.training.fit)."""

    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=2)
    learning_rate: float = Field(2e-5, gt=0)  # SBERT's value for fine-tuning a BERT-size encoder
    warmup_ratio: float = Field(0.1, ge=0, lt=1)  # linear warm-up over this fraction of the steps
    max_rows: int | None = Field(None, ge=2)  # cap on training rows, for smoke runs
    max_steps: int = -1  # > 0 caps the optimizer steps, for smoke runs
    checkpoint_every: int = Field(100, ge=1)  # a killed job loses at most this many steps
    device: str = "auto"  # auto: CUDA, then MPS, then the CPU
    # batches of similar lengths: less padding (paperline.ml.batching); 1.38x on a CPU at -0.15 STS-B Spearman
    # over three seeds (docs/benchmarks.md (a)); `group_pool_batches`: batches per length-sorted pool
    group_by_length: bool = False
    group_pool_batches: int = Field(50, ge=1)
    # ids from the token cache, tokenized once per dataset version and tokenizer (paperline.ml.token_cache)
    token_cache: bool = True
    compile: bool = False  # torch.compile on CUDA (minutes of compilation first); ignored on a CPU
    # > 1: the train step runs under `torchrun --standalone` with this many processes (DDP; nccl on CUDA, gloo on
    # the CPU); `batch_size` is then per process. `auto`: one per CUDA device (1 without CUDA). Only methods
    # that declare RANK_SAFE = True accept it (paperline.project.distributed_job).
    nproc_per_node: Annotated[int, Field(ge=1)] | Literal["auto"] = 1

    def settings(self, output_dir: Path, seed: int, progress: bool = True, **extra: Any) -> TrainSettings:
        """The `TrainSettings` of this section; `extra` passes what only the method knows (a learning-rate
        mapping for a new head, say)."""
        return TrainSettings(
            output_dir=Path(output_dir), epochs=self.epochs, batch_size=self.batch_size,
            learning_rate=self.learning_rate, warmup_ratio=self.warmup_ratio, seed=seed,
            checkpoint_every=self.checkpoint_every, max_steps=self.max_steps, device=self.device,
            progress=progress, group_by_length=self.group_by_length,
            group_pool_batches=self.group_pool_batches, token_cache=self.token_cache, compile=self.compile,
            **extra,
        )


class EvaluateSection(StrictModel):
    """Held-out splits scored by `evaluate`, and the baseline scored beside them."""

    dataset: str = "stsb"
    splits: list[str] = ["dev", "test"]
    baseline: bool = True  # also score the untrained base model: the zero-shot number the paper starts from
    max_rows: int | None = Field(None, ge=2)  # cap on evaluation rows, for smoke runs
    batch_size: int = Field(64, ge=1)

    def rows(self, data: ProjectData) -> dict[str, list]:
        """Split -> rows (capped at `max_rows`), in the order of `splits`."""
        return {split: data.read(self.dataset, split, self.max_rows) for split in self.splits}

    # arms scored beside the model under their own prefix (`guided_stsb_test_spearman`), for a method's subclass
    arms: ClassVar[tuple[str, ...]] = ()

    def metric_name(self, split: str, prefix: str = "") -> str:
        return spearman_name(self.dataset, split, prefix)

    def prefixes(self) -> list[str]:
        """The model's own names (""), the baseline's and every arm's."""
        return ["", *(["baseline"] if self.baseline else []), *self.arms]

    def metric_names(self) -> set[str]:
        """`stsb_dev_spearman`, `stsb_test_spearman` and, with the baseline, `baseline_stsb_*_spearman`."""
        return spearman_names(self.dataset, self.splits, self.prefixes())

    def baseline_metrics(self, base_model: str, splits: dict[str, list]) -> dict[str, float]:
        """With `baseline` on, the untrained base encoder's cosine Spearman on the same rows
        (`baseline_stsb_test_spearman`); else nothing."""
        if not self.baseline:
            return {}
        from paperline.ml.evaluation import sts_metrics
        from paperline.ml.models import load_sentence_transformer

        return sts_metrics(load_sentence_transformer(base_model), splits, prefix=f"baseline_{self.dataset}")


def sts_evaluation(model_path: Path, cfg: Any, data: ProjectData, backend: str = "torch") -> Evaluation:
    """STS Spearman x100 of the sentence encoder at `model_path` on `cfg.evaluate`'s splits (an `EvaluateSection`)
    and, with its baseline on, of the untrained `cfg.base_model` on the same rows (`baseline_` names), with each
    split's predictions. `backend` onnx / onnx-int8 scores with ONNX Runtime where it keeps dev Spearman within
    0.1 of PyTorch's (checked once per model; the export and check of the base model are cached after the first
    run); the tags `<prefix>_encode_*` say which backend scored."""
    from sentence_transformers import SentenceTransformer

    from paperline.ml.evaluation import sts_backend_results
    from paperline.ml.models import load_sentence_transformer, resolve_model_path

    e = cfg.evaluate
    splits = e.rows(data)
    metrics, predictions, tags = sts_backend_results(SentenceTransformer(str(model_path)), model_path, splits,
                                                     e.dataset, backend)
    if e.baseline:
        base_metrics, _, base_tags = sts_backend_results(load_sentence_transformer(cfg.base_model),
                                                         resolve_model_path(cfg.base_model), splits,
                                                         f"baseline_{e.dataset}", backend)
        metrics.update(base_metrics)
        tags.update(base_tags)
    return Evaluation(metrics=metrics, predictions=predictions, tags=tags)


def scored_pairs_dataset(rows: list, max_rows: int | None = None, **extra_columns: list):
    """Scored pairs as the `datasets.Dataset` sentence-transformers' trainer takes: sentence1, sentence2 and
    score / 5 (a similarity in [0, 1], what CoSENT, cosine and cross-encoder losses compare against). Extra
    columns (a teacher's label, say) are added as given; `max_rows` keeps the first rows."""
    from datasets import Dataset

    rows = rows[:max_rows] if max_rows else rows
    columns = {"sentence1": [r.sentence1 for r in rows], "sentence2": [r.sentence2 for r in rows],
               "score": [r.score / 5.0 for r in rows]}
    columns.update({name: values[: len(rows)] for name, values in extra_columns.items()})
    return Dataset.from_dict(columns)


# One request of each shape a paperline pyfunc serves (the model's `predict` type hint says which): MLflow stores
# it with the model as its input and serving example.
SENTENCES_EXAMPLE = ["A man is playing a guitar.", "A woman is slicing an onion."]
PAIRS_EXAMPLE = [["A man is playing a guitar.", "A person plays music."],
                 ["A woman is slicing an onion.", "A dog runs on the beach."]]


def pyfunc_spec(python_model: Path, artifacts: dict[str, Path], packages: list[str],
                code_paths: list[Path] | None = None, metadata: dict[str, Any] | None = None,
                input_example: list | None = None) -> PyfuncSpec:
    """A `PyfuncSpec` whose requirements pin `packages` at the versions installed here (torch 2.13.0+cpu ->
    torch==2.13.0), so `mlflow models serve` builds the environment the model was tested in; `input_example`
    (`SENTENCES_EXAMPLE` or `PAIRS_EXAMPLE`) is logged with the model."""
    return PyfuncSpec(python_model=Path(python_model), artifacts=dict(artifacts),
                      pip_requirements=pinned_requirements(packages), code_paths=list(code_paths or []),
                      metadata=dict(metadata or {}), input_example=input_example)
