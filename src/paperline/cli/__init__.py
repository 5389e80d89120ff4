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

from paperline.cli.approvals import cmd_approve, cmd_reject
from paperline.cli.common import installed_version
from paperline.cli.data import cmd_data_pull, cmd_data_status, cmd_data_validate
from paperline.cli.models import (
    cmd_doctor,
    cmd_export,
    cmd_export_onnx,
    cmd_leaderboard,
    cmd_models_history,
    cmd_models_ls,
    cmd_promote,
    cmd_rollback,
    task_names,
)
from paperline.cli.production import add_commands as add_production_commands
from paperline.cli.production import cmd_data_watch
from paperline.cli.runs import cmd_deploy, cmd_ls, cmd_new, cmd_run, cmd_sweep
from paperline.cli.services import cmd_notify, cmd_server_stop, cmd_ui
from paperline.core.errors import PaperlineError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paperline", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"paperline {installed_version()}")
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
    deploy.add_argument("--retrain-config", metavar="CONFIG", default="default",
                        help="the config whose deployment a trigger runs: a new data version of a dataset a project "
                             "reads, or a new champion of a model it consumes, retrains that project with this "
                             "config (default: default)")
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
    watch = data.add_parser("watch", help="look for a new data version (data.dvc), gate the datasets it changed and "
                            "emit an event for each, which retrains the projects that read it (their deployments' "
                            "triggers)")
    watch.set_defaults(func=cmd_data_watch)
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
    leaderboard.add_argument("--task", default="stsb", choices=task_names(),
                             help="which task's metric ranks the champions (default: stsb)")
    leaderboard.add_argument("--include-capped", action="store_true",
                             help="also list champions scored on capped evaluation rows (smoke configs), marked")
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

    for verb, func, what in (("approve", cmd_approve, "make it the champion"),
                             ("reject", cmd_reject, "keep it challenger")):
        answer = sub.add_parser(verb, help=f"answer a promotion that waits for a person: {what} (audited; the "
                                "policy's require_approval)")
        answer.add_argument("name", help="the registered model, e.g. sbert_sts")
        answer.add_argument("--version", help="the pending version (default: the only one pending)")
        answer.add_argument("--reason", required=True, help="why; written to the audit history and the version")
        answer.set_defaults(func=func)

    export = sub.add_parser("export", help="write a registered model cut to K layers and D dims (2D Matryoshka)")
    export.add_argument("model", metavar="NAME@ALIAS", help="e.g. matryoshka_2d@champion")
    export.add_argument("--layers", type=int, help="keep the first K transformer layers (default: a budget "
                        "alias's cell, e.g. champion-l3-d128)")
    export.add_argument("--dim", type=int, help="truncate embeddings to the first D dimensions (default: the "
                        "budget alias's cell)")
    export.add_argument("out", help="output folder (a plain sentence-transformers model); must not exist, in a folder "
                        "that does")
    export.add_argument("--force", action="store_true", help="replace an existing output folder")
    export.set_defaults(func=cmd_export)

    onnx = sub.add_parser("export-onnx", help="register a sentence-transformers model as an ONNX Runtime pyfunc "
                          "that `mlflow models serve` answers fast on a CPU (<name>_onnx@<alias>)")
    onnx.add_argument("model", metavar="NAME@ALIAS", help="e.g. sbert_sts@champion")
    onnx.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the weights (faster, "
                      "cosine >= 0.95 to PyTorch instead of >= 0.999)")
    onnx.set_defaults(func=cmd_export_onnx)

    notify = sub.add_parser("notify", help="post paperline's events (promoted, refused, approvals, failed gates) to "
                            "a webhook: a Prefect automation on the server in use")
    notify.add_argument("--webhook", required=True, metavar="URL", help="where each event is POSTed as JSON")
    notify.add_argument("--file", default="infra/automations/notify-webhook.yaml",
                        help="the automation (default: infra/automations/notify-webhook.yaml, relative to the "
                             "repository)")
    notify.set_defaults(func=cmd_notify)
    add_production_commands(sub)
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
