"""Upstream models: a project consumes another project's registered model by alias, producing it first if missing.

A distillation student needs its teacher; a re-ranker needs its retriever. Rather than a path to some folder,
the consuming config names the model the way production does, by registry alias:

```yaml
upstream:
  teacher:                      # the role; the method reads ctx.upstream["teacher"]
    project: cross_encoder_sts  # the project whose flow produces it
    config: default             # ... with this config (and optional `overrides: [key=value, ...]`)
    alias: champion             # models:/<model>@champion; `model:` defaults to that config's model_name
```

Before training, the flow resolves every role (`find`): the version the alias points at now. When there is
none, the flow runs the upstream project's own flow first, as a subflow (teacher flow -> student flow), then
looks again; if the policy did not give that version the alias, the run stops with one line saying how to
promote one. The resolved version is downloaded once per version (`fetch`) and handed to the method as an
`UpstreamModel` (paperline.project.interface) in `RunContext.upstream`, so methods never talk to MLflow.

Lineage: the version's identity (`UpstreamModel.identity()`: name, version and the cache key that produced it)
is part of the consuming run's cache key, so a new champion upstream retrains downstream; its name, version,
alias and run are tags of the consuming MLflow run and of the model version it registers
(`paperline.upstream.<role>.*`), and go into the lineage store's record of the run.

Upstream graphs are checked for cycles before anything runs (`check_graph`). This module is plumbing (MLflow,
the registry): nothing in it changes a trained model, so it is not part of the library digest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paperline.core.config import ConfigError, ProjectConfig, UpstreamUse
from paperline.core.errors import PaperlineError
from paperline.project.discovery import get_project
from paperline.project.interface import UpstreamModel
from paperline.ops.tracking import tags


class UpstreamError(PaperlineError):
    """An upstream model that cannot be found or produced; the message says what to run or promote."""


def model_name(projects_dir: Path, use: UpstreamUse) -> str:
    """The registered name of an upstream model: `model` if given, else what its project's config registers."""
    if use.model:
        return use.model
    cfg = get_project(projects_dir, use.project).load_config(use.config, use.overrides)
    return cfg.model_name or use.project


def check_graph(projects_dir: Path, project: str, cfg: ProjectConfig, _path: tuple[str, ...] = ()) -> None:
    """Raise ConfigError if an upstream project (or config) is unknown or the upstream chain loops back."""
    here = (*_path, project)
    for role, use in cfg.upstream.items():
        if use.project in here:
            chain = " -> ".join((*here, use.project))
            raise ConfigError(f"upstream '{role}' makes a cycle ({chain}); a project cannot consume its own model")
        upstream_cfg = get_project(projects_dir, use.project).load_config(use.config, use.overrides)
        check_graph(projects_dir, use.project, upstream_cfg, here)


def find(client: Any, name: str, alias: str):
    """The ModelVersion that `name@alias` points at, or None if the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def fetch(client: Any, version: Any, role: str, use: UpstreamUse, cache_dir: Path) -> UpstreamModel:
    """Download a resolved version (once per version) and describe it for the consuming method."""
    import shutil

    import mlflow

    name, number = version.name, str(version.version)
    # The run id in the folder name: a model deleted and registered anew restarts its version numbers.
    dest = cache_dir / f"{name}-v{number}-{(version.run_id or 'norun')[:12]}"
    if not (dest / "MLmodel").is_file():  # a download a kill interrupted leaves no MLmodel: start it over
        shutil.rmtree(dest, ignore_errors=True)
        partial = cache_dir / f".{name}-v{number}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{number}",
                                                             dst_path=str(partial)))
        except Exception as error:  # MLflow raises its own, store-specific error types here
            raise UpstreamError(f"cannot download upstream model {name} v{number}: {str(error).splitlines()[0]}; "
                                "check that its artifacts still exist (`paperline models ls`)") from None
        local.rename(dest) if local != partial else partial.rename(dest)
        shutil.rmtree(partial, ignore_errors=True)
    return UpstreamModel(role=role, project=use.project, name=name, alias=use.alias, version=number,
                         run_id=version.run_id, cache_key=(version.tags or {}).get(tags.CACHE_KEY), path=dest)


def missing_after_run(name: str, alias: str, project: str, config: str) -> UpstreamError:
    return UpstreamError(
        f"project {project} [{config}] ran, but {name} still has no '{alias}' version (the promotion policy did not "
        f"move it; see `paperline models history {name}`); promote one with "
        f"`paperline promote {name} <version> --reason ...` or point the config's upstream alias elsewhere"
    )
