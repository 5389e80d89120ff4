"""A service that stops answering in the middle of a run, or a disk that fills, as one line naming it.

What a run meets when the MLflow tracking server, the Prefect server or the audit/lineage store goes away, or the
workspace's disk fills, is an error from deep inside a library (an MlflowException wrapping urllib3's retries,
httpx's ConnectError, psycopg2's OperationalError, a RuntimeError from torch's writer). `translate` turns each
into one `PaperlineError` line that names the service (or the path) and what to do; `during(step)` applies it to
a step of the pipeline, as a decorator or a `with` block, so the flows keep reading like the pipeline diagram.
`tolerate(service)` lets a run's closing writes skip a service that is gone: the next run or `paperline doctor`
closes what it could not (paperline.ops.runs.reconcile).

How long a run takes to notice, and what bounds it:

- MLflow: each REST call is retried MLFLOW_HTTP_REQUEST_MAX_RETRIES times (paperline's default 4, set by
  paperline.core.settings.quiet_environment; MLflow's is 7) with a backoff of 2, 4, 8, 16 s
  (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR 2, up to 1 s jitter each), every try bounded by MLFLOW_HTTP_REQUEST_TIMEOUT
  (paperline's default 60 s, MLflow's 120 s): a refused connection fails after about 30 s. Once one call failed
  so, the process stops retrying (`_stop_retrying_mlflow`): the run's closing writes fail at once instead of
  30 s each.
- The store (PostgreSQL): a dropped connection fails the next statement at once; a new one gives up after
  connect_timeout (10 s, paperline.ops.store.audit).
- Prefect: the client retries PREFECT_CLIENT_MAX_RETRIES times (5) with a backoff of 2, 4, 8, 16, 32 s, each
  try bounded by PREFECT_API_REQUEST_TIMEOUT (60 s).
- Training itself never waits on a service: a server that goes away while a model trains is noticed at the
  next write after it (the trained model is cached by then, so the rerun does not train again).

Nothing here runs at import time, and nothing here imports MLflow or Prefect (SQLAlchemy only to print the store's
URL without its password): errors are recognised by the classes in their chain, named by module, so this module
stays a leaf of paperline.ops.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from paperline.core.errors import PaperlineError
from paperline.core.settings import Settings

MLFLOW, STORE, PREFECT = "MLflow", "store", "Prefect"
WHAT_TO_DO = "start it again and rerun; the run is closed by the next run or paperline doctor"


class ServiceOutage(PaperlineError):
    """A service the run was using stopped answering; `service` is MLFLOW, STORE or PREFECT."""

    def __init__(self, service: str, message: str):
        super().__init__(message)
        self.service = service


class DiskFull(PaperlineError):
    """A write failed for want of space; the message names the path and what is left."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, what caused it and what it was raised while handling, transitively (each once)."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__, getattr(current, "orig", None)]


def _module(error: BaseException) -> str:
    return type(error).__module__.split(".")[0]


def _netloc(url: str | None) -> str:
    return urlsplit(url).netloc.rsplit("@", 1)[-1] if url and "://" in url else ""


# ---- which service: recognised by the library its error comes from, and the address in it -------------------

_REFUSED = re.compile(r"connection refused|failed to establish a new connection|max retries exceeded|"
                      r"timed? ?out|server closed the connection|connection (reset|aborted)|could not connect|"
                      r"terminating connection|all connection attempts failed|connection to server", re.I)


def _mlflow_down(error: BaseException, settings: Settings) -> bool:
    """An MLflow REST call that could not reach the tracking server (refused, reset, timed out)."""
    where = _netloc(settings.tracking_uri)
    if not where:
        return False
    for e in _chain(error):
        text = str(e)
        rest_call = _module(e) == "mlflow" and text.startswith("API request to")  # MLflow's http_request
        http = _module(e) in ("requests", "urllib3") and isinstance(e, OSError)  # an artifact upload, say
        url = str(getattr(getattr(e, "request", None), "url", "") or "")
        if (rest_call or http) and (where in text or where in url) and _REFUSED.search(text):
            return True
    return False


def _store_down(error: BaseException) -> bool:
    """A statement of the audit store (SQLAlchemy) whose connection was lost or could not be made."""
    for e in _chain(error):
        if _module(e) == "sqlalchemy" and type(e).__name__ in ("OperationalError", "InterfaceError") or (
                _module(e) == "psycopg2" and type(e).__name__ in ("OperationalError", "InterfaceError")):
            return bool(_REFUSED.search(str(e)))
    return False


def _prefect_down(error: BaseException) -> str | None:
    """The Prefect API URL a failed call of Prefect's client (httpx) went to, if it could not reach it."""
    api = os.environ.get("PREFECT_API_URL", "")
    for e in _chain(error):
        if _module(e) in ("httpx", "httpcore") and type(e).__name__ in (
                "ConnectError", "ConnectTimeout", "ReadTimeout", "ReadError", "RemoteProtocolError", "PoolTimeout"):
            request = getattr(e, "_request", None)
            url = str(request.url) if request is not None else api
            if not api or _netloc(api) in url:
                return api or url
    return None


