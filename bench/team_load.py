"""Load on a team store: concurrent runs, promotions and a leaderboard against one MLflow server and one
PostgreSQL store.

The question: what happens when a team runs several projects at once against the same services? Set up on
loopback, everything fresh and removed at the end:
- two new databases in the PostgreSQL server at 127.0.0.1:5432 (trust auth; `PAPERLINE_TEST_POSTGRES_URL` names
  another admin URL): one for `mlflow server` (tracking and registry, artifacts proxied to a temporary folder),
  one for paperline's audit and lineage store (`PAPERLINE_STORE_URL`);
- a temporary workspace (`PAPERLINE_WORKSPACE`: caches, checkpoints) and its local Prefect server, started once
  before the runs (`paperline.ops.services.prefect_server`);
then, all with OMP_NUM_THREADS=1:
1. seed: two `paperline run sbert_sts --config smoke` with different seeds at once (two versions to promote);
2. load: the smoke configs of several projects at once (`--runs`; one of them sbert_sts again, registering into
   the model being promoted, and distilled_sentence_embedding, whose teacher is cross_encoder_sts's smoke run,
   also run at the same time), while two workers alternate `paperline promote --force` and `paperline rollback`
   on sbert_sts-smoke, and `paperline leaderboard --include-capped` runs twice.
Every command is a subprocess with a timeout (`--timeout`, default 900 s) and everything started is stopped in a
`finally`. A sampler polls `pg_stat_activity` twice a second for sessions of the two databases waiting on a lock
(`wait_event_type = 'Lock'`: row and table locks; paperline's own locks are advisory locks taken with
`pg_try_advisory_lock` in a poll loop, so its waits show as held advisory locks, counted from `pg_locks`).

Checked afterwards:
- every command ended with exit 0, or failed with exactly one `paperline: error:` line, its last line, and no
  traceback in its stderr;
- no lock wait ran out: no `waited ... for the lock` / `lock timeout` / `deadlock detected` in any output, and no
  sampled Lock wait longer than `--max-lock-wait` seconds;
- the audit history agrees with the aliases (`paperline.ops.runs.reconcile.alias_disagreements`: for every model,
  the latest audit row per alias names the version the registry's alias points at), every version has its
  `register` row, no lineage row is left `running` and no MLflow run RUNNING.

Run (repo root, after `paperline data pull`):
    OMP_NUM_THREADS=1 .venv/bin/python bench/team_load.py                       # 6 runs + 2 seed runs
    OMP_NUM_THREADS=1 .venv/bin/python bench/team_load.py --runs 3 --promotions 2   # a quick try
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADMIN_URL = os.environ.get("PAPERLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PROMOTED = "sbert_sts-smoke"

SEED_RUNS = [("sbert_sts", "smoke", ["seed=1"]), ("sbert_sts", "smoke", ["seed=2"])]
# The cheapest smoke configs (tens of seconds each alone), in the order --runs takes them; all different
# projects or configs. distilled_sentence_embedding's teacher is cross_encoder_sts smoke: its upstream run and
# the cross_encoder_sts run below share one cache key, so one trains and the other waits for it.
LOAD_RUNS = [
    ("sbert_sts", "smoke", ["seed=3", "train.stages.0.loss=cosine"]),
    ("cross_encoder_sts", "smoke", []),
    ("matryoshka_2d", "smoke", []),
    ("trans_encoder", "smoke", []),
    ("defsent_plus", "smoke", []),
    ("distilled_sentence_embedding", "smoke", []),
    ("sbert_sts", "nli_then_sts", ["train.stages.0.max_rows=48", "train.stages.0.max_steps=2",
                                   "train.stages.1.max_rows=48", "train.stages.1.max_steps=2",
                                   "evaluate.max_rows=40", "model_name=sbert_sts-nli-smoke"]),
]
TIMED_OUT_LOCK = re.compile(r"waited \d+ s for the lock|lock timeout|could not obtain lock|deadlock detected",
                            re.IGNORECASE)


@dataclass
class Outcome:
    """One command: what it was, how it ended, and where its output is."""

    label: str
    args: list[str]
    rc: int | None = None
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("paperline: error:")]

    def problem(self) -> str | None:
        """None when the command succeeded or failed in one line; else what is wrong with how it ended."""
        if self.timed_out:
            return "timed out"
        if "Traceback (most recent call last)" in self.stderr:
            return "traceback in stderr"
        if self.rc == 0:
            return None
        lines = self.stderr.strip().splitlines()
        if len(self.error_lines) != 1 or not lines or lines[-1] != self.error_lines[0]:
            return f"exit {self.rc} without exactly one final `paperline: error:` line"
        return None

    def ended(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.rc == 0:
            return "ok"
        return f"exit {self.rc}: {(self.error_lines or ['?'])[-1].removeprefix('paperline: error: ')}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _admin(*statements: str) -> None:
    import psycopg2

    connection = psycopg2.connect(ADMIN_URL, connect_timeout=5)
    connection.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


def _database_url(name: str) -> str:
    base, _, query = ADMIN_URL.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def new_database(stack: ExitStack, prefix: str) -> str:
    """A new empty database, dropped when `stack` closes; returns its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    stack.callback(_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return _database_url(name)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def start_mlflow(stack: ExitStack, backend_url: str, folder: Path, workers: int) -> str:
    """`mlflow server` on `backend_url`, artifacts proxied to `folder`; stopped when `stack` closes."""
    port = _free_port()
    log = folder / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_url, "--serve-artifacts",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(_stop_group, process)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mlflow server exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=5).close()
            return url
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mlflow server did not answer within 180 s: {log.read_text()[-3000:]}")


