"""`paperline ui`, `paperline server stop` and `paperline notify`: the dashboards, the workspace's local Prefect
server, and the automation that posts paperline's events to a webhook."""

from __future__ import annotations

from pathlib import Path

from paperline.cli.common import connect_prefect, load_flow, workspace_settings


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


def cmd_notify(args) -> int:
    """Apply the webhook automation (infra/automations/notify-webhook.yaml) to the Prefect server in use."""
    settings = workspace_settings()
    path = Path(args.file)
    if not path.is_absolute() and not path.exists():
        path = settings.root / path  # the repository's infra/, from wherever the command runs
    connect_prefect(settings)
    applied = load_flow("notify")(path, args.webhook)
    print(f"{applied['action']} automation {applied['name']} ({applied['url']}): every paperline.model.* and "
          f"paperline.data.gate-failed event is POSTed to the webhook in block {applied['block']}")
    return 0
