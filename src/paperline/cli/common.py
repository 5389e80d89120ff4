"""What the commands share: the workspace's settings, the Prefect server they use, the flows they load through
entry points, and how they print tables."""

from __future__ import annotations

import os

from paperline.core.errors import PaperlineError
from paperline.core.settings import Settings, quiet_environment


def workspace_settings() -> Settings:
    settings = Settings.from_env()
    quiet_environment(settings)
    return settings


def connect_prefect(settings: Settings) -> None:
    """The team server of PREFECT_API_URL if set (checked now: a dead one is one line, not minutes of retries),
    else the workspace's local server, started on first use."""
    from paperline.ops.services.prefect_server import check_api, ensure_local_server

    if settings.prefect_api_url:
        check_api(settings.prefect_api_url)
    else:
        os.environ["PREFECT_API_URL"] = ensure_local_server(settings.prefect_home)


def stop_on_interrupt() -> None:
    """Make SIGTERM (`kill`, a container stop, a CI timeout) stop a run the way Ctrl-C does.

    By default SIGTERM ends the process where it stands: no message, the MLflow run left "running". As a
    KeyboardInterrupt it unwinds instead: the MLflow run is ended as failed, the line below says what to do, and
    the checkpoints already written stay for the rerun to resume from. Nothing is registered either way.
    """
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)


def load_flow(name: str):
    """A Prefect flow of this installation, found through the `paperline.flows` entry points (pyproject.toml):
    flows/ is orchestration above the library, so the library never imports it by name or by path."""
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group="paperline.flows")}
    if name not in found:
        raise PaperlineError(f"no flow '{name}' is installed (entry points: {', '.join(found) or 'none'}); "
                             "reinstall paperline with `make setup`")
    return found[name].load()


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("paperline")
    except PackageNotFoundError:  # a source tree on PYTHONPATH without `pip install -e .`
        return "(not installed)"


def print_table(header: list[str], rows: list[tuple]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[str(c) for c in row] for row in [tuple(header), *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
