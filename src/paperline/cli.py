"""The `paperline` command: list projects, run their pipeline, manage data and the model registry.

Errors a user can cause end with one line on stderr and an exit code: 2 when something typed is wrong (the
command line, a config, a name, a path, a URL in an environment variable: fix it and rerun), 1 when a service or
the job failed, 3 when the data gate refused the data, 130 when interrupted. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from paperline.core.errors import PaperlineError
from paperline.core.settings import Settings, quiet_environment


def _settings() -> Settings:
    settings = Settings.from_env()
    quiet_environment(settings)
    return settings


# ---- projects and runs -------------------------------------------------------------------------------------


def cmd_ls(args) -> int:
    """Every project with its card; one that breaks the method contract is listed as broken, with why."""
    from paperline.project.discovery import discover

    rows, broken = [], []
    for p in discover(_settings().projects_dir).values():
        card = p.card
        paper = (f"arXiv {card.paper.arxiv}" if card.paper.arxiv else card.paper.venue or "") if card else ""
        status = "BROKEN" if p.problems else card.status
        rows.append((p.name, card.title if card else "-", paper, status, ", ".join(p.configs)))
        broken += [f"{p.name}: {problem}" for problem in p.problems]
    _table(["project", "title", "paper", "status", "configs"], rows)
    if broken:
        print("\nbroken projects (`paperline run` refuses them):")
        print("\n".join(f"  {line}" for line in broken))
    return 0


def cmd_new(args) -> int:
    from paperline.project.scaffold import new_project

    folder = new_project(_settings().projects_dir, args.name, args.source)
    print(f"wrote {folder}: it passes the method contract; try it with `paperline run {args.name} --config smoke`,\n"
          f"then edit method.py (the method), project.yaml (the card) and configs/")
    return 0


def cmd_run(args) -> int:
    settings = _settings()
    from paperline.ops.preflight import preflight

    # Everything a user can get wrong is checked before Prefect starts, so it costs a second, not a server.
    checked = preflight(settings, args.project, args.config, args.overrides)
    _connect_prefect(settings)
    if args.on:  # a worker of the deployment's pool runs it; this only submits (run_deployment) and says where
        return _submit(args)
    run_project = _flow("run_project")
    _stop_on_interrupt()
    state = run_project(args.project, args.config, args.overrides, return_state=True)
    outcome = state.result(raise_on_failure=False)  # a RunSummary, or the exception that ended the flow
    if isinstance(outcome, PaperlineError):
        raise outcome
    if state.is_failed():
        from paperline.ops.summary import RunSummary

        gate_failed = isinstance(outcome, RunSummary) and outcome.status == "gate-failed"
        print(f"paperline: error: {state.message or 'the flow failed'}", file=sys.stderr)
        return 3 if gate_failed else 1
    print("\n".join(outcome.lines(checked.project.card.primary_metric.name)))
    return 0


def _connect_prefect(settings: Settings) -> None:
    """The team server of PREFECT_API_URL if set (checked now: a dead one is one line, not minutes of retries),
    else the workspace's local server, started on first use."""
    from paperline.ops.prefect_server import check_api, ensure_local_server

    if settings.prefect_api_url:
        check_api(settings.prefect_api_url)
    else:
        os.environ["PREFECT_API_URL"] = ensure_local_server(settings.prefect_home)


def _submit(args) -> int:
    """`paperline run ... --on DEPLOYMENT_OR_POOL`: create the flow run on the Prefect server and return."""
    submitted = _flow("submit")(args.on, args.project, args.config, args.overrides)
    print(f"{args.project} [{args.config}]: submitted to {submitted['deployment']} (work pool "
          f"{submitted['work_pool'] or '-'}); a worker of that pool runs it (`prefect worker start --pool "
          f"{submitted['work_pool'] or 'NAME'}`)")
    print(f"  Prefect flow run: {submitted['url'] or submitted['flow_run_id']}")
    return 0


