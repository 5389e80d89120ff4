"""`paperline models ls` and `history`, `leaderboard`, `doctor`, `promote`, `rollback`, `export` and `export-onnx`:
the registry and what is served from it."""

from __future__ import annotations

import os

from paperline.cli.common import load_flow, print_table, workspace_settings


def open_registry():
    from paperline.ops.registry.aliases import ModelRegistry
    from paperline.ops.store.audit import AuditStore
    from paperline.ops.tracking.client import connect

    settings = workspace_settings()
    return ModelRegistry(connect(settings), AuditStore(settings.store_url), policy_path=settings.policy_path)


def cmd_models_ls(args) -> int:
    rows = []
    for m in open_registry().list_models():
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(m["aliases"].items()))
        value = m.get("champion_metric")
        rows.append((m["name"], m["latest_version"], m["versions"], aliases or "-",
                     m.get("primary_metric") or "-", f"{value:.2f}" if value is not None else "-"))
    print_table(["model", "latest", "versions", "aliases", "primary metric", "champion value"], rows)
    return 0


def cmd_models_history(args) -> int:
    registry = open_registry()
    events = registry.history(args.name)
    if not events:
        registry.check_model(args.name)  # no history and no such model: a typo, not an empty history
    rows = [(e.time.strftime("%Y-%m-%d %H:%M:%S"), e.alias, e.action, e.actor,
             f"v{e.previous_version or '-'} -> v{e.new_version or '-'}",
             {True: "passed", False: "failed", None: "-"}[e.gate_passed], e.reason) for e in events]
    print_table(["time (UTC)", "alias", "action", "actor", "change", "gate", "reason"], rows)
    from paperline.ops.registry.versions import metric_trend

    versions = list(registry.client.search_model_versions(f"name = {args.name!r}"))
    metric, trend = metric_trend(versions, registry.aliases(args.name))
    if trend:
        print(f"\nmetric trend ({metric or 'no primary metric'} as registered; the comparison with the champion of "
              "its day on the same rows):")
        print_table(["version", "created (UTC)", "data", metric or "primary", "", "STS12-16 avg", "compared",
                     "aliases", "approval"],
                    [(f"v{r.version}", r.created, r.dataset, "-" if r.primary is None else f"{r.primary:.2f}", r.bar,
                      "-" if r.suite_average is None else f"{r.suite_average:.2f}", r.compared, r.aliases,
                      r.approval) for r in trend])
    return 0


def cmd_leaderboard(args) -> int:
    """Every champion on one task (paperline.ops.registry.champions), printed, logged to MLflow, and a Prefect table
    artifact when a Prefect server answers (a named one that does not is one line before any work)."""
    from paperline.ops.registry.champions import EXPERIMENT, build_leaderboard, log_leaderboard
    from paperline.ops.services.prefect_server import check_api, running_server
    from paperline.ops.tracking.client import connect

    settings = workspace_settings()
    if settings.prefect_api_url:
        check_api(settings.prefect_api_url)
    client = connect(settings)
    board = build_leaderboard(client, args.task, include_capped=args.include_capped)
    print(f"{args.task}: {board.spec.label}, champions best first")
    print_table(board.header(), board.text_rows())
    for skipped in board.skipped:
        print(f"  note: {skipped}")
    print(f"  MLflow run: {log_leaderboard(board, client, settings.artifact_root)} (experiment {EXPERIMENT})")
    # The workspace's local server is used when it runs, never started for this: a table is not worth 15 s.
    api_url = settings.prefect_api_url or (running_server(settings.prefect_home) or {}).get("api_url")
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
        print(f"  Prefect artifact: {load_flow('leaderboard_artifact')(args.task, board.records(), board.spec.label)}")
    else:
        print("  Prefect artifact: skipped, no Prefect server is running (`paperline run` starts the local one)")
    return 0


def task_names() -> list[str]:
    from paperline.ops.registry.champions import TASKS

    return list(TASKS)


def cmd_doctor(args) -> int:
    """Close runs that died without closing themselves (MLflow run, half-registered version, aliases, lineage,
    the Prefect flow run)."""
    from paperline.ops.runs.reconcile import close_abandoned_runs
    from paperline.ops.services import outages
    from paperline.ops.services.prefect_server import running_server

    registry = open_registry()
    settings = workspace_settings()
    # the server runs reported to: the team's (PREFECT_API_URL) or the workspace's, when it is up (none is started)
    prefect_api = settings.prefect_api_url or (running_server(settings.prefect_home) or {}).get("api_url")
    repairs = close_abandoned_runs(registry.store, registry.client)
    unchecked = None
    if prefect_api:
        try:
            repairs += load_flow("close_flow_runs")(registry.store, prefect_api)
        except Exception as error:
            if not outages.is_outage(error, outages.PREFECT):
                raise
            unchecked = f"Prefect flow runs not checked: the Prefect server at {prefect_api} does not answer"
    print("\n".join(f"repaired: {r.line()}" for r in repairs) or "nothing to repair: every run that started ended")
    if unchecked:
        print(unchecked)
    return 0


