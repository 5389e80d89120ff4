"""The contract between a paper method and the platform, as types.

A project's `method.py` is a module that satisfies `TrainedMethod` (it trains) or `TrainingFreeMethod` (it builds
a servable model without training). These are `Protocol`s, as in torchtune's `recipe_interfaces.py`: a structure
a module has, not a base class to inherit code from. `paperline.project.contract` checks a module against them
when projects are discovered, so a broken method is listed as broken, with the reason, before any run.

What crosses the boundary is typed:

- in: the resolved `Config` (a `ProjectConfig` subclass the method declares), `ProjectData` (typed rows per
  dataset and split, at their DVC version) and a `RunContext` (where to write, whether to show progress, the
  upstream models consumed);
- out of `train`/`prepare`: a `TrainedModel` (a folder, a flavor from a closed set, an optional `PyfuncSpec`
  for serving, training metrics for the run, and named outputs that `evaluate` reads back);
- out of `evaluate`: an `Evaluation` (metrics, artifacts, tables, tags).

Nothing here imports Prefect, MLflow, DVC or GX: a method can be run and tested without the orchestration stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from paperline.core.config import ProjectConfig
from paperline.core.errors import PaperlineError
from paperline.data.datasets import DatasetRef, read_split

Flavor = Literal["sentence_transformers", "pyfunc"]
FLAVORS: tuple[str, ...] = get_args(Flavor)


class ContractError(PaperlineError, LookupError):
    """A method broke the contract (a wrong flavor, a missing output or metric); the message names what."""


@dataclass(frozen=True)
class PyfuncSpec:
    """How MLflow logs a model as a pyfunc: a models-from-code file (no pickles), its artifacts, the code it
    imports and the pinned requirements a serving environment installs. Build it with
    `paperline.project.sections.pyfunc_spec`, which pins the requirements from this environment."""

    python_model: Path
    artifacts: dict[str, Path]
    pip_requirements: list[str]
    code_paths: list[Path] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    # What one request looks like (`PAIRS_EXAMPLE`, `SENTENCES_EXAMPLE` in paperline.project.sections): MLflow
    # stores it with the model and shows it as the serving example; the input schema comes from the type hint
    # of the model's `predict` (`list[list[str]]`), which refuses anything else (an integer) at serving time.
    input_example: list | None = None

    def log_model_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `mlflow.pyfunc.log_model` (besides the model's name)."""
        return {"python_model": str(self.python_model), "artifacts": {k: str(v) for k, v in self.artifacts.items()},
                "code_paths": [str(p) for p in self.code_paths] or None, "pip_requirements": self.pip_requirements,
                "metadata": self.metadata, "input_example": self.input_example}