@dataclass
class LockSampler:
    """Polls pg_stat_activity and pg_locks for the given databases every `interval` s until stopped."""

    databases: list[str]
    interval: float = 0.5
    samples: int = 0
    lock_waits: list[tuple[str, str, float, str]] = field(default_factory=list)  # (db, event, seconds, query)
    max_advisory: int = 0
    max_sessions: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LockSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        import psycopg2

        try:
            connection = psycopg2.connect(ADMIN_URL, connect_timeout=5)
            connection.autocommit = True
        except psycopg2.Error as error:
            self.errors.append(str(error).strip())
            return
        try:
            with connection.cursor() as cursor:
                while not self._stop.wait(self.interval):
                    cursor.execute(
                        "SELECT datname, wait_event, EXTRACT(EPOCH FROM now() - state_change), left(query, 120) "
                        "FROM pg_stat_activity WHERE datname = ANY(%s) AND wait_event_type = 'Lock'",
                        (self.databases,))
                    self.lock_waits += [(d, e, float(s or 0), q) for d, e, s, q in cursor.fetchall()]
                    cursor.execute(
                        "SELECT count(*) FILTER (WHERE l.locktype = 'advisory' AND l.granted), "
                        "(SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)) "
                        "FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE d.datname = ANY(%s)",
                        (self.databases, self.databases))
                    advisory, sessions = cursor.fetchone()
                    self.max_advisory = max(self.max_advisory, advisory or 0)
                    self.max_sessions = max(self.max_sessions, sessions or 0)
                    self.samples += 1
        except psycopg2.Error as error:
            self.errors.append(str(error).strip())
        finally:
            connection.close()

    def longest_wait(self) -> float:
        return max((seconds for *_, seconds, _ in self.lock_waits), default=0.0)