def cmd_deploy(args) -> int:
    """Create the work pools the deployments need (from infra/pools/) and register the deployments: one per project
    config plus infra/prefect.yaml's own."""
    settings = _settings()
    _connect_prefect(settings)
    names = _flow("deploy")(settings.root, args.pool, args.update_pools)
    print(f"deployed {len(names)}: " + ", ".join(names))
    print("run one with `paperline run <project> --on <deployment-or-pool>` once a worker polls its pool")
    return 0


def cmd_sweep(args) -> int:
    """Trials of a `key=a,b,c` grid through a Prefect task runner; only the best is registered."""
    settings = _settings()
    from paperline.ops import sweep as grid_ops
    from paperline.ops.preflight import preflight

    grid = grid_ops.parse_grid(args.overrides)
    spec = grid_ops.parse_runner(args.runner)
    trials = grid_ops.trials(grid)
    preflight(settings, args.project, args.config, [])
    for trial in trials:  # every trial's config, before Prefect starts
        preflight(settings, args.project, args.config, grid_ops.overrides(trial))
    _connect_prefect(settings)
    workers = args.workers or min(len(trials), os.cpu_count() or 1)
    sweep = _flow("sweep")
    _stop_on_interrupt()
    state = sweep(args.project, args.config, grid, [], str(spec), workers, args.gpus_per_trial, return_state=True)
    outcome = state.result(raise_on_failure=False)  # a SweepSummary, or the exception that ended the flow
    if isinstance(outcome, PaperlineError):
        raise outcome
    if isinstance(outcome, grid_ops.SweepSummary):
        print("\n".join(outcome.lines()))
    if state.is_failed():
        print(f"paperline: error: {state.message or 'the sweep failed'}", file=sys.stderr)
        return 3 if (state.message or "").startswith("data gate failed") else 1
    return 0


def _stop_on_interrupt() -> None:
    """Make SIGTERM (`kill`, a container stop, a CI timeout) stop a run the way Ctrl-C does.

    By default SIGTERM ends the process where it stands: no message, the MLflow run left "running". As a
    KeyboardInterrupt it unwinds instead: the MLflow run is ended as failed, the line below says what to do, and
    the checkpoints already written stay for the rerun to resume from. Nothing is registered either way.
    """
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)


def _flow(name: str):
    """A Prefect flow of this installation, found through the `paperline.flows` entry points (pyproject.toml):
    flows/ is orchestration above the library, so the library never imports it by name or by path."""
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group="paperline.flows")}
    if name not in found:
        raise PaperlineError(f"no flow '{name}' is installed (entry points: {', '.join(found) or 'none'}); "
                             "reinstall paperline with `make setup`")
    return found[name].load()


# ---- data -------------------------------------------------------------------------------------------------------


def cmd_data_pull(args) -> int:
    from paperline.data.datasets import pull_data, read_pointer, resolve_data_version

    settings = _settings()
    if args.force:
        pull_data(settings.root, force=True)
    version = resolve_data_version(settings.root)
    print(f"data/ is at version {version.md5} ({read_pointer(settings.root).get('nfiles')} files)")
    return 0


def cmd_data_status(args) -> int:
    from paperline.data.datasets import data_status, read_pointer

    settings = _settings()
    out = read_pointer(settings.root)
    status = data_status(settings.root)
    print(f"version (data.dvc): {out['md5']}  size {out.get('size')} bytes, {out.get('nfiles')} files")
    print("data/: matches data.dvc" if not status else f"data/: differs from data.dvc: {status}")
    return 0 if not status else 1