@dataclass
class TrainedModel:
    """What `train` or `prepare` returns.

    - `path`: the model folder (for `sentence_transformers`, what `SentenceTransformer(path)` loads);
    - `flavor`: how it is logged and served, one of `FLAVORS`; a `pyfunc` needs `serving`;
    - `metrics`: numbers about training (steps, seconds, loss) that the run logs next to the evaluation's;
    - `notes`: short facts about training (device, precision, a chosen setting) the run records as tags;
    - `outputs`: named files or folders that `evaluate` reads back (a baseline model, a search log): the only
      state handed from `train` to `evaluate`, so a cached `train` result is enough to evaluate again;
    - `history`: the learning curve, [{"step", "epoch", "loss", "learning_rate", "fit"}], filled by the platform
      from every `paperline.ml.training.fit` of the job (`Project.build_model`): a method sets nothing.
    """

    path: Path
    flavor: Flavor = "sentence_transformers"
    serving: PyfuncSpec | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.flavor not in FLAVORS:
            raise ContractError(f"TrainedModel flavor '{self.flavor}' is not one of {', '.join(FLAVORS)}")
        if self.flavor == "pyfunc" and self.serving is None:
            raise ContractError("a TrainedModel of flavor 'pyfunc' needs `serving=PyfuncSpec(...)`")
        if self.flavor != "pyfunc" and self.serving is not None:
            raise ContractError(f"`serving` is for pyfunc models; flavor '{self.flavor}' is logged by its own flavor")
        bad = {k: v for k, v in self.metrics.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
        if bad:
            raise ContractError(f"TrainedModel.metrics must be numbers; put {sorted(bad)} in `notes` or `outputs`")

    def output(self, name: str) -> Path:
        """A named output of `train`; one clear error when it was not produced."""
        if name not in self.outputs:
            raise ContractError(f"the trained model has no output '{name}' (has: {', '.join(self.outputs) or 'none'})")
        return Path(self.outputs[name])


@dataclass
class Evaluation:
    metrics: dict[str, float]
    artifacts: dict[str, Path] = field(default_factory=dict)  # name -> file (plot, report) to attach to the run
    tables: dict[str, dict[str, list]] = field(default_factory=dict)  # name -> columns, logged as MLflow tables
    tags: dict[str, str] = field(default_factory=dict)  # name -> text (a content hash, a chosen setting) for the run
    # name (`stsb_test`) -> {"gold": [...], "predicted": [...]}, one number per row: the run plots predicted vs
    # gold; plain lists, so a cached evaluation stays JSON-serialisable
    predictions: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class UpstreamModel:
    """A registered model a run consumes, resolved to one version: who it is, and a local copy of its files.

    `path` is the MLflow model folder as downloaded (its `MLmodel` file and artifacts); `cache_key` is the
    `paperline.cache_key` tag of that version, which identifies what produced it.
    """

    role: str  # the key under `upstream:` in the config, e.g. "teacher"
    project: str
    name: str  # registered model name
    alias: str
    version: str
    run_id: str | None
    cache_key: str | None
    path: Path

    def identity(self) -> str:
        """What a consuming run's cache key covers: the version, and the cache key that produced it."""
        return f"{self.name}@v{self.version}:{self.cache_key or self.run_id}"

    def tags(self) -> dict[str, str]:
        """The lineage a consuming run records (MLflow run and model version tags)."""
        prefix = f"paperline.upstream.{self.role}"
        return {f"{prefix}.project": self.project, f"{prefix}.model": self.name, f"{prefix}.version": self.version,
                f"{prefix}.alias": self.alias, f"{prefix}.run_id": self.run_id or ""}

    def record(self) -> dict[str, str | None]:
        return {"project": self.project, "model": self.name, "version": self.version, "alias": self.alias,
                "run_id": self.run_id, "cache_key": self.cache_key}


@dataclass(frozen=True)
class GeneratedData:
    """A dataset a method writes before it trains (an LM's triplets), returned by its `generate`.

    `path` is one tab-separated file of data kind `kind` (read as split `split`). The platform treats it as a
    dataset version of its own: the data gate checks it under its kind, its sha256 is its version (an MLflow
    dataset input with that digest) and enters the training cache key, so a new generation retrains and an
    unchanged one is a cache hit. `sha256` is filled by the platform once the file passed the gate.
    """

    name: str
    kind: str
    path: Path
    split: str = "train"
    sha256: str | None = None

    def rows(self) -> list:
        """The file's typed rows (the data kind's row type)."""
        from paperline.data.datasets import read_frame
        from paperline.data.kinds import get_kind

        return get_kind(self.kind).rows(read_frame(Path(self.path), self.kind))


@dataclass
class RunContext:
    """Where a method may write (its checkpoints and outputs), how it should report progress, the upstream
    models it consumes, by role, and the gated data its `generate` wrote, by name."""

    workdir: Path
    progress: bool = True
    upstream: dict[str, UpstreamModel] = field(default_factory=dict)
    generated: dict[str, GeneratedData] = field(default_factory=dict)

    def upstream_model(self, role: str) -> UpstreamModel:
        if role not in self.upstream:
            raise ContractError(f"this run has no upstream model '{role}'; name it under `upstream:` in the config "
                                f"(have: {', '.join(self.upstream) or 'none'})")
        return self.upstream[role]

    def generated_data(self, name: str) -> GeneratedData:
        if name not in self.generated:
            raise ContractError(f"this run has no generated dataset '{name}': `generate` returns it and the platform "
                                f"gates it before `train` (have: {', '.join(self.generated) or 'none'})")
        return self.generated[name]


@dataclass
class ProjectData:
    """The datasets of a run: `data.read("stsb", "train")` gives typed rows.

    A run reads them at their DVC version (`refs`); rows given in memory (`ProjectData.from_rows`, for a test or
    a notebook) are read the same way.
    """

    refs: dict[str, DatasetRef] = field(default_factory=dict)
    rows: dict[str, dict[str, list]] = field(default_factory=dict)  # dataset -> split -> typed rows

    @classmethod
    def from_rows(cls, rows: dict[str, dict[str, list]]) -> ProjectData:
        """Typed rows in memory by dataset and split: `ProjectData.from_rows({"stsb": {"test": [ScoredPair(...)]}})`."""
        return cls(rows={dataset: dict(splits) for dataset, splits in rows.items()})

    def read(self, dataset: str, split: str, max_rows: int | None = None) -> list:
        if dataset in self.rows:
            if split not in self.rows[dataset]:
                raise ContractError(f"dataset '{dataset}' has no split '{split}' here "
                                    f"(have: {', '.join(self.rows[dataset]) or 'none'})")
            rows = list(self.rows[dataset][split])
        elif dataset in self.refs:
            rows = read_split(self.refs[dataset], split)
        else:
            raise ContractError(f"dataset '{dataset}' is not under `data:` in the config "
                                f"(have: {', '.join([*self.refs, *self.rows]) or 'none'})")
        return rows[:max_rows] if max_rows else rows


# ---- the method interface ----------------------------------------------------------------------------------


class _Method(Protocol):
    """What every method module has.

    `Config` is its config schema, a `ProjectConfig` subclass; `Config.metric_names()` names the headline metrics
    `evaluate` reports for a config, which must include the card's primary metric and reference results.
    """

    Config: type[ProjectConfig]

    def evaluate(self, model: TrainedModel, cfg: Any, data: ProjectData, ctx: RunContext) -> Evaluation: ...


class TrainedMethod(_Method, Protocol):
    """A method that trains: `train` writes its checkpoints under `ctx.workdir` and returns the trained model.

    A config's `nproc_per_node` > 1 runs `train` on every rank of a torchrun (`paperline.project.distributed_job`);
    a method accepts that only when its module declares `RANK_SAFE = True`, and then writes its own files with
    `paperline.ml.ranks.save_on_main` (rank 0 writes, every rank waits).
    """

    def train(self, cfg: Any, data: ProjectData, ctx: RunContext) -> TrainedModel: ...


class GeneratingMethod(TrainedMethod, Protocol):
    """A method that writes its own training data first (an LM generating NLI triplets).

    `generate` runs before `train`, in a run-independent folder under `ctx.workdir` (it may resume there after a
    kill and reuse a finished file); it returns the files it wrote. The platform gates each under its data kind,
    logs it as an MLflow dataset input whose digest is its sha256, and keys the training cache on that digest;
    `train` reads them from `ctx.generated`.
    """

    def generate(self, cfg: Any, data: ProjectData, ctx: RunContext) -> list[GeneratedData]: ...


class TrainingFreeMethod(_Method, Protocol):
    """A method with no training: `prepare` builds the servable model (a dev search, a wrapper) and returns it."""

    def prepare(self, cfg: Any, data: ProjectData, ctx: RunContext) -> TrainedModel: ...
