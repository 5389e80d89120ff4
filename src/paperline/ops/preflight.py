"""Preflight: everything a user can get wrong, checked before Prefect starts, once per process.

The project exists and satisfies the method contract, the config validates against its schema, the upstream
projects and configs it names exist without a cycle, the tracking server and audit store answer, and an
auth-enabled tracking server accepts the credentials in MLFLOW_TRACKING_USERNAME/PASSWORD. A typo
costs a second, not a server start or a training job. `paperline run` calls it before starting Prefect; the flow
calls it too (a deployment run starts in a worker, with no CLI before it), and gets the CLI's result back
instead of checking twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from paperline.core.config import ProjectConfig
from paperline.core.settings import Settings
from paperline.ops.store import AuditStore
from paperline.ops.tracking import check_access, check_reachable
from paperline.ops.upstream import check_graph
from paperline.project.discovery import Project, get_project


@dataclass(frozen=True)
class Checked:
    project: Project
    cfg: ProjectConfig


_checked: dict[tuple, Checked] = {}


def preflight(settings: Settings, project_name: str, config_name: str = "default",
              overrides: list[str] | None = None) -> Checked:
    """The project and its resolved config, after every check; raises the first problem as one clear error."""
    key = (str(settings.root), settings.tracking_uri, settings.store_url, project_name, config_name,
           tuple(overrides or ()))
    if key not in _checked:
        project = get_project(settings.projects_dir, project_name)
        cfg = project.load_config(config_name, overrides)
        check_graph(settings.projects_dir, project.name, cfg)  # upstream projects and configs exist, no cycle
        check_reachable(settings.tracking_uri)
        check_access(settings.tracking_uri)  # a 401/403 from an auth-enabled server: one line, before Prefect
        AuditStore(settings.store_url).check()
        _checked[key] = Checked(project, cfg)
    return _checked[key]
