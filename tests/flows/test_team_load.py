"""Load on a team store, bounded: several projects' smoke runs at once against one MLflow server on PostgreSQL
and one PostgreSQL audit store, then promotions, a rollback, a leaderboard and one more run at once
(bench/team_load.py is the larger version, with its table in bench/results/team_load.md).

What must hold: every command ends with exit 0 or one `paperline: error:` line (no traceback); no lock wait runs
out; afterwards the audit history agrees with the aliases, every version has its `register` row, no lineage row
is `running` and no MLflow run RUNNING. The runs share one repository copy, as runs on one worker share its
checkout (so also its DVC lock, and one experiment and one registered model for the two sbert_sts runs).
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.load]  # `pytest -m load`: not in make test

PROMOTED = "sbert_sts-smoke"
# The cheapest smoke configs; two runs of one project with different seeds: one experiment, one model, two versions.
RUNS = [("sbert_sts", ["seed=1"]), ("sbert_sts", ["seed=2"]), ("cross_encoder_sts", []), ("matryoshka_2d", [])]
LOCK_RAN_OUT = re.compile(r"waited \d+ s for the lock|lock timeout|could not obtain lock|deadlock detected", re.I)


def _ended_in_one_line(result) -> None:
    """Exit 0, or a failure as one final `paperline: error:` line; never a traceback, never a lock that ran out."""
    output = result.stdout + result.stderr
    assert "Traceback (most recent call last)" not in result.stderr, result.stderr[-3000:]
    assert not LOCK_RAN_OUT.search(output), output[-3000:]
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("paperline: error:")]
        assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr[-3000:]


class _LockWaits:
    """Sessions of the given databases waiting on a PostgreSQL lock, sampled twice a second in a thread."""

    def __init__(self, admin_url: str, databases: list[str]):
        self.admin_url, self.databases, self.longest = admin_url, databases, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg2

        connection = psycopg2.connect(self.admin_url, connect_timeout=5)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                while not self._stop.wait(0.5):
                    cursor.execute("SELECT max(EXTRACT(EPOCH FROM now() - state_change)) FROM pg_stat_activity "
                                   "WHERE datname = ANY(%s) AND wait_event_type = 'Lock'", (self.databases,))
                    self.longest = max(self.longest, float(cursor.fetchone()[0] or 0))
        finally:
            connection.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


def test_concurrent_runs_promotions_and_a_leaderboard_agree_with_the_audit_history(
        make_workspace, mlflow_server_on_postgres, new_postgres_database, postgres_admin_url):
    store_url = new_postgres_database().replace("postgresql://", "postgresql+psycopg2://", 1)
    ws = make_workspace(MLFLOW_TRACKING_URI=mlflow_server_on_postgres, PAPERLINE_STORE_URL=store_url,
                        OMP_NUM_THREADS="1", PAPERLINE_ACTOR="load-test")
    databases = [store_url.rsplit("/", 1)[1]]
    with _LockWaits(postgres_admin_url, databases) as waits:
        with ThreadPoolExecutor(len(RUNS)) as pool:
            runs = list(pool.map(lambda run: ws.paperline("run", run[0], "--config", "smoke", *run[1], timeout=900),
                                 RUNS))
        for (project, _), result in zip(RUNS, runs):
            assert result.returncode == 0, f"{project}: {result.stderr[-3000:]}"
            _ended_in_one_line(result)

        # Two forced promotions and a rollback racing on one model, a leaderboard, and a run registering into it.
        jobs = [("promote", PROMOTED, "1", "--reason", "load test", "--force"),
                ("promote", PROMOTED, "2", "--reason", "load test", "--force"),
                ("rollback", PROMOTED, "--reason", "load test"),
                ("leaderboard", "--include-capped"),
                ("run", "sbert_sts", "--config", "smoke", "seed=3")]
        with ThreadPoolExecutor(len(jobs)) as pool:
            outcomes = list(pool.map(lambda args: ws.paperline(*args, timeout=900), jobs))
    for args, result in zip(jobs, outcomes):
        _ended_in_one_line(result)
        # a promotion of the version that is already champion, or a rollback with nothing before it: exit 2
        assert result.returncode in ((0,) if args[0] in ("run", "leaderboard") else (0, 2)), result.stderr[-3000:]
    assert waits.longest < 60, f"a PostgreSQL lock wait of {waits.longest:.0f} s"

    from paperline.ops.runs.reconcile import alias_disagreements
    from paperline.ops.store.audit import AuditStore

    client, store = ws.client(), AuditStore(store_url)
    try:
        assert alias_disagreements(store, client) == []
        names = [m.name for m in client.search_registered_models()]
        assert PROMOTED in names and "cross_encoder_sts-smoke" in names and "matryoshka_2d-smoke" in names
        for name in names:
            registered = {e.new_version for e in store.alias_history(name) if e.action == "register"}
            versions = {str(v.version) for v in client.search_model_versions(f"name = '{name}'")}
            assert versions == registered, name
        assert len([v for v in client.search_model_versions(f"name = '{PROMOTED}'")]) == 3
        assert store.lineage(status="running") == []
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not client.search_runs(experiments, "attributes.status = 'RUNNING'")
    finally:
        store.close()