def print_policy_lines(event) -> None:
    view = (event.details or {}).get("policy") or {}
    for line in view.get("lines", []):
        print(f"  policy: {line}")
    if view.get("forced"):
        print(f"  forced: {'; '.join(view['refusals'])}")


def cmd_promote(args) -> int:
    event = open_registry().promote(args.name, str(args.version), args.reason, force=args.force)
    print(f"{args.name}: champion v{event.previous_version or '-'} -> v{event.new_version} ({event.actor})")
    print_policy_lines(event)
    announce_champion_move(event, rolled_back=False)
    return 0


def cmd_rollback(args) -> int:
    event = open_registry().rollback(args.name, args.reason)
    print(f"{args.name}: champion v{event.previous_version} -> v{event.new_version} ({event.actor})")
    print_policy_lines(event)
    announce_champion_move(event, rolled_back=True)
    return 0


def announce_champion_move(event, rolled_back: bool) -> None:
    """Send the champion move as a Prefect event (what downstream deployments are triggered by), when a Prefect
    API is up: the team's (PREFECT_API_URL) or the workspace's running local server. A command does not start a
    server just to say so: without one, a line says that nothing downstream heard of it."""
    from paperline.ops.services.event_names import PROMOTED, ROLLED_BACK
    from paperline.ops.services.prefect_server import healthy, running_server

    settings = workspace_settings()
    api = settings.prefect_api_url or (running_server(settings.prefect_home) or {}).get("api_url")
    if not api or not healthy(api.rstrip("/")):
        print("no Prefect server is running: no event sent, so no trigger follows this move (a team server's "
              "PREFECT_API_URL, or any flow run's local server, receives them)")
        return
    os.environ["PREFECT_API_URL"] = api
    load_flow("champion_event")(ROLLED_BACK if rolled_back else PROMOTED, event.model_name, event.new_version,
                                event.previous_version, event.actor, event.reason)


def cmd_export(args) -> int:
    """Cut a registered sentence-transformers model to a (layers, dims) budget and write a plain folder."""
    import tempfile

    import mlflow

    from paperline.core.targets import writing
    from paperline.ml.export import check_target, export_truncated
    from paperline.ops.registry.aliases import RegistryError

    name, sep, alias = args.model.partition("@")
    if not sep or not alias:
        raise RegistryError(f"'{args.model}' is not <name>@<alias>; e.g. matryoshka_2d@champion")
    out = check_target(args.out, args.force)  # before any download: an existing or unusable target is one line
    registry = open_registry()  # also points MLflow at the workspace's tracking store
    layers, dim = args.layers, args.dim
    if layers is None or dim is None:  # a budget alias knows its cell; any other alias needs both options
        cell = registry.budget_cell(name, alias)
        if cell is None:
            raise RegistryError(f"{alias!r} is not a budget alias (champion-l<K>-d<D>) with a grid cell; "
                                "pass --layers K and --dim D")
        layers, dim = layers or cell.layers, dim or cell.dims
    import logging

    import mlflow.sentence_transformers

    # its INFO line "'models:/...' resolved as '<path>'" is MLflow's, not news to the user
    logging.getLogger("mlflow.sentence_transformers").setLevel(logging.WARNING)
    try:
        model = mlflow.sentence_transformers.load_model(f"models:/{name}@{alias}")
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"cannot load models:/{name}@{alias}: {str(exc).splitlines()[0]}; "
                            "`paperline models ls` lists models and aliases") from None
    # The full model is staged beside the export (checked writable above), not in $TMPDIR: one place that must
    # have room, and a full disk there is one line with both folders gone.
    with writing(out), tempfile.TemporaryDirectory(prefix=f".{out.name}.full-", dir=out.parent) as tmp:
        model.save(tmp)
        out = export_truncated(tmp, layers, dim, out, force=args.force)
    print(f"wrote {out}: {name}@{alias} cut to {layers} layers x {dim} dims; "
          f"load it with SentenceTransformer('{out}')")
    return 0


def cmd_export_onnx(args) -> int:
    """Export a registered sentence-transformers model to ONNX, check it, register `<name>_onnx@<alias>`."""
    from paperline.ops.registry.onnx_export import export_registered
    from paperline.ops.tracking.client import connect

    done = export_registered(connect(workspace_settings()), args.model, "int8" if args.int8 else "optimized")
    print(f"registered {done.name} v{done.version} (alias {done.alias}): {done.variant} ONNX of {done.source}, "
          f"min cosine to PyTorch {done.min_cosine:.4f}; serve it with `mlflow models serve -m "
          f"models:/{done.name}@{done.alias} --env-manager local`")
    return 0
