"""Projects: one folder per paper method, found by its `project.yaml` (no central list to edit).

A project folder holds its method card (`project.yaml`), its configs (`configs/*.yaml`) and its method
(`method.py`), which exposes:

- `Config`: a pydantic schema, subclass of `paperline.config.ProjectConfig`, for its configs;
- `train(cfg, data, ctx) -> TrainedModel`, or, for a training-free method, `prepare(cfg, data, ctx) ->
  TrainedModel` (builds the servable model without training);
- `evaluate(model, cfg, data, ctx) -> Evaluation`.

A `TrainedModel` of flavor `sentence_transformers` is a folder `SentenceTransformer(path)` loads; one of flavor
`pyfunc` carries in `info["pyfunc"]` the keyword arguments for `mlflow.pyfunc.log_model` (python_model as a
models-from-code file, artifacts, code_paths, pip_requirements).

A project that consumes another project's registered model (a teacher, say) names it under `upstream:` in its
config (`paperline.config.UpstreamUse`); the flow resolves it before training and hands it to the method as
`ctx.upstream[role]`, an `UpstreamModel` with a local copy of the model (see paperline.upstream).

Flows only ever call these three names, so a new paper plugs in without touching the flows.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import Field

from paperline.config import ConfigError, ProjectConfig, StrictModel, load_config, read_yaml, validate
from paperline.data import DatasetRef, read_split
from paperline.errors import PaperlineError


class ProjectError(PaperlineError, LookupError):
    """An unknown project or a malformed project folder; the message says what exists."""


# ---- the method card -------------------------------------------------------------------------------------


class Paper(StrictModel):
    title: str
    arxiv: str | None = None
    venue: str | None = None
    bibtex: str


class ReferenceImplementation(StrictModel):
    url: str
    commit: str | None = None


class DataNeed(StrictModel):
    dataset: str
    kind: str


class PrimaryMetric(StrictModel):
    name: str
    greater_is_better: bool = True


class ReferenceResult(StrictModel):
    metric: str
    value: float
    tolerance: float
    provenance: str  # "paper Table N" or "our run <mlflow run id> on <hardware>"
    config: str = "default"


class MethodCard(StrictModel):
    name: str
    title: str
    paper: Paper
    papers: list[Paper] = Field(default_factory=list)  # further papers a config reproduces
    reference_implementation: ReferenceImplementation | None = None
    data: list[DataNeed]
    base_model: str
    primary_metric: PrimaryMetric
    reference_results: list[ReferenceResult] = Field(default_factory=list)
    deviations: list[str] = Field(default_factory=list)
    status: str = Field(pattern="^(experimental|stable)$")


# ---- what a method returns ---------------------------------------------------------------------------------


@dataclass
class TrainedModel:
    """A saved model folder and how to load it (`sentence_transformers` or `pyfunc`)."""

    path: Path
    flavor: str = "sentence_transformers"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    artifacts: dict[str, Path] = field(default_factory=dict)  # name -> file (plot, report) to attach to the run
    tables: dict[str, dict[str, list]] = field(default_factory=dict)  # name -> columns, logged as MLflow tables
    tags: dict[str, str] = field(default_factory=dict)  # name -> text (a content hash, a chosen setting) for the run


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


@dataclass
class RunContext:
    """Where a method may write (its checkpoints and outputs), how it should report progress, and the
    upstream models it consumes, by role."""

    workdir: Path
    progress: bool = True
    upstream: dict[str, UpstreamModel] = field(default_factory=dict)

    def upstream_model(self, role: str) -> UpstreamModel:
        if role not in self.upstream:
            raise ProjectError(f"this run has no upstream model '{role}'; name it under `upstream:` in the config "
                               f"(have: {', '.join(self.upstream) or 'none'})")
        return self.upstream[role]


@dataclass
class ProjectData:
    """The datasets of a run at their DVC version: `data.read("stsb", "train")` gives typed rows."""

    refs: dict[str, DatasetRef]

    def read(self, dataset: str, split: str):
        return read_split(self.refs[dataset], split)


# ---- discovery -----------------------------------------------------------------------------------------------


def project_module(path: Path) -> ModuleType:
    """Import a project's file (method.py, or a sibling it uses) once, as `paperline_projects.<project>.<stem>`.

    Projects are folders, not packages: this gives each file a private, stable module name, so a project's
    method.py reaches its siblings with `project_module(Path(__file__).with_name("dse.py"))`.
    """
    path = Path(path).resolve()
    module_name = f"paperline_projects.{path.parent.name}.{path.stem}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]  # a failed import must not leave a half-made module behind
            raise
    return sys.modules[module_name]


@dataclass
class Project:
    name: str
    root: Path
    card: MethodCard

    @property
    def configs(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "configs").glob("*.yaml"))

    def method(self) -> ModuleType:
        """Import `method.py` under a private module name (projects are folders, not packages)."""
        if not (self.root / "method.py").is_file():
            raise ProjectError(f"project '{self.name}' has no method.py in {self.root}")
        return project_module(self.root / "method.py")

    def config_path(self, config_name: str) -> Path:
        path = self.root / "configs" / f"{config_name}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"project '{self.name}' has no config '{config_name}'; choose one of: {', '.join(self.configs)}"
            )
        return path

    def load_config(self, config_name: str = "default", overrides: list[str] | None = None) -> ProjectConfig:
        schema = getattr(self.method(), "Config", ProjectConfig)
        return load_config(self.config_path(config_name), schema, overrides)

    def source_digest(self) -> str:
        """Hash of every file in the project folder, so a code or card change invalidates cached results."""
        return digest_files(self.root)

    @property
    def trains(self) -> bool:
        return hasattr(self.method(), "train")


def digest_files(folder: Path, pattern: str = "*") -> str:
    """sha256 over the relative paths and bytes of the files under `folder`.

    Bytecode and markdown are left out: a README edit (say, a results table) cannot change a result.
    """
    sha = hashlib.sha256()
    for path in sorted(folder.rglob(pattern)):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".md"):
            sha.update(str(path.relative_to(folder)).encode())
            sha.update(path.read_bytes())
    return sha.hexdigest()


def discover(projects_dir: Path) -> dict[str, Project]:
    """Every folder under `projects_dir` that holds a project.yaml, by name."""
    found = {}
    for card_path in sorted(projects_dir.glob("*/project.yaml")):
        card = validate(MethodCard, read_yaml(card_path), f"{card_path.parent.name}/project.yaml")
        if card.name != card_path.parent.name:
            raise ProjectError(f"{card_path}: name '{card.name}' must match its folder '{card_path.parent.name}'")
        found[card.name] = Project(name=card.name, root=card_path.parent, card=card)
    return found


def get_project(projects_dir: Path, name: str) -> Project:
    projects = discover(projects_dir)
    if name not in projects:
        known = ", ".join(projects) or "none"
        raise ProjectError(f"unknown project '{name}'; known projects: {known} (see `paperline ls`)")
    return projects[name]
