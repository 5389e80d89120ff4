"""Projects: one folder per paper method, found by its `project.yaml` (no central list to edit).

A project folder holds its method card (`project.yaml`), its configs (`configs/*.yaml`) and its method
(`method.py`, a module satisfying `paperline.project.interface.TrainedMethod` or `TrainingFreeMethod`). Every
project is found; one that breaks the contract is kept with its `problems` (`paperline ls` shows them), and
`get_project` refuses it with one line, so a broken method costs a second, not a run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from paperline.core.config import ConfigError, ProjectConfig, load_config, read_yaml, validate
from paperline.core.errors import PaperlineError
from paperline.project.card import MethodCard

if TYPE_CHECKING:
    from paperline.project.interface import GeneratedData, ProjectData, RunContext, TrainedModel


class ProjectError(PaperlineError, LookupError):
    """An unknown project or a malformed project folder; the message says what exists."""

    exit_code = 2  # the user named something that does not exist (paperline.core.errors.USAGE)


class BrokenProjectError(ProjectError, ConfigError):
    """A project that breaks the method contract; the message lists why (exit 2, like any config error)."""


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
    card: MethodCard | None  # None when project.yaml does not validate (see `problems`)
    card_error: str | None = None

    @property
    def configs(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "configs").glob("*.yaml"))

    def method(self) -> ModuleType:
        """Import `method.py` under a private module name (projects are folders, not packages)."""
        if not (self.root / "method.py").is_file():
            raise ProjectError(f"project '{self.name}' has no method.py in {self.root}")
        return project_module(self.root / "method.py")

    def config_path(self, config_name: str) -> Path:
        """A config is a name from `configs/`, never a path: `--config ../../x` cannot read outside the project."""
        if not config_name or Path(config_name).name != config_name or config_name.startswith("."):
            raise ConfigError(f"--config takes a config name, not a path ('{config_name}'); "
                              f"choose one of: {', '.join(self.configs)}")
        path = self.root / "configs" / f"{config_name}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"project '{self.name}' has no config '{config_name}'; choose one of: {', '.join(self.configs)}"
            )
        return path

    def load_config(self, config_name: str = "default", overrides: list[str] | None = None) -> ProjectConfig:
        return load_config(self.config_path(config_name), self.method().Config, overrides)

    def source_digest(self) -> str:
        """Hash of every file in the project folder, so a code or card change invalidates cached results."""
        return digest_files(self.root)

    @property
    def trains(self) -> bool:
        return hasattr(self.method(), "train")

    def generates(self) -> bool:
        """Whether the method writes its own training data first (`GeneratingMethod.generate`)."""
        return callable(getattr(self.method(), "generate", None))

    def generate(self, cfg: ProjectConfig, data: ProjectData, runs_dir: Path, upstream: dict | None = None,
                 progress: bool = True) -> dict[str, GeneratedData]:
        """The method's `generate`, in the project's own folder under `runs_dir` (shared by its runs, so a killed
        generation resumes there), the files by name with their sha256 filled; one place for the flow (which
        gates them) and a local run (which does not)."""
        from dataclasses import replace

        from paperline.data.derived import sha256_file
        from paperline.project.interface import RunContext

        ctx = RunContext(workdir=Path(runs_dir) / f"{self.name}-generated", progress=progress,
                         upstream=upstream or {})
        return {g.name: replace(g, sha256=sha256_file(Path(g.path))) for g in self.method().generate(cfg, data, ctx)}

    def build_model(self, cfg: ProjectConfig, data: ProjectData, ctx: RunContext) -> TrainedModel:
        """The method's `train` (or `prepare`, for a training-free method), with the learning curve of every
        `fit` it ran put on the result (`TrainedModel.history`): one place, for the flow, a torchrun rank and a
        local run alike, so no method carries its curve by hand."""
        from paperline.ml.history import recording_history

        method = self.method()
        with recording_history() as history:
            model = method.train(cfg, data, ctx) if self.trains else method.prepare(cfg, data, ctx)
        if history and not model.history:
            model.history = history
        return model

    @cached_property
    def problems(self) -> list[str]:
        """Why this project breaks the contract; empty when it is sound (paperline.project.contract)."""
        from paperline.project.contract import check_project

        return check_project(self)

    def require_sound(self) -> Project:
        if self.problems:
            raise BrokenProjectError(f"project '{self.name}' is broken: {'; '.join(self.problems)} "
                                     "(fix projects/{0}/, see `paperline ls`)".format(self.name))
        return self


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
    """Every folder under `projects_dir` that holds a project.yaml, by name; a card that does not validate
    gives a project whose `problems` say why, not an error for every project."""
    found = {}
    for card_path in sorted(Path(projects_dir).glob("*/project.yaml")):
        name = card_path.parent.name
        try:
            card = validate(MethodCard, read_yaml(card_path), f"{name}/project.yaml")
        except ConfigError as error:
            found[name] = Project(name=name, root=card_path.parent, card=None, card_error=str(error))
            continue
        error = None if card.name == name else f"project.yaml: name '{card.name}' must match its folder '{name}'"
        found[name] = Project(name=name, root=card_path.parent, card=card, card_error=error)
    return found


def get_project(projects_dir: Path, name: str) -> Project:
    """The project called `name`, checked against the contract: unknown or broken is one clear error."""
    projects = discover(projects_dir)
    if name not in projects:
        known = ", ".join(projects) or "none"
        raise ProjectError(f"unknown project '{name}'; known projects: {known} (see `paperline ls`)")
    return projects[name].require_sound()
