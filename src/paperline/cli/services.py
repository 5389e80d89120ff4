"""`paperline ui` and `paperline server stop`: the dashboards and the workspace's local Prefect server."""

from __future__ import annotations

from paperline.cli.common import workspace_settings


def cmd_ui(args) -> int:
    """Where the two dashboards are, after checking that each answers (exit 1 when a named server is down)."""
    from paperline.ops.services.prefect_server import healthy, running_server
    from paperline.ops.tracking.client import is_server

    settings = workspace_settings()
    down = 0
    print("Prefect dashboard (flow runs, schedules, deployments):")
    if settings.prefect_api_url:
        url = settings.prefect_api_url.rstrip("/")
        if healthy(url, timeout=5.0):
            print(f"  open {url.removesuffix('/api')}")
        else:
            down += 1
            print(f"  PREFECT_API_URL {url} does not answer: start that server, or unset PREFECT_API_URL")
    elif server := running_server(settings.prefect_home):
        print(f"  open {server['api_url'].removesuffix('/api')}")
    else:
        print(f"  not running; `paperline run ...` starts it, or: PREFECT_HOME={settings.prefect_home} "
              "prefect server start")
    print("MLflow UI (runs, metrics, models and aliases):")
    uri = settings.tracking_uri
    if is_server(uri):
        if healthy(uri.rstrip("/"), timeout=5.0):
            print(f"  open {uri}")
        else:
            down += 1
            print(f"  MLFLOW_TRACKING_URI {uri} does not answer: start that server, or unset MLFLOW_TRACKING_URI")
    else:
        print(f"  mlflow ui --backend-store-uri {uri} --port 5000   # then open http://127.0.0.1:5000")
    return 1 if down else 0


def cmd_server_stop(args) -> int:
    from paperline.ops.services.prefect_server import stop_local_server

    stopped = stop_local_server(workspace_settings().prefect_home)
    print("stopped the local Prefect server" if stopped else "no local Prefect server was running")
    return 0
