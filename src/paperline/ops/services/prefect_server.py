"""The workspace's local Prefect server: started on first use, then reused by every run.

Why not Prefect's temporary server (what a flow gets when PREFECT_API_URL is unset)? It is started anew for
every process and costs 12-20 s on a 2-core machine before the first task runs, and it goes away with the
process, so the dashboard never shows the runs. A local `prefect server start` kept in the workspace costs
that once, then a health check (milliseconds) per run, and its dashboard shows every run, schedule and
deployment. Set PREFECT_API_URL to use a team server instead; `paperline server stop` stops the local one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from paperline.core.errors import PaperlineError

DEFAULT_PORT = 4200


class PrefectServerError(PaperlineError):
    """The local Prefect server did not start; the message names its log."""


def healthy(api_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def check_api(api_url: str) -> None:
    """A team server named by PREFECT_API_URL answers its health check, or one line says so before any work."""
    if not healthy(api_url.rstrip("/"), timeout=5.0):
        raise PrefectServerError(f"the Prefect API at {api_url} (PREFECT_API_URL) does not answer; start it "
                                 "(`prefect server start`), fix the address, or unset PREFECT_API_URL to use the "
                                 "workspace's local server")


def _state_file(prefect_home: Path) -> Path:
    return prefect_home / "server.json"


def serves_home(api_url: str, prefect_home: Path, timeout: float = 2.0) -> bool:
    """Whether the server at `api_url` is the one kept in `prefect_home` (its settings name that PREFECT_HOME).

    A health check alone cannot tell two local servers apart: when two workspaces start theirs at the same
    moment on the same preferred port, the second one's server cannot bind it and the first one's answers the
    second's health check, which then ran its flows on another workspace's server (and lost them when it stopped).
    """
    try:
        with urllib.request.urlopen(f"{api_url}/admin/settings", timeout=timeout) as response:
            home = json.load(response).get("home")
    except (OSError, ValueError):
        return False
    return bool(home) and Path(home).resolve() == prefect_home.resolve()


def running_server(prefect_home: Path) -> dict | None:
    """The recorded local server if it answers and is this workspace's, else None."""
    try:
        state = json.loads(_state_file(prefect_home).read_text())
    except (OSError, ValueError):
        return None
    return state if healthy(state["api_url"]) and serves_home(state["api_url"], prefect_home) else None


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return sock.getsockname()[1]
            except OSError:
                continue
    raise PrefectServerError("no free local port for the Prefect server")


def ensure_local_server(prefect_home: Path, timeout: float = 120.0, announce=print) -> str:
    """Return the API URL of the workspace's local server, starting it in the background if needed."""
    state = running_server(prefect_home)
    if state:
        return state["api_url"]
    prefect_home.mkdir(parents=True, exist_ok=True)
    preferred = int(os.environ.get("PAPERLINE_PREFECT_PORT", DEFAULT_PORT))
    deadline = time.monotonic() + timeout
    # A second try on a free port the system picks when another server took the preferred one between our
    # check that it was free and our server's bind (two workspaces starting at once).
    for wanted in (preferred, 0):
        api_url = _start_and_wait(prefect_home, _free_port(wanted), deadline, announce)
        if api_url:
            return api_url
    raise PrefectServerError(f"the local Prefect server could not get a port of its own; see "
                             f"{prefect_home / 'server.log'}")


def _start_and_wait(prefect_home: Path, port: int, deadline: float, announce) -> str | None:
    """Start the server on `port` and wait until it answers as this workspace's; None when another server holds
    the port (ours could not bind it)."""
    api_url = f"http://127.0.0.1:{port}/api"
    log_path = prefect_home / "server.log"
    announce(f"starting the local Prefect server on http://127.0.0.1:{port} (once; later runs reuse it)")
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           # The dashboard asks the server where its API is; `--port` alone leaves that at the default port
           # (4200), so on any other port the dashboard showed another server's runs, or none.
           "PREFECT_UI_API_URL": api_url, "PREFECT_SERVER_API_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # outlives this process: the next run reuses it
        )
    while time.monotonic() < deadline:
        if healthy(api_url) and serves_home(api_url, prefect_home):
            _state_file(prefect_home).write_text(json.dumps({"pid": process.pid, "api_url": api_url}))
            return api_url
        if process.poll() is not None:
            if healthy(api_url):  # another workspace's server answers on the port ours could not bind
                return None
            raise PrefectServerError(f"the local Prefect server exited with code {process.returncode}; see {log_path}")
        time.sleep(0.2)
    process.terminate()
    raise PrefectServerError(f"the local Prefect server did not answer within the time allowed; see {log_path}")


def stop_local_server(prefect_home: Path) -> bool:
    """Stop the recorded local server; returns whether one was running."""
    try:
        state = json.loads(_state_file(prefect_home).read_text())
    except (OSError, ValueError):
        return False
    _state_file(prefect_home).unlink(missing_ok=True)
    try:
        os.killpg(state["pid"], signal.SIGTERM)  # the server and the workers it spawned
    except ProcessLookupError:
        return False
    for _ in range(50):
        try:
            os.kill(state["pid"], 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(state["pid"], signal.SIGKILL)
    return True
