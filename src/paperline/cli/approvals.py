"""`paperline approve` and `paperline reject`: answer a promotion that waits for a person.

The answer goes to the paused flow run that waits for it, through the Prefect API, exactly as the dashboard's form
sends it (`paperline_flows.approval.answer`, loaded by entry point: the library never imports Prefect); the run's
own process applies it. The command then waits (bounded) for the version's approval tag to change and prints what
happened. Checks that need no run (a reason, which version, a champion that moved since the comparison) are done
here first, so a mistake is one line and nothing is sent.
"""

from __future__ import annotations

import os
import time

from paperline.cli.common import load_flow, workspace_settings
from paperline.cli.models import open_registry
from paperline.core.errors import PaperlineError

# The waiting run looks for an answer every few seconds (at most 10); this bounds how long the command waits to
# report the outcome. A run that has not applied it by then still will: the command says so and ends.
OUTCOME_WAIT_S = 60.0


def cmd_approve(args) -> int:
    return _answer(args, approve=True)


def cmd_reject(args) -> int:
    return _answer(args, approve=False)


def _answer(args, approve: bool) -> int:
    from paperline.ops.registry.aliases import RegistryError
    from paperline.ops.tracking import tags

    registry = open_registry()
    name = args.name
    if not args.reason or not args.reason.strip():
        raise RegistryError(f"a reason is required to {'approve' if approve else 'reject'} a promotion; say why in "
                            "a few words (it goes into the audit log)")
    target = _pending_version(registry, name, args.version)
    if approve:  # the run would refuse it too, but only after the answer was spent
        registry.check_unchanged_champion(name, target)
    _use_prefect_server()
    version = str(target.version)
    url = load_flow("approval")(registry, name, version, approve, args.reason.strip(), registry.actor)
    print(f"{name} v{version}: {'approval' if approve else 'rejection'} sent to the waiting run {url}")

    deadline = time.monotonic() + OUTCOME_WAIT_S
    while True:
        now = registry.client.get_model_version(name, version).tags
        if now.get(tags.APPROVAL) != "pending":
            break
        if time.monotonic() > deadline:
            print("  the run has the answer and applies it at its next look; `paperline models ls` shows the "
                  "champion")
            return 0
        time.sleep(1.0)
    state, by, why = now.get(tags.APPROVAL), now.get(tags.APPROVAL_BY), now.get(tags.APPROVAL_REASON)
    champion = registry.aliases(name).get("champion")
    print(f"  {state}{' by ' + by if by else ''}: {why}; champion is {'v' + champion if champion else 'none'}")
    return 0 if state in ("approved", "rejected") else 1


def _pending_version(registry, name: str, version: str | None):
    """The version to answer: `version`, or the only pending one of `name`; one line that lists what is pending
    when that is not exactly one."""
    from paperline.ops.registry.aliases import RegistryError

    registry.check_model(name)
    pending = registry.pending_approvals(name)
    listed = ", ".join(f"v{v.version}" for v in pending)
    if version is not None:
        for candidate in pending:
            if str(candidate.version) == str(version):
                return candidate
        raise RegistryError(f"v{version} of {name!r} has no pending approval; pending for {name!r}: "
                            f"{listed or 'none'}")
    if len(pending) == 1:
        return pending[0]
    if pending:
        raise RegistryError(f"{name!r} has {len(pending)} pending approvals ({listed}); pass --version N")
    elsewhere = ", ".join(f"{v.name} v{v.version}" for v in registry.pending_approvals())
    raise RegistryError(f"nothing of {name!r} waits for approval; pending approvals: {elsewhere or 'none'}")


def _use_prefect_server() -> None:
    """The Prefect server the waiting run uses: PREFECT_API_URL's, else the workspace's local one if it runs (never
    started for this: a run that waits keeps it running, so a stopped one means that no run waits)."""
    from paperline.ops.services.prefect_server import check_api, running_server

    settings = workspace_settings()
    if settings.prefect_api_url:
        check_api(settings.prefect_api_url)
        return
    server = running_server(settings.prefect_home)
    if server is None:
        raise PaperlineError("the workspace's local Prefect server is not running, so no run is waiting for an "
                             "answer; run the project again to ask again, or promote by hand (`paperline promote`)")
    os.environ["PREFECT_API_URL"] = server["api_url"]
