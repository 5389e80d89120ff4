"""Where things live: the repository root, the git-ignored workspace, and the service URLs.

Every location has a default inside the workspace (`<root>/.paperline/`, git-ignored) and a standard variable
that overrides it, so the same commands work on a laptop and against team servers:

| what                | default                                   | override                 |
|---------------------|-------------------------------------------|--------------------------|
| repository root     | nearest folder above cwd with projects/   | PAPERLINE_ROOT           |
| workspace           | <root>/.paperline                         | PAPERLINE_WORKSPACE      |
| MLflow tracking     | sqlite:///<workspace>/mlflow.db            | MLFLOW_TRACKING_URI      |
| MLflow artifacts    | <workspace>/mlartifacts; with an http(s)  | PAPERLINE_ARTIFACT_ROOT  |
|                     | tracking URI, the server's own store      |                          |
| audit/lineage store | sqlite:///<workspace>/paperline.db         | PAPERLINE_STORE_URL      |
| Prefect API         | a local server kept in <workspace>/prefect| PREFECT_API_URL          |
| token cache         | <workspace>/cache/tokens                  | PAPERLINE_TOKEN_CACHE    |

Nothing here runs at import time; `Settings.from_env()` reads the environment when called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from paperline.core.errors import PaperlineError


class SettingsError(PaperlineError):
    """The repository or workspace cannot be found; the message says where to run from."""

    exit_code = 2  # the user named something that does not exist (paperline.core.errors.USAGE)


def find_root(start: Path | None = None) -> Path:
    """The repository root: $PAPERLINE_ROOT, else the nearest folder above `start` holding projects/ and data.dvc."""
    if os.environ.get("PAPERLINE_ROOT"):
        return Path(os.environ["PAPERLINE_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "projects").is_dir() and (folder / "data.dvc").is_file():
            return folder
    raise SettingsError(
        f"no paperline repository above {here} (a folder with projects/ and data.dvc); "
        "run from the repository or set PAPERLINE_ROOT"
    )


@dataclass(frozen=True)
class Settings:
    root: Path
    workspace: Path
    tracking_uri: str
    # None: a tracking server's own artifact store (experiments are created without an artifact location)
    artifact_root: str | None
    store_url: str
    prefect_api_url: str | None  # None: use the workspace's local Prefect server

    @classmethod
    def from_env(cls, root: Path | None = None) -> Settings:
        root = root or find_root()
        workspace = Path(os.environ.get("PAPERLINE_WORKSPACE", root / ".paperline")).resolve()
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workspace / 'mlflow.db'}"
        artifact_root = os.environ.get("PAPERLINE_ARTIFACT_ROOT") or None
        if artifact_root is None and not tracking_uri.startswith(("http://", "https://")):
            # Only without a tracking server: a server stores artifacts itself (`mlflow server --serve-artifacts
            # --artifacts-destination ...`); a local default would put every run's artifacts on the client's disk.
            artifact_root = (workspace / "mlartifacts").as_uri()
        return cls(
            root=root,
            workspace=workspace,
            tracking_uri=tracking_uri,
            artifact_root=artifact_root,
            store_url=os.environ.get("PAPERLINE_STORE_URL") or f"sqlite:///{workspace / 'paperline.db'}",
            prefect_api_url=os.environ.get("PREFECT_API_URL") or None,
        )

    @property
    def projects_dir(self) -> Path:
        return self.root / "projects"

    @property
    def policy_path(self) -> Path:
        return self.root / "registry" / "policy.yaml"

    @property
    def prefect_home(self) -> Path:
        return self.workspace / "prefect"

    @property
    def runs_dir(self) -> Path:
        """Per-cache-key working folders: checkpoints and trained models."""
        return self.workspace / "runs"

    @property
    def results_dir(self) -> Path:
        """Prefect's persisted task results, the train / evaluate / data gate cache: PREFECT_LOCAL_STORAGE_PATH if
        set, else the workspace's. The run flow gives it to its tasks, so a deployment's run on a worker (which
        sets neither) hits the cache of a `paperline run` in the same checkout, and the other way round."""
        return Path(os.environ.get("PREFECT_LOCAL_STORAGE_PATH") or self.prefect_home / "results")


def quiet_environment(settings: Settings) -> None:
    """Environment for a quiet, local-first run; set before Prefect, GX or MLflow are imported.

    Only defaults: a variable the user has set wins.
    """
    defaults = {
        "PREFECT_HOME": str(settings.prefect_home),
        # Prefect's server analytics write to its SQLite database from a second thread and print
        # "database is locked" tracebacks; nobody reads them locally.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Only the cached steps persist their results, each saying so with the checked JSON serializer
        # (paperline_flows.tasks); a flow or task that does not say would be pickled into the workspace.
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
        "PREFECT_LOCAL_STORAGE_PATH": str(settings.results_dir),
        # the training set's token ids, kept per dataset version and tokenizer (paperline.ml.token_cache)
        "PAPERLINE_TOKEN_CACHE": str(settings.workspace / "cache" / "tokens"),
        "GX_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",  # DVC and others honour it
        "TOKENIZERS_PARALLELISM": "false",  # no fork warning from the tokenizers' thread pool
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # A tracking server that stops answering fails a call after about 30 s (4 retries, backoff 2-16 s, each
        # try at most 60 s), not MLflow's 4 minutes (7 retries, 120 s): paperline.ops.services.outages
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    }
    if os.environ.get("PAPERLINE_VERBOSE", "").strip().lower() in ("", "0", "false", "no"):
        # The libraries' own bars and notices; paperline draws one bar per long step instead (ml.progress).
        # TQDM_DISABLE is tqdm's own default for `disable` (bars that ask explicitly, like paperline's, still draw).
        defaults |= {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
