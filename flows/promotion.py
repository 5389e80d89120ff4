"""Promotion and rollback from the Prefect dashboard: the same registry calls as `paperline promote` and
`paperline rollback`, so the same audit rows, with the flow run as the actor.

Deployed as `promote-model` and `rollback-model` (infra/prefect.yaml); the dashboard's run form comes from the
flows' typed signatures and docstrings. Each run leaves a markdown artifact `promotion-<model>` with the model's
aliases before and after and the policy's view of the chosen version. A refusal (the policy refuses a version
and `force` is off, an unknown model or version, nothing to roll back to) fails the run with one line and moves
nothing. Run as a script: `python -m paperline_flows.promotion promote sbert_sts 3 --reason "..." [--force]`.
"""

from __future__ import annotations

import argparse
import re
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Failed

from paperline.core.errors import PaperlineError
from paperline.core.settings import Settings
from paperline.ops.tracking.client import connect
from paperline.ops.registry.aliases import ModelRegistry, PolicyRefusal
from paperline.ops.store.audit import AuditStore
from paperline_flows import events


def _actor() -> str:
    """`prefect:<flow run name> (<flow run id>)`; with the user who created the run where the server knows one
    (Prefect Cloud: OSS servers record no user)."""
    run_id, name = str(flow_run.id), flow_run.name
    user = None
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            created_by = client.read_flow_run(UUID(run_id)).created_by
        if created_by is not None and (created_by.type or "").upper() == "USER":
            user = created_by.display_value
    except Exception:  # noqa: BLE001 -- the actor must not fail a promotion: the run's name and id identify it
        user = None
    return f"prefect:{user} via {name} ({run_id})" if user else f"prefect:{name} ({run_id})"


def _registry() -> ModelRegistry:
    settings = Settings.from_env()  # as run_project's connect_services: the workspace's or the team's services
    return ModelRegistry(connect(settings), AuditStore(settings.store_url), actor=_actor(),
                         policy_path=settings.policy_path)


def artifact_key(model_name: str) -> str:
    """`promotion-<model name>` with what Prefect's keys forbid (anything but a-z, 0-9 and -) as dashes."""
    return "promotion-" + re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")


def _report(registry: ModelRegistry, name: str, title: str, before: dict[str, str], reason: str,
            view: dict | None, outcome: str) -> None:
    after = registry.aliases(name)
    rows = [f"| {alias} | {'v' + before[alias] if alias in before else '-'} | "
            f"{'v' + after[alias] if alias in after else '-'} |" for alias in sorted(set(before) | set(after))]
    lines = [f"## {title}", "", f"**{outcome}**", "", f"- actor: `{registry.actor}`", f"- reason: {reason}", "",
             "| alias | before | after |", "|---|---|---|", *(rows or ["| (none) | - | - |"])]
    if view:
        lines += ["", f"### The policy's view of v{view['version']}", "", *(f"- {line}" for line in view["lines"]),
                  f"- forced: {'yes, over: ' + '; '.join(view['refusals']) if view['forced'] else 'no'}"]
    create_markdown_artifact(key=artifact_key(name), markdown="\n".join(lines), description=title)


# Neither flow's result is persisted: its outcome is the audit row and the artifact; the returned text is read
# only from the state in the calling process (Prefect would pickle it in the result store).
@flow(name="paperline-promote", flow_run_name="promote-{model_name}-v{version}", persist_result=False)
def promote_model(model_name: str, version: str, reason: str, force: bool = False):
    """Make a registered model version the champion, checked by the promotion policy and audited.

    Args:
        model_name: The registered model, as `paperline models ls` lists it (e.g. sbert_sts).
        version: The version to make champion (e.g. 3).
        reason: Why; written to the audit history with this flow run as the actor.
        force: Promote even if the policy refuses the version (failed data gate, primary metric below the
            floor); the audit row's reason then says what was overridden. Being worse than the current champion
            is never a refusal.
    """
    registry = _registry()
    before = registry.aliases(model_name)
    title = f"promote {model_name} v{version}"
    try:
        event = registry.promote(model_name, version, reason, force=force)
    except PaperlineError as error:
        view = error.view.to_dict() if isinstance(error, PolicyRefusal) else None
        _report(registry, model_name, title, before, reason, view, f"refused: {error}")
        get_run_logger().error(str(error))
        return Failed(message=str(error))  # a state, not a raise: the run fails with the line, no traceback
    finally:
        registry.store.close()
    _report(registry, model_name, title, before, event.reason, (event.details or {}).get("policy"),
            f"champion v{event.previous_version or '-'} -> v{event.new_version}")
    get_run_logger().info(f"{model_name}: champion v{event.previous_version or '-'} -> v{event.new_version} "
                          f"({event.actor})")
    events.champion_moved(events.PROMOTED, model_name, event.new_version, event.previous_version, event.actor,
                          event.reason)
    return f"v{event.new_version}"


@flow(name="paperline-rollback", flow_run_name="rollback-{model_name}", persist_result=False)
def rollback_model(model_name: str, reason: str):
    """Give `champion` back to the previous champion of a registered model (audited).

    Args:
        model_name: The registered model, as `paperline models ls` lists it (e.g. sbert_sts).
        reason: Why; written to the audit history with this flow run as the actor.
    """
    registry = _registry()
    before = registry.aliases(model_name)
    title = f"roll back {model_name}"
    try:
        event = registry.rollback(model_name, reason)
    except PaperlineError as error:
        _report(registry, model_name, title, before, reason, None, f"refused: {error}")
        get_run_logger().error(str(error))
        return Failed(message=str(error))
    finally:
        registry.store.close()
    _report(registry, model_name, title, before, event.reason, (event.details or {}).get("policy"),
            f"champion v{event.previous_version} -> v{event.new_version}")
    get_run_logger().info(f"{model_name}: champion v{event.previous_version} -> v{event.new_version} ({event.actor})")
    events.champion_moved(events.ROLLED_BACK, model_name, event.new_version, event.previous_version, event.actor,
                          event.reason)
    return f"v{event.new_version}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    promote = sub.add_parser("promote")
    promote.add_argument("model_name")
    promote.add_argument("version")
    promote.add_argument("--reason", required=True)
    promote.add_argument("--force", action="store_true")
    rollback = sub.add_parser("rollback")
    rollback.add_argument("model_name")
    rollback.add_argument("--reason", required=True)
    args = parser.parse_args()
    if args.command == "promote":
        state = promote_model(args.model_name, args.version, args.reason, args.force, return_state=True)
    else:
        state = rollback_model(args.model_name, args.reason, return_state=True)
    print(f"flow run {state.state_details.flow_run_id}: {state.message or state.name}")
    raise SystemExit(0 if state.is_completed() else 1)


if __name__ == "__main__":
    main()