def run_command(label: str, args: list[str], env: dict[str, str], timeout: float, log_dir: Path) -> Outcome:
    """One `paperline` command, bounded by `timeout` (its process group is killed then); output kept in log_dir."""
    outcome = Outcome(label, args)
    started = time.monotonic()
    process = subprocess.Popen([str(BIN / "paperline"), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        outcome.stdout, outcome.stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        outcome.timed_out = True
        _stop_group(process)
        outcome.stdout, outcome.stderr = process.communicate()
    finally:
        if process.poll() is None:
            _stop_group(process)
    outcome.rc, outcome.seconds = process.returncode, time.monotonic() - started
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    (log_dir / f"{safe}.out").write_text(outcome.stdout)
    (log_dir / f"{safe}.err").write_text(outcome.stderr)
    return outcome


def run_args(project: str, config: str, overrides: list[str]) -> tuple[str, list[str]]:
    label = f"run {project} [{config}]" + (f" {' '.join(overrides)}" if overrides else "")
    return label, ["run", project, "--config", config, *overrides]


def promoter(worker: int, count: int, env, timeout, log_dir, versions: list[str]) -> list[Outcome]:
    """Alternate promote (each known version in turn, forced) and rollback on the promoted model."""
    outcomes = []
    for step in range(count):
        if step % 2 == 0:
            version = versions[(worker + step // 2) % len(versions)]
            args = ["promote", PROMOTED, version, "--reason", f"load test worker {worker} step {step}", "--force"]
            label = f"promote w{worker}.{step} v{version}"
        else:
            args = ["rollback", PROMOTED, "--reason", f"load test worker {worker} step {step}"]
            label = f"rollback w{worker}.{step}"
        outcomes.append(run_command(label, args, env, timeout, log_dir))
    return outcomes


def consistency(tracking_uri: str, store_url: str) -> dict[str, list[str]]:
    """What disagrees after the load, by check; empty lists when everything agrees."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from paperline.ops.registry.versions import _pages
    from paperline.ops.runs.reconcile import alias_disagreements
    from paperline.ops.store.audit import AuditStore

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    store = AuditStore(store_url)
    try:
        found: dict[str, list[str]] = {"aliases": alias_disagreements(store, client), "unregistered": [],
                                       "lineage running": [], "MLflow RUNNING": []}
        for model in _pages(client.search_registered_models):
            registered = {e.new_version for e in store.alias_history(model.name) if e.action == "register"}
            for version in _pages(client.search_model_versions, filter_string=f"name = '{model.name}'"):
                if str(version.version) not in registered:
                    found["unregistered"].append(f"{model.name} v{version.version} has no `register` audit row")
        found["lineage running"] = [f"{r.project} run {r.mlflow_run_id}" for r in store.lineage(status="running")]
        experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        for run in client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000):
            found["MLflow RUNNING"].append(f"{run.info.run_name} ({run.info.run_id})")
        found["models"] = [f"{m['name']}: {m['versions']} versions, aliases {m['aliases']}"
                           for m in _models(client)]
        return found
    finally:
        store.close()


def _models(client) -> list[dict]:
    from paperline.ops.registry.versions import _pages

    return [{"name": m.name, "aliases": dict(m.aliases),
             "versions": len(list(_pages(client.search_model_versions, filter_string=f"name = '{m.name}'")))}
            for m in _pages(client.search_registered_models)]


def registered_versions(tracking_uri: str) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return sorted((str(v.version) for v in client.search_model_versions(f"name = '{PROMOTED}'")), key=int)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help=f"concurrent runs, at most {len(LOAD_RUNS)}")
    parser.add_argument("--promotions", type=int, default=4, help="promote/rollback commands per worker (2 workers)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed to each command")
    parser.add_argument("--max-lock-wait", type=float, default=60, help="a sampled lock wait longer is a failure")
    # One worker by default, as the tests' team server: with more, uvicorn's supervisor kills a worker that misses
    # its health-check ping, which on a loaded 2-core machine happens during start-up, over and over.
    parser.add_argument("--mlflow-workers", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the report here (markdown)")
    parser.add_argument("--keep-logs", type=Path, help="copy every command's output into this folder")
    args = parser.parse_args()
    if not 1 <= args.runs <= len(LOAD_RUNS):
        parser.error(f"--runs must be 1..{len(LOAD_RUNS)}")
    sys.path.insert(0, str(ROOT / "src"))
    from paperline.ops.services.prefect_server import ensure_local_server, stop_local_server

    load_start = os.getloadavg()[0]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="team-load-")))
        log_dir = args.keep_logs or tmp / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        tracking_db, store_url = new_database(stack, "team_load_mlflow"), new_database(stack, "team_load_store")
        mlflow_url = start_mlflow(stack, tracking_db, tmp, args.mlflow_workers)
        workspace = tmp / "workspace"
        env = {**os.environ, "PAPERLINE_WORKSPACE": str(workspace), "MLFLOW_TRACKING_URI": mlflow_url,
               "PAPERLINE_STORE_URL": store_url, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "PAPERLINE_PREFECT_PORT": str(_free_port()),
               "PAPERLINE_ACTOR": "team-load"}
        for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PAPERLINE_ROOT"):
            env.pop(key, None)
        os.environ["PAPERLINE_PREFECT_PORT"] = env["PAPERLINE_PREFECT_PORT"]
        ensure_local_server(workspace / "prefect", announce=lambda _: None)
        stack.callback(stop_local_server, workspace / "prefect")
        databases = [url.rsplit("/", 1)[1].split("?")[0] for url in (tracking_db, store_url)]
        sampler = LockSampler(databases).start()
        stack.callback(sampler.stop)

        def in_parallel(jobs: list[tuple[str, list[str]]]) -> list[Outcome]:
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                return list(pool.map(lambda job: run_command(*job, env, args.timeout, log_dir), jobs))

        started = time.monotonic()
        seed = in_parallel([run_args(*run) for run in SEED_RUNS])
        seed_s = time.monotonic() - started
        versions = registered_versions(mlflow_url)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.runs + 3) as pool:
            runs = [pool.submit(run_command, *run_args(*run), env, args.timeout, log_dir)
                    for run in LOAD_RUNS[:args.runs]]
            promotions = [pool.submit(promoter, worker, args.promotions, env, args.timeout, log_dir, versions)
                          for worker in range(2)] if len(versions) >= 1 else []

            def leaderboards() -> list[Outcome]:
                out = []
                for index, delay in enumerate((30, 60)):  # while the runs train, then while they register
                    time.sleep(delay)
                    out.append(run_command(f"leaderboard {index + 1}", ["leaderboard", "--include-capped"], env,
                                           args.timeout, log_dir))
                return out

            boards = pool.submit(leaderboards)
            load = [f.result() for f in runs]
            load_s = time.monotonic() - started
            load += [o for f in promotions for o in f.result()] + boards.result()
        sampler.stop()
        found = consistency(mlflow_url, store_url)
    report = render(seed, seed_s, load, load_s, args, sampler, found, load_start, os.getloadavg()[0])
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    bad = [o for o in seed + load if o.problem()] or any(found[k] for k in found if k != "models") or \
        sampler.longest_wait() > args.max_lock_wait
    sys.exit(1 if bad else 0)


def render(seed, seed_s, load, load_s, args, sampler, found, load_start, load_end) -> str:
    everything = seed + load
    timed_out_locks = [o.label for o in everything if TIMED_OUT_LOCK.search(o.stdout + o.stderr)]
    waited = [o.label for o in everything if "training: waiting for it" in o.stdout + o.stderr]
    problems = [(o.label, o.problem()) for o in everything if o.problem()]
    runs = [o for o in load if o.args[0] == "run"]
    agreement = "consistent" if not found["aliases"] else f"{len(found['aliases'])} disagree"
    lines = [
        "# Load on a team store (bench/team_load.py)", "",
        f"command: `OMP_NUM_THREADS=1 .venv/bin/python bench/team_load.py --runs {args.runs} --promotions "
        f"{args.promotions} --mlflow-workers {args.mlflow_workers}`  ",
        f"machine: {os.cpu_count()} CPU cores, {platform.system()} {platform.machine()}, Python "
        f"{platform.python_version()}; shared with other jobs (load average {load_start:.2f} at the start, "
        f"{load_end:.2f} at the end)  ",
        "services: one `mlflow server` on a fresh PostgreSQL database (artifacts proxied to a folder), the paperline "
        "store on another fresh database, the workspace's local Prefect server; all on 127.0.0.1", "",
        "| what | value |", "|---|---|",
        f"| seed runs (at once) | {len(seed)} in {seed_s:.0f} s wall: "
        f"{', '.join(o.ended() for o in seed)} |",
        f"| concurrent runs | {len(runs)} in {load_s:.0f} s wall (each {min(o.seconds for o in runs):.0f}-"
        f"{max(o.seconds for o in runs):.0f} s) |",
        f"| promote / rollback commands (2 workers) | {sum(o.args[0] in ('promote', 'rollback') for o in load)} |",
        f"| leaderboards during the load | {sum(o.args[0] == 'leaderboard' for o in load)} |",
        f"| ended ok / one-line failures / bad endings | {sum(o.rc == 0 for o in everything)} / "
        f"{sum(o.rc != 0 and not o.problem() for o in everything)} / {len(problems)} |",
        f"| PostgreSQL lock waits sampled (every {sampler.interval} s, {sampler.samples} samples) | "
        f"{len(sampler.lock_waits)}, longest {sampler.longest_wait():.1f} s |",
        f"| paperline advisory locks held at once (max) / sessions on the two databases (max) | "
        f"{sampler.max_advisory} / {sampler.max_sessions} |",
        f"| runs that waited for a twin's training (same cache key) | {len(waited)} |",
        f"| lock waits that timed out | {len(timed_out_locks)} |",
        f"| audit history vs aliases | {agreement} |",
        f"| versions without a `register` row / lineage left running / MLflow runs left RUNNING | "
        f"{len(found['unregistered'])} / {len(found['lineage running'])} / {len(found['MLflow RUNNING'])} |",
        "", "| command | seconds | ended |", "|---|---|---|",
    ]
    lines += [f"| `{o.label}` | {o.seconds:.0f} | {o.ended()} |" for o in everything]
    lines += ["", "Registered models afterwards:", ""] + [f"- {line}" for line in found["models"]]
    details = [f"- {label}: {problem}" for label, problem in problems]
    details += [f"- lock wait timed out in: {label}" for label in timed_out_locks]
    details += [f"- {kind}: {line}" for kind in ("aliases", "unregistered", "lineage running", "MLflow RUNNING")
                for line in found[kind]]
    details += [f"- sampled lock wait: {db} {event} {seconds:.1f} s: {query}"
                for db, event, seconds, query in sampler.lock_waits[:10]]
    details += [f"- sampler: {error}" for error in sampler.errors]
    if details:
        lines += ["", "Problems:", "", *details]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