def cmd_data_validate(args) -> int:
    """Gate every dataset folder under data/ that a project card names, as the kind the cards give it."""
    from paperline.core.config import ConfigError, DatasetUse, ProjectConfig
    from paperline.data.datasets import dataset_ref, resolve_data_version
    from paperline.data.kinds import UnknownKindError, get_kind
    from paperline.data.quality import gate_datasets
    from paperline.project.discovery import discover

    settings = _settings()
    # dataset -> kind -> the projects whose card reads the dataset as that kind
    readers: dict[str, dict[str, list[str]]] = {}
    floors: dict[str, dict[str, int]] = {}  # dataset -> split -> fewest rows the cards accept
    for project in discover(settings.projects_dir).values():
        if project.card is None:  # a card that does not validate names no data; `paperline ls` says why
            continue
        for need in project.card.data:
            try:
                get_kind(need.kind)  # a typo in a card fails here, before any data is read
            except UnknownKindError as exc:
                raise UnknownKindError(f"{project.name}/project.yaml, dataset '{need.dataset}': {exc}") from None
            readers.setdefault(need.dataset, {}).setdefault(need.kind, []).append(project.name)
            for split, rows in need.min_rows.items():  # the strictest floor any card states
                floor = floors.setdefault(need.dataset, {})
                floor[split] = max(rows, floor.get(split, 0))
    for dataset, by_kind in sorted(readers.items()):
        if len(by_kind) > 1:
            claims = "; ".join(f"{kind} by {', '.join(sorted(names))}" for kind, names in sorted(by_kind.items()))
            raise ConfigError(f"project cards give dataset '{dataset}' different kinds ({claims}); a dataset has "
                              "one kind: make the cards' `data:` entries agree")
    version = resolve_data_version(settings.root)
    folders = sorted(p.name for p in version.path.iterdir() if p.is_dir())
    kinds = {name: next(iter(readers[name])) for name in folders if name in readers}  # one each, checked above
    uses = {name: DatasetUse(kind=kind, splits=sorted(f.stem for f in (version.path / name).glob("*.tsv")))
            for name, kind in kinds.items()}
    outcome = gate_datasets({n: dataset_ref(version, n, u.kind) for n, u in uses.items()}, ProjectConfig(data=uses),
                            min_rows=floors)
    for result in outcome.results:
        prefix = f"{result.dataset}: " if result.passed else ""  # a failure line names its dataset already
        print("\n".join(prefix + line for line in result.summary_lines()))
    for name in folders:
        if name not in readers:
            print(f"{name}: not gated (no project reads it)")
    missing = sorted(set(readers) - set(folders))
    for name in missing:
        projects = sorted({p for names in readers[name].values() for p in names})
        print(f"{name}: not in data/ at version {version.md5}, yet read by {', '.join(projects)}; add it to data/ "
              "and `dvc add data`, or fix the cards")
    if args.report:
        Path(args.report).write_text(outcome.to_markdown())
        print(f"report: {args.report}")
    if not outcome.passed:
        return 3
    return 1 if missing else 0


# ---- models -----------------------------------------------------------------------------------------------------


def _registry():
    from paperline.ops.registry import ModelRegistry
    from paperline.ops.store import AuditStore
    from paperline.ops.tracking import connect

    settings = _settings()
    return ModelRegistry(connect(settings), AuditStore(settings.store_url), policy_path=settings.policy_path)


def cmd_models_ls(args) -> int:
    rows = []
    for m in _registry().list_models():
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(m["aliases"].items()))
        value = m.get("champion_metric")
        rows.append((m["name"], m["latest_version"], m["versions"], aliases or "-",
                     m.get("primary_metric") or "-", f"{value:.2f}" if value is not None else "-"))
    _table(["model", "latest", "versions", "aliases", "primary metric", "champion value"], rows)
    return 0


def cmd_models_history(args) -> int:
    registry = _registry()
    events = registry.history(args.name)
    if not events:
        registry.check_model(args.name)  # no history and no such model: a typo, not an empty history
    rows = [(e.time.strftime("%Y-%m-%d %H:%M:%S"), e.alias, e.action, e.actor,
             f"v{e.previous_version or '-'} -> v{e.new_version or '-'}",
             {True: "passed", False: "failed", None: "-"}[e.gate_passed], e.reason) for e in events]
    _table(["time (UTC)", "alias", "action", "actor", "change", "gate", "reason"], rows)
    return 0


