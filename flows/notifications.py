"""Notifications: apply an automation file of infra/automations/ to the Prefect server in use, with the Webhook block
it posts through (`paperline notify --webhook URL` calls `apply` through the entry point `notify`).

A Prefect automation names its webhook by block id, which differs on every server, so the file leaves
`block_document_id` null and `apply` fills in the id of the block it saves. Applying twice replaces both (the block
by name, the automation by name): changing the URL or the file is one more `paperline notify`. The events it
subscribes to are `paperline_flows.events`'.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import yaml
from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client
from prefect.events.schemas.automations import AutomationCore
from prefect.utilities.urls import url_for
from pydantic import ValidationError

from paperline.core.errors import UsageError, yaml_problem

BLOCK_NAME = "paperline-notify"


def _spec(automation_file: Path, block_id: str) -> AutomationCore:
    try:
        spec = yaml.safe_load(automation_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no automation file at {automation_file}; the example is "
                         "infra/automations/notify-webhook.yaml") from None
    except yaml.YAMLError as error:
        raise UsageError(f"{automation_file} is not valid YAML: {yaml_problem(error)}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"{automation_file} must hold one automation (name, trigger, actions)")
    for action in spec.get("actions") or []:
        if isinstance(action, dict) and action.get("type") == "call-webhook" and not action.get("block_document_id"):
            action["block_document_id"] = block_id
    try:
        return AutomationCore.model_validate(spec)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UsageError(f"{automation_file} is not a Prefect automation: {where}: {first['msg']} "
                         f"({error.error_count()} problem(s))") from None


def apply(automation_file: str | Path, webhook_url: str, block_name: str = BLOCK_NAME) -> dict[str, str]:
    """Save `webhook_url` in the Webhook block `block_name` and create (or update, by name) the automation of
    `automation_file` with its call-webhook actions pointed at that block. Returns the automation's name, id and
    dashboard URL, and the block's name."""
    if urlparse(webhook_url).scheme not in ("http", "https") or not urlparse(webhook_url).netloc:
        raise UsageError(f"--webhook {webhook_url!r} is not an http(s) URL; e.g. https://hooks.example.com/...")
    automation_file = Path(automation_file)
    _spec(automation_file, "00000000-0000-0000-0000-000000000000")  # a bad file is one line before anything is saved
    # JSON: the automation's payload template renders a JSON object
    block_id = Webhook(url=webhook_url, headers={"Content-Type": "application/json"}).save(block_name,
                                                                                          overwrite=True)
    automation = _spec(automation_file, str(block_id))
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
        if existing:
            automation_id = existing[0].id
            client.update_automation(automation_id, automation)
            for duplicate in existing[1:]:  # one automation per name: two would post every event twice
                client.delete_automation(duplicate.id)
        else:
            automation_id = client.create_automation(automation)
    return {"name": automation.name, "id": str(automation_id), "block": block_name,
            "url": url_for("automation", obj_id=automation_id) or str(automation_id),
            "action": "updated" if existing else "created"}
