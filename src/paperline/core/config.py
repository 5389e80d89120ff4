"""Experiment configs: YAML files, `key=value` overrides, and schema validation.

A config is data. Each project declares its schema as a pydantic model that subclasses `ProjectConfig`
(unknown keys are errors, types are checked), so a typo in a YAML file or on the command line stops the
run before any work with one line naming the key and the valid choices.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paperline.core.errors import UsageError, yaml_problem


class ConfigError(UsageError, ValueError):
    """A config file or override that cannot be used; the message says what to fix."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetUse(StrictModel):
    """One dataset a project reads: its data kind and the splits it needs (all of them go through the gate).

    `allow_shrink: true` says that a new version of the dataset is meant to be smaller: the gate then accepts a
    split that lost more of its rows, against the last version that passed the gate, than the data kind allows
    (`max_shrink_fraction`, 20% by default). Leave it off otherwise: a split cut short by a broken export still
    parses, trains and looks fine. The card's `min_rows` floors apply either way.
    """

    kind: str
    splits: list[str]
    allow_shrink: bool = False


class UpstreamUse(StrictModel):
    """A registered model a project consumes (a teacher to distil, say), found in the registry by alias.

    When `model` has no version with `alias`, the flow first runs `project` with `config` (and `overrides`),
    which registers it.
    """

    project: str
    config: str = "default"
    overrides: list[str] = Field(default_factory=list)
    model: str | None = None  # registered model name; default: the upstream config's model_name, else its project
    alias: str = "champion"


class ProjectConfig(StrictModel):
    """Keys every project config has; projects subclass this with their own sections."""

    # The card's base model and datasets: a project's config loader fills both from its `project.yaml` where the
    # config does not set them (paperline.project.card.MethodCard.fill_config); a config sets one only to differ.
    base_model: str = ""
    seed: int = 0
    data: dict[str, DatasetUse] = Field(default_factory=dict)
    model_name: str | None = None  # registered model name; default: the project name
    upstream: dict[str, UpstreamUse] = Field(default_factory=dict)  # role -> registered model consumed

    def metric_names(self) -> set[str]:
        """The headline metrics `evaluate` reports under this config; the card's primary metric and reference
        results must be among them (checked when projects are discovered, and again on every run's result).

        By default, those of an `evaluate` section that can name them (`paperline.project.sections.EvaluateSection`);
        a method whose evaluation is shaped otherwise overrides this in its `Config`.
        """
        evaluate = getattr(self, "evaluate", None)
        return set(evaluate.metric_names()) if hasattr(evaluate, "metric_names") else set()


C = TypeVar("C", bound=ProjectConfig)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `train.epochs=2` into (["train", "epochs"], 2); the value is parsed as YAML (2 -> int, x -> str)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' is not key=value; write it like train.epochs=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': the value is not valid YAML ({exc.problem})") from None
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each `a.b.c=value` set; list items are addressed by index (stages.0.epochs)."""
    data = json.loads(json.dumps(raw))  # deep copy of plain YAML data
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                node = node[_list_index(node, part, path[: i + 1], text)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override '{text}': '{'.'.join(path[: i + 1])}' is a value, not a section")
        last = path[-1]
        if isinstance(node, list):
            node[_list_index(node, last, path, text)] = value
        else:
            node[last] = value
    return data


def _list_index(node: list, part: str, path: list[str], text: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override '{text}': '{'.'.join(path)}' needs an index below {len(node)}")
    return int(part)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:  # a `!!python/object` tag included: configs are plain data (safe_load)
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(exc)}; configs hold plain data (no tags)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys at the top level")
    return data


def validate(schema: type[C], raw: dict[str, Any], source: str) -> C:
    """Validate `raw` against `schema`, turning pydantic's report into one line per problem."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{where}'{_valid_keys_hint(schema, err['loc'])}")
            elif err["type"] == "missing":
                problems.append(f"'{where}' is required")
            else:
                problems.append(f"'{where}': {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"config {source}: " + "; ".join(problems)) from None


def _valid_keys_hint(schema: type[BaseModel], loc: tuple) -> str:
    """Name the keys that are valid next to an unknown one, so the user sees the typo."""
    model: Any = schema
    for part in loc[:-1]:
        if isinstance(part, int) or not hasattr(model, "model_fields"):
            model = _item_model(model)  # a list or dict item: step into its element type
            if isinstance(part, int):
                continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        model = field.annotation
    keys = sorted(getattr(_item_model(model), "model_fields", {}))
    return f" (valid keys here: {', '.join(keys)})" if keys else ""


def _item_model(annotation: Any) -> Any:
    """`list[Stage]`, `dict[str, Stage]` or `Stage | None` -> Stage; anything else unchanged."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in get_args(annotation):
        if hasattr(arg, "model_fields"):
            return arg
    return annotation


def load_config(path: Path, schema: type[C], overrides: list[str] | None = None,
                fill: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> C:
    """Read a YAML config, fill what it leaves to its project (`fill`: the method card's datasets and base model,
    paperline.project.card), apply `key=value` overrides, and validate it against the project's schema."""
    raw = read_yaml(path)
    raw = apply_overrides(fill(raw) if fill else raw, overrides or [])
    return validate(schema, raw, f"{path.parent.parent.name}/{path.stem}")


def config_digest(config: BaseModel) -> str:
    """A stable hash of the resolved config (key order does not matter)."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def flatten(config: BaseModel | dict, prefix: str = "") -> dict[str, str]:
    """`{"train": {"epochs": 1}}` -> `{"train.epochs": "1"}`, the shape MLflow params want."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{name}.{i}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return flat