def cmd_leaderboard(args) -> int:
    """Every champion on one task (paperline.ops.leaderboard), printed, logged to MLflow, and a Prefect table
    artifact when a Prefect server answers (a named one that does not is one line before any work)."""
    from paperline.ops.leaderboard import EXPERIMENT, build_leaderboard, log_leaderboard
    from paperline.ops.prefect_server import check_api, running_server
    from paperline.ops.tracking import connect

    settings = _settings()
    if settings.prefect_api_url:
        check_api(settings.prefect_api_url)
    board = build_leaderboard(connect(settings), args.task)
    print(f"{args.task}: {board.spec.label}, champions best first")
    _table(board.header(), board.text_rows())
    for skipped in board.skipped:
        print(f"  note: {skipped}")
    print(f"  MLflow run: {log_leaderboard(board)} (experiment {EXPERIMENT})")
    # The workspace's local server is used when it runs, never started for this: a table is not worth 15 s.
    api_url = settings.prefect_api_url or (running_server(settings.prefect_home) or {}).get("api_url")
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
        print(f"  Prefect artifact: {_flow('leaderboard_artifact')(args.task, board.records(), board.spec.label)}")
    else:
        print("  Prefect artifact: skipped, no Prefect server is running (`paperline run` starts the local one)")
    return 0


def cmd_doctor(args) -> int:
    """Close runs that died without closing themselves (MLflow run, half-registered version, aliases, lineage)."""
    from paperline.ops.reconcile import close_abandoned_runs

    registry = _registry()
    repairs = close_abandoned_runs(registry.store, registry.client)
    print("\n".join(f"repaired: {r.line()}" for r in repairs) or "nothing to repair: every run that started ended")
    return 0


def _policy_lines(event) -> None:
    view = (event.details or {}).get("policy") or {}
    for line in view.get("lines", []):
        print(f"  policy: {line}")
    if view.get("forced"):
        print(f"  forced: {'; '.join(view['refusals'])}")


def cmd_promote(args) -> int:
    event = _registry().promote(args.name, str(args.version), args.reason, force=args.force)
    print(f"{args.name}: champion v{event.previous_version or '-'} -> v{event.new_version} ({event.actor})")
    _policy_lines(event)
    return 0


def cmd_rollback(args) -> int:
    event = _registry().rollback(args.name, args.reason)
    print(f"{args.name}: champion v{event.previous_version} -> v{event.new_version} ({event.actor})")
    _policy_lines(event)
    return 0


def cmd_export(args) -> int:
    """Cut a registered sentence-transformers model to a (layers, dims) budget and write a plain folder."""
    import tempfile

    import mlflow

    from paperline.ml.export import check_target, export_truncated
    from paperline.ops.registry import RegistryError

    name, sep, alias = args.model.partition("@")
    if not sep or not alias:
        raise RegistryError(f"'{args.model}' is not <name>@<alias>; e.g. matryoshka_2d@champion")
    check_target(args.out, args.force)  # before any download: an existing or unwritable target is one line
    registry = _registry()  # also points MLflow at the workspace's tracking store
    layers, dim = args.layers, args.dim
    if layers is None or dim is None:  # a budget alias knows its cell; any other alias needs both options
        cell = registry.budget_cell(name, alias)
        if cell is None:
            raise RegistryError(f"{alias!r} is not a budget alias (champion-l<K>-d<D>) with a grid cell; "
                                "pass --layers K and --dim D")
        layers, dim = layers or cell.layers, dim or cell.dims
    try:
        model = mlflow.sentence_transformers.load_model(f"models:/{name}@{alias}")
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"cannot load models:/{name}@{alias}: {str(exc).splitlines()[0]}; "
                            "`paperline models ls` lists models and aliases") from None
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        out = export_truncated(tmp, layers, dim, args.out, force=args.force)
    print(f"wrote {out}: {name}@{alias} cut to {layers} layers x {dim} dims; "
          f"load it with SentenceTransformer('{out}')")
    return 0


