"""Preflight: everything a user can get wrong, checked before Prefect starts, once per process.

The project exists and satisfies the method contract, the config validates against its schema, the upstream
projects and configs it names exist without a cycle, the tracking server and audit store answer, and an
auth-enabled tracking server accepts the credentials in MLFLOW_TRACKING_USERNAME/PASSWORD. A typo
costs a second, not a server start or a training job. `paperline run` calls it before starting Prefect; the flow
calls it too (a deployment run starts in a worker, with no CLI before it), and gets the CLI's result back
instead of checking twice. The memo is keyed by the project's files as well: a long-lived worker (a Dask cluster
given by address) that is handed a changed project checks and loads it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paperline.core.config import ProjectConfig
from paperline.core.settings import Settings
from paperline.ops.store.audit import AuditStore
from paperline.ops.tracking.client import check_access, check_reachable
from paperline.ops.registry.upstream import check_graph
from paperline.project.discovery import Project, digest_files, get_project


@dataclass(frozen=True)
class Checked:
    project: Project
    cfg: ProjectConfig


_checked: dict[tuple, Checked] = {}


def preflight(settings: Settings, project_name: str, config_name: str = "default",
              overrides: list[str] | None = None) -> Checked:
    """The project and its resolved config, after every check; raises the first problem as one clear error."""
    key = (str(settings.root), settings.tracking_uri, settings.store_url, project_name, config_name,
           tuple(overrides or ()), _files_digest(settings, project_name))
    if key not in _checked:
        project = get_project(settings.projects_dir, project_name)
        cfg = project.load_config(config_name, overrides)
        check_graph(settings.projects_dir, project.name, cfg)  # upstream projects and configs exist, no cycle
        check_reachable(settings.tracking_uri)
        check_access(settings.tracking_uri)  # a 401/403 from an auth-enabled server: one line, before Prefect
        AuditStore(settings.store_url).check()
        _checked[key] = Checked(project, cfg)
    return _checked[key]


def _files_digest(settings: Settings, project_name: str) -> str:
    """The project's files as they are now; "" for a name that is not a project folder (get_project says why)."""
    folder = settings.projects_dir / project_name
    return digest_files(folder) if Path(project_name).name == project_name and folder.is_dir() else ""
