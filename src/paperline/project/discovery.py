"""Projects: one folder per paper method, found by its `project.yaml` (no central list to edit).

A project folder holds its method card (`project.yaml`), its configs (`configs/*.yaml`) and its method
(`method.py`, a module satisfying `paperline.project.interface.TrainedMethod` or `TrainingFreeMethod`). The folder
is imported as the package `paperline_projects.<name>` (`project_package`), so method.py reaches its sibling
files with relative imports (`from . import dse`), as editors and type checkers follow them. Every project is
found; one that breaks the contract is kept with its `problems` (`paperline ls` shows them), and `get_project`
refuses it with one line, so a broken method costs a second, not a run.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import CodeType, ModuleType
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


# ---- a project folder as a package: paperline_projects.<name> ------------------------------------------------

PACKAGE = "paperline_projects"
_REGISTERING = threading.RLock()  # threads of one worker (a thread-pool task runner) make a package once


class _FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles a project file from its source every time it is imported, never from `__pycache__`: a file
    rewritten within the same second at the same size would otherwise pass the bytecode check and run stale."""

    def get_code(self, fullname: str) -> CodeType:
        return self.source_to_code(self.get_data(self.path), self.path)


class _ProjectFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of a project package (`from . import dse` in method.py) in its folder."""

    def find_spec(self, fullname: str, path=None, target=None):
        parent, _, leaf = fullname.rpartition(".")
        if not parent.startswith(f"{PACKAGE}.") or parent.count(".") != 1:
            return None  # not a file directly inside a project folder: the usual finders look
        for folder in path or []:
            file = Path(folder) / f"{leaf}.py"
            if file.is_file():
                return importlib.util.spec_from_file_location(fullname, file,
                                                              loader=_FreshSourceLoader(fullname, str(file)))
        return None


def project_package(root: Path) -> str:
    """Make the project folder `root` importable as the package `paperline_projects.<folder name>` and return
    that name; its files then import each other with ordinary relative imports (`from .dse import DSELoss`).

    The package is made again, dropping every module imported from it, when one of its .py files changed since it
    was made (or when it now names another folder, a copy of the project elsewhere): a long-lived worker handed an
    edited method.py runs the new one, which is what the cache key (the files' digest) says it ran.
    """
    root = Path(root).resolve()
    name = f"{PACKAGE}.{root.name}"
    digest = digest_files(root, "*.py")
    with _REGISTERING:
        package = sys.modules.get(name)
        if package is None or list(getattr(package, "__path__", [])) != [str(root)] \
                or getattr(package, "__digest__", None) != digest:
            _make_package(root, name, digest)
    return name


def _make_package(root: Path, name: str, digest: str) -> None:
    if not any(isinstance(finder, _ProjectFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ProjectFinder())
    parent = sys.modules.get(PACKAGE)
    if parent is None:  # a namespace for the projects: it finds nothing itself, each project is registered
        parent = sys.modules[PACKAGE] = ModuleType(PACKAGE, "Every discovered project, as a package of its own.")
        parent.__path__ = []
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(root)]
    package = importlib.util.module_from_spec(spec)
    package.__digest__ = digest
    sys.modules[name] = package
    setattr(parent, root.name, package)
    importlib.invalidate_caches()


def register_projects(projects_dir: Path) -> list[str]:
    """Every project under `projects_dir` as a package (`paperline_projects.<name>`), so that tests and tools
    import a project's files by the same ordinary names the project uses."""
    return [project_package(card.parent) for card in sorted(Path(projects_dir).glob("*/project.yaml"))]


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
        """`paperline_projects.<name>.method`, imported again when a file of the project changed."""
        if not (self.root / "method.py").is_file():
            raise ProjectError(f"project '{self.name}' has no method.py in {self.root}")
        return importlib.import_module(f"{project_package(self.root)}.method")

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
        """The resolved config: its YAML, filled from the card (datasets, base model), with the overrides."""
        fill = self.card.fill_config if self.card else None
        return load_config(self.config_path(config_name), self.method().Config, overrides, fill=fill)

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