# ---- services ---------------------------------------------------------------------------------------------------


def cmd_ui(args) -> int:
    """Where the two dashboards are, after checking that each answers (exit 1 when a named server is down)."""
    from paperline.ops.prefect_server import healthy, running_server
    from paperline.ops.tracking import is_server

    settings = _settings()
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
    from paperline.ops.prefect_server import stop_local_server

    stopped = stop_local_server(_settings().prefect_home)
    print("stopped the local Prefect server" if stopped else "no local Prefect server was running")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("paperline")
    except PackageNotFoundError:  # a source tree on PYTHONPATH without `pip install -e .`
        return "(not installed)"


def _table(header: list[str], rows: list[tuple]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[str(c) for c in row] for row in [tuple(header), *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _task_names() -> list[str]:
    from paperline.ops.leaderboard import TASKS

    return list(TASKS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paperline", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"paperline {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the libraries' own progress bars "
                        "and log lines (transformers, sentence-transformers' trainer) besides paperline's")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("ls", help="list projects: name, title, paper, status, configs").set_defaults(func=cmd_ls)

    new = sub.add_parser("new", help="scaffold a project folder that satisfies the method contract")
    new.add_argument("name", help="the new project's name (snake_case)")
    new.add_argument("--from", dest="source", metavar="PROJECT", help="start from this project's method and configs")
    new.set_defaults(func=cmd_new)

    run = sub.add_parser("run", help="run a project's pipeline (data, gate, train, evaluate, track, register)")
    run.add_argument("project", help="a project name from `paperline ls`")
    run.add_argument("--config", default="default", help="a config in projects/<project>/configs (default: default)")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.stages.0.epochs=2")
    run.add_argument("--on", metavar="DEPLOYMENT_OR_POOL", help="submit to a Prefect deployment (e.g. "
                     "sbert-sts-gpu-k8s) or a work pool instead of running here; prints the flow run's link")
    run.set_defaults(func=cmd_run)

    deploy = sub.add_parser("deploy", help="create the work pools and register the deployments: one per project "
                            "config, plus infra/prefect.yaml's")
    deploy.add_argument("--pool", metavar="NAME", help="only the deployments of this work pool (default: all)")
    deploy.add_argument("--update-pools", action="store_true",
                        help="send the templates in infra/pools/ to pools that exist already")
    deploy.set_defaults(func=cmd_deploy)

    sweep = sub.add_parser("sweep", help="run trials of a key=a,b,c grid through a Prefect task runner; register "
                           "the best")
    sweep.add_argument("project", help="a project name from `paperline ls`")
    sweep.add_argument("--config", default="default", help="the config the trials start from (default: default)")
    sweep.add_argument("overrides", nargs="*", metavar="key=a,b,c",
                       help="axes: every combination is a trial, e.g. seed=0,1 train.stages.0.loss=cosent,cosine")
    sweep.add_argument("--runner", default="thread", metavar="thread|dask|ray[:ADDRESS]",
                       help="Prefect task runner: threads here, a Dask or Ray cluster (local without ADDRESS)")
    sweep.add_argument("--workers", type=int, help="parallel trials: threads or local Dask workers "
                       "(default: the number of trials, at most the CPU count)")
    sweep.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs each trial asks the runner for "
                       "(Dask resources, Ray num_gpus; not the thread runner)")
    sweep.set_defaults(func=cmd_sweep)

    data = sub.add_parser("data", help="the versioned dataset").add_subparsers(dest="data_command", required=True)
    pull = data.add_parser("pull", help="fetch data/ at the version in data.dvc from the DVC remote")
    pull.add_argument("--force", action="store_true", help="overwrite local changes in data/")
    pull.set_defaults(func=cmd_data_pull)
    data.add_parser("status", help="the data version and whether data/ matches it").set_defaults(func=cmd_data_status)
    validate = data.add_parser("validate", help="run the data gate on every dataset in data/")
    validate.add_argument("--report", help="write the full markdown report to this file")
    validate.set_defaults(func=cmd_data_validate)

    models = sub.add_parser("models", help="registered models").add_subparsers(dest="models_command", required=True)
    models.add_parser("ls", help="models, versions, aliases, primary metric").set_defaults(func=cmd_models_ls)
    history = models.add_parser("history", help="every alias change of a model: who, when, why")
    history.add_argument("name")
    history.set_defaults(func=cmd_models_history)
    leaderboard = sub.add_parser("leaderboard", help="every project's champion on one task: metric, key "
                                 "params, data version, encode cost; logged to MLflow (and Prefect)")
    leaderboard.add_argument("--task", default="stsb", choices=_task_names(),
                             help="which task's metric ranks the champions (default: stsb)")
    leaderboard.set_defaults(func=cmd_leaderboard)
    sub.add_parser("doctor", help="find runs that died (a kill, a crash) and close them: MLflow run, "
                   "half-registered version, aliases, lineage").set_defaults(func=cmd_doctor)

    promote = sub.add_parser("promote", help="make a version the champion, by hand (audited)")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--reason", required=True, help="why; written to the audit history")
    promote.add_argument("--force", action="store_true",
                         help="promote even if the policy refuses (failed data gate, below the floor); the audit "
                              "row says what was overridden")
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser("rollback", help="give the champion alias back to the previous champion (audited)")
    rollback.add_argument("name")
    rollback.add_argument("--reason", required=True, help="why; written to the audit history")
    rollback.set_defaults(func=cmd_rollback)

    export = sub.add_parser("export", help="write a registered model cut to K layers and D dims (2D Matryoshka)")
    export.add_argument("model", metavar="NAME@ALIAS", help="e.g. matryoshka_2d@champion")
    export.add_argument("--layers", type=int, help="keep the first K transformer layers (default: a budget "
                        "alias's cell, e.g. champion-l3-d128)")
    export.add_argument("--dim", type=int, help="truncate embeddings to the first D dimensions (default: the "
                        "budget alias's cell)")
    export.add_argument("out", help="output folder (a plain sentence-transformers model); must not exist")
    export.add_argument("--force", action="store_true", help="replace an existing output folder")
    export.set_defaults(func=cmd_export)

    sub.add_parser("ui", help="how to open the Prefect dashboard and the MLflow UI").set_defaults(func=cmd_ui)
    server = sub.add_parser("server", help="the workspace's local Prefect server").add_subparsers(
        dest="server_command", required=True)
    server.add_parser("stop", help="stop it (the next run starts it again)").set_defaults(func=cmd_server_stop)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `run sbert_sts --config smoke seed=1`: argparse stops filling a positional list at the first option, so
    # overrides after an option arrive as extras; they are overrides only for `run` (and axes for `sweep`).
    args, extras = parser.parse_known_args(argv)
    if args.verbose:  # before any library is imported: they read their progress settings then
        os.environ["PAPERLINE_VERBOSE"] = "1"
    if extras and (args.command not in ("run", "sweep") or any(x.startswith("-") or "=" not in x for x in extras)):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if extras:
        args.overrides = [*args.overrides, *extras]
    try:
        return args.func(args)
    except PaperlineError as exc:
        print(f"paperline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("paperline: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


def entry_point() -> None:
    """The console script. After a run, skip the interpreter's teardown of torch, tokenizers and Arrow memory
    (seconds of C-level freeing on a small machine): exit handlers still run and output is flushed first."""
    import atexit

    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry_point()
