"""The method contract, checked: a project's card, configs and `method.py` against the interface's Protocols.

Checked when a project is discovered (`Project.problems`), so `paperline ls` lists a broken project with the
reason and `paperline run` refuses it in one line; checked again on every run's result (`check_evaluation`), so
a method cannot declare metrics it does not report.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Protocol

from paperline.core.config import ProjectConfig
from paperline.core.errors import PaperlineError
from paperline.project.card import SUITE_METRICS, MethodCard
from paperline.project.interface import (
    ContractError,
    Evaluation,
    GeneratingMethod,
    TrainedMethod,
    TrainingFreeMethod,
)


class Project(Protocol):
    """What the checks read of a discovered project (`paperline.project.discovery.Project`, which calls them:
    this module does not import discovery)."""

    name: str
    card: MethodCard | None
    card_error: str | None

    @property
    def configs(self) -> list[str]: ...

    def method(self) -> ModuleType: ...

    def load_config(self, config_name: str = "default", overrides: list[str] | None = None) -> ProjectConfig: ...


def _parameters(function) -> list[str]:
    params = list(inspect.signature(function).parameters.values())
    return [p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def check_method(module) -> list[str]:
    """Problems of a method module against `TrainedMethod` / `TrainingFreeMethod`; [] when it satisfies one."""
    problems = []
    config = getattr(module, "Config", None)
    if not (isinstance(config, type) and issubclass(config, ProjectConfig)):
        problems.append("method.py has no `Config` class (a subclass of paperline.core.config.ProjectConfig)")
    trains, prepares = callable(getattr(module, "train", None)), callable(getattr(module, "prepare", None))
    if trains and prepares:
        problems.append("method.py defines both `train` and `prepare`; a method trains or is training-free")
    elif not (trains or prepares):
        problems.append("method.py has neither `train` (TrainedMethod) nor `prepare` (TrainingFreeMethod)")
    protocol = TrainingFreeMethod if prepares and not trains else TrainedMethod
    for name in ("train" if protocol is TrainedMethod else "prepare", "evaluate"):
        function = getattr(module, name, None)
        if function is None:
            if name == "evaluate":
                problems.append("method.py has no `evaluate(model, cfg, data, ctx)`")
            continue
        expected, found = _parameters(getattr(protocol, name)), _parameters(function)
        if found != expected:
            problems.append(f"`{name}` takes ({', '.join(found)}), the contract is ({', '.join(expected)})")
    generate = getattr(module, "generate", None)
    if generate is not None:
        if not (callable(generate) and trains):
            problems.append("`generate` writes training data, so it belongs to a method with `train`")
        elif (found := _parameters(generate)) != (expected := _parameters(GeneratingMethod.generate)):
            problems.append(f"`generate` takes ({', '.join(found)}), the contract is ({', '.join(expected)})")
    return problems


def check_project(project: Project) -> list[str]:
    """Every problem of a project folder: card, method, configs, data kinds and metric names."""
    from paperline.data.kinds import UnknownKindError, get_kind

    if project.card_error:
        return [project.card_error]
    card = project.card
    problems = []
    for need in card.data:
        try:
            get_kind(need.kind)
        except UnknownKindError as error:
            problems.append(f"project.yaml, dataset '{need.dataset}': {error}")
    try:
        module = project.method()
    except PaperlineError as error:
        return problems + [str(error)]
    except Exception as error:  # a method that does not import is broken; say how, in one line
        return problems + [f"method.py does not import ({type(error).__name__}: {str(error).splitlines()[0]})"]
    problems += check_method(module)
    if problems:
        return problems
    if "default" not in project.configs:
        problems.append("configs/default.yaml is missing (`paperline run` uses it when --config is not given)")
    for reference in card.reference_results:
        if reference.config not in project.configs:
            problems.append(f"reference result for '{reference.metric}' names config '{reference.config}', "
                            f"which does not exist")
    for name in project.configs:
        problems += _config_problems(project, name)
    return problems


def _config_problems(project: Project, name: str) -> list[str]:
    card = project.card
    try:
        cfg = project.load_config(name)
    except PaperlineError as error:
        return [str(error)]
    problems = []
    for dataset, use in cfg.data.items():
        kind = card.kind_of(dataset)
        if kind is None:
            problems.append(f"config {name}: dataset '{dataset}' is not in the card's `data:`")
        elif kind != use.kind:
            problems.append(f"config {name}: dataset '{dataset}' is read as '{use.kind}', the card says '{kind}'")
    declared = cfg.metric_names()
    # A `compare: sts` card may also name the suite's metrics: the comparison measures them, not `evaluate`.
    measured = declared | (set(SUITE_METRICS) if card.compare == "sts" else set())
    wanted = {card.primary_metric.name} | {r.metric for r in card.reference_results if r.config == name}
    missing = sorted(wanted - measured)
    if missing:
        problems.append(f"config {name}: Config.metric_names() does not include {', '.join(missing)} "
                        f"(the card's primary metric and reference results; it names: "
                        f"{', '.join(sorted(declared)) or 'nothing'})")
    return problems


def check_evaluation(project: Project, cfg: ProjectConfig, evaluation: Evaluation) -> None:
    """The metrics a run reports must include the ones its config declares (and so the card's)."""
    missing = sorted(cfg.metric_names() - set(evaluation.metrics))
    if missing:
        raise ContractError(f"{project.name}'s evaluate did not report {', '.join(missing)}, which its "
                            "Config.metric_names() declares; fix evaluate or the declaration")