def _prefect_name(api_url: str, settings: Settings) -> tuple[str, str]:
    """How to name the Prefect server and what to do: the workspace's own starts again with the next run."""
    recorded = settings.prefect_home / "server.json"
    if recorded.is_file() and api_url in recorded.read_text():
        return (f"the workspace's Prefect server at {api_url}",
                "rerun (the next run starts it again); the run is closed by the next run or paperline doctor")
    return f"the Prefect server at {api_url} (PREFECT_API_URL)", WHAT_TO_DO


def _stop_retrying_mlflow() -> None:
    # MLflow reads this variable at every call (its retrying session is cached per value): once the server is
    # known gone, the run's closing calls fail at once instead of retrying for 30 s each.
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"


# ---- a full disk ------------------------------------------------------------------------------------------------

_NO_SPACE = re.compile(r"no space left on device|os error 28|StorageFull|errno 28", re.I)
# torch's zip writer loses the errno: "basic_ios::clear: iostream error", then "unexpected pos N vs M" (or "file
# write failed"). A full disk only if the workspace really has (almost) no space left.
_WRITE_FAILED = re.compile(r"iostream error|unexpected pos \d+ vs \d+|file write failed", re.I)
_NEARLY_FULL = 64 << 20  # bytes: what a failed write leaves is at most a partial file's tail


def _disk_full(error: BaseException, settings: Settings) -> tuple[bool, str | None]:
    """Whether the error is a write that found no space, and the path it names if it names one.

    Each library says it its own way: OSError errno 28 (Python, numpy), "No space left on device (os error 28)"
    inside a SafetensorError, a bare write failure from torch's zip writer (checked against the space left)."""
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True, e.filename and str(e.filename)
        if _NO_SPACE.search(str(e)):
            return True, None
    if any(_WRITE_FAILED.search(str(e)) for e in _chain(error)):
        return _fullest(settings, None)[1] < _NEARLY_FULL, None
    return False, None


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _fullest(settings: Settings, named: str | None) -> tuple[Path, int]:
    """The path to report and the space left there: the one the error names, else the workspace folder (runs,
    results, artifacts, the workspace itself) with the least space left, which is the one that filled."""
    candidates = [Path(named)] if named else []
    candidates += [settings.runs_dir, settings.results_dir, settings.workspace / "mlartifacts", settings.workspace]
    best: tuple[Path, int] | None = None
    for path in candidates:
        probe = path if path.exists() else path.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            continue
        if named and path == Path(named):
            return path, free
        if best is None or free < best[1]:
            best = (path, free)
    return best or (settings.workspace, 0)


# ---- the translation, in one place ------------------------------------------------------------------------------

_last_step = ["the run"]  # the step this process entered last: what a failure outside any step happened during


def translate(error: BaseException, step: str | None = None, settings: Settings | None = None) -> PaperlineError | None:
    """One line for a service that stopped answering during `step` (default: the step entered last), or a full
    disk; None for anything else (a PaperlineError other than a lost store, a bug) so that it keeps its own
    message or traceback."""
    if isinstance(error, (ServiceOutage, DiskFull, KeyboardInterrupt, SystemExit)):
        return None
    step = step or _last_step[0]
    settings = settings or Settings.from_env()
    full, path = _disk_full(error, settings)
    if full:
        where, free = _fullest(settings, path)
        return DiskFull(f"no space left on device writing {where} ({_human(free)} free); free space and rerun")
    if _mlflow_down(error, settings):
        _stop_retrying_mlflow()
        return ServiceOutage(MLFLOW, f"the MLflow tracking server at {settings.tracking_uri} stopped answering "
                                     f"during {step}; {WHAT_TO_DO}")
    if _store_down(error):
        from sqlalchemy.engine import make_url

        shown = make_url(settings.store_url).render_as_string(hide_password=True)
        return ServiceOutage(STORE, f"the paperline store at {shown} (PAPERLINE_STORE_URL) stopped answering "
                                    f"during {step}; {WHAT_TO_DO}")
    api = _prefect_down(error)
    if api:
        name, todo = _prefect_name(api, settings)
        return ServiceOutage(PREFECT, f"{name} stopped answering during {step}; {todo}")
    return None


@contextmanager
def during(step: str | None = None) -> Iterator[None]:
    """Translate what leaves the block (or the decorated function) as happening during `step`; without one, during
    the step entered last (a Prefect server that goes away fails Prefect's own calls, outside any step)."""
    if step is not None:
        _last_step[0] = step
    try:
        yield
    except BaseException as error:
        translated = translate(error, step)
        if translated is None:
            raise
        raise translated from error


def step(name: str):
    """`during(name)` as a decorator that keeps the function's signature (Prefect reads it for a task)."""
    def wrap(function):
        @functools.wraps(function)
        def wrapped(*args, **kwargs):
            with during(name):
                return function(*args, **kwargs)
        return wrapped
    return wrap


def is_outage(error: BaseException, service: str) -> bool:
    """Whether `error` says that `service` stopped answering (translated already, or not yet)."""
    if isinstance(error, ServiceOutage):
        return error.service == service
    translated = translate(error, "closing the run")
    return isinstance(translated, ServiceOutage) and translated.service == service


@contextmanager
def tolerate(service: str) -> Iterator[None]:
    """A best-effort write to `service` while a run closes: skipped if the service is gone (the next run or
    `paperline doctor` closes what it leaves open), raised otherwise."""
    try:
        yield
    except Exception as error:
        if not is_outage(error, service):
            raise
