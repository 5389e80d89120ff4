"""A team's setup, for real on loopback: object storage (moto's S3 API) for DVC and for MLflow's artifacts, and
MLflow's basic-auth server on PostgreSQL (docs/team-server.md).

One MLflow server serves the whole module (fixture `team_mlflow_server`: basic-auth, PostgreSQL, artifacts
proxied to a bucket), and one repository copy holds the data and the gate cache, so one smoke run trains and
the runs that must fail stop within seconds.
"""

from __future__ import annotations

import hashlib
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from repo_copy import BIN, make_repo_copy

MODEL = "sbert_sts-smoke"
MD5 = "f1bd840915efd71f73cab4431f31101f.dir"
ALICE, BOB = ("alice", "alice-password-1"), ("bob", "bob-password-1")


def _dvc(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    base = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=root, env=base | (env or {}), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stderr[-3000:]}"
    return result


def _md5s(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.md5(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_dvc_push_to_s3_and_pull_into_a_fresh_copy(moto_s3, tmp_path):
    """The data version goes to an S3 remote (`dvc push`) and comes back into a fresh clone (`dvc pull`)."""
    source = make_repo_copy(tmp_path / "source")  # data/ pulled from the team's shared folder remote
    bucket = moto_s3.new_bucket("dvc")
    # The README's commands: the remote and its endpoint in .dvc/config, the credentials in .dvc/config.local
    _dvc(source, "remote", "add", "s3store", f"s3://{bucket}/paperline")
    _dvc(source, "remote", "modify", "s3store", "endpointurl", moto_s3.endpoint)
    _dvc(source, "remote", "modify", "--local", "s3store", "access_key_id", moto_s3.key)
    _dvc(source, "remote", "modify", "--local", "s3store", "secret_access_key", moto_s3.secret)
    _dvc(source, "push", "-r", "s3store")
    stored = moto_s3.objects(bucket, "paperline/")
    assert stored and all(key.startswith("paperline/files/md5/") for key in stored), sorted(stored)[:5]

    # A fresh clone: data.dvc only; the S3 remote is its default and the credentials come from the environment
    clone = make_repo_copy(tmp_path / "clone", pull=False)
    assert not (clone / "data").exists()
    _dvc(clone, "remote", "add", "-d", "-f", "s3store", f"s3://{bucket}/paperline")
    _dvc(clone, "remote", "modify", "s3store", "endpointurl", moto_s3.endpoint)
    _dvc(clone, "pull", env=moto_s3.env)

    pulled = _md5s(clone / "data")
    assert pulled and pulled == _md5s(source / "data")
    from paperline.data.datasets import resolve_data_version

    version = resolve_data_version(clone, pull=False)  # data/ checked against data.dvc: the same version
    assert version.md5 == MD5 and not version.pulled


# ---- MLflow's basic-auth server, PostgreSQL, artifacts in the bucket --------------------------------------------


@pytest.fixture(scope="module")
def team(team_mlflow_server):
    team_mlflow_server.create_user(*ALICE)
    team_mlflow_server.create_user(*BOB)
    return team_mlflow_server


@pytest.fixture(scope="module")
def team_repo(tmp_path_factory) -> Path:
    """One repository copy for the module: its runs share the pulled data and the data gate's cache."""
    return make_repo_copy(tmp_path_factory.mktemp("team") / "repo")


@pytest.fixture
def as_user(team, team_repo, workspace_at):
    """A workspace of `team_repo` whose `paperline` logs in to the team server as `user` (None: anonymous)."""
    def make(user: str | None, password: str | None = None, **env: str):
        ws = workspace_at(team_repo, **team.login_env(user, password), **env)
        if not user:
            for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
                ws.env.pop(key, None)
        return ws
    return make


@pytest.fixture
def client_as(team, monkeypatch):
    """An MlflowClient of the team server logged in as (user, password)."""
    def make(user: str, password: str):
        from mlflow import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        return MlflowClient(tracking_uri=team.url, registry_uri=team.url)
    return make


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The run failed with exit code 1 and one `paperline: error:` line, the last one, and no traceback."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("paperline: error:")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr[-3000:]
    return errors[0]


def _move_experiment_away(team, name: str = "sbert_sts") -> None:
    """Rename the project's experiment (as the admin), so that the next run creates it anew."""
    status, body = team.request("GET", f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}",
                                auth=team.admin)
    if status == 200:
        status, _ = team.request("POST", "/api/2.0/mlflow/experiments/update",
                                 {"experiment_id": body["experiment"]["experiment_id"],
                                  "new_name": f"{name}-moved-{body['experiment']['experiment_id']}"},
                                 auth=team.admin)
        assert status == 200


@pytest.mark.postgres
def test_no_or_a_wrong_login_is_refused_in_one_line(team, as_user):
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{team.url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert anonymous.value.code == 401

    # refused in preflight, before Prefect starts: stderr is that one line
    anonymous = as_user(None).paperline("run", "sbert_sts", "--config", "smoke")
    line = _one_error_line(anonymous)
    assert anonymous.stderr.strip() == line
    assert f"MLflow at {team.url} requires a login (401 Unauthorized)" in line and "MLFLOW_TRACKING_USERNAME" in line

    wrong = as_user(ALICE[0], "not-her-password").paperline("run", "sbert_sts", "--config", "smoke")
    line = _one_error_line(wrong)
    assert wrong.stderr.strip() == line
    assert f"MLflow at {team.url} refused the login of user 'alice' (401 Unauthorized" in line
    assert "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line


@pytest.mark.postgres
def test_a_user_runs_registers_and_promotes_with_the_artifacts_in_object_storage(team, as_user, client_as):
    """A logged-in user's smoke run registers and promotes; every artifact is in the bucket, none on the client."""
    ws = as_user(*ALICE)
    result = ws.paperline("run", "sbert_sts", "--config", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{MODEL} v1, alias champion (promoted)" in result.stdout

    client = client_as(*ALICE)
    version = client.get_model_version_by_alias(MODEL, "champion")
    assert str(version.version) == "1"
    run = client.get_run(version.run_id)
    assert run.data.tags["paperline.gate_passed"] == "True" and run.info.status == "FINISHED"
    experiment = run.info.experiment_id
    assert run.info.artifact_uri == f"mlflow-artifacts:/{experiment}/{run.info.run_id}/artifacts"

    stored = team.s3.objects(team.bucket, "mlflow/")
    run_prefix = f"mlflow/{experiment}/{run.info.run_id}/artifacts/"
    assert f"{run_prefix}data_gate/data_gate.md" in stored, sorted(stored)[:20]
    weights = [key for key in stored if key.startswith(f"mlflow/{experiment}/models/") and
               key.endswith(".safetensors")]
    assert weights and sum(stored.values()) > 10_000_000, sorted(stored)[:20]  # the model, not just reports
    local = ws.root / ".paperline" / "mlartifacts"
    assert not local.exists() or not any(local.iterdir()), sorted(local.rglob("*"))[:10]


@pytest.mark.postgres
def test_a_user_without_permission_on_the_experiment_gets_one_line(team, as_user, client_as):
    """bob may read alice's experiment (default_permission = READ) but not write runs to it."""
    alice = client_as(*ALICE)
    if alice.get_experiment_by_name("sbert_sts") is None:  # the run above made it; alone, this test makes it
        alice.create_experiment("sbert_sts")
    line = _one_error_line(as_user(*BOB).paperline("run", "sbert_sts", "--config", "smoke"))
    assert f"MLflow at {team.url} does not allow user 'bob' to write runs to the experiment 'sbert_sts'" in line
    assert "(403 Forbidden); ask an MLflow admin for permission" in line


@pytest.mark.postgres
def test_an_artifact_root_the_server_refuses_is_one_line(team, as_user):
    """PAPERLINE_ARTIFACT_ROOT=mlflow-artifacts:/paperline: basic-auth reads `paperline` as the experiment id and
    refuses every upload of a non-admin user; the run stops at its first artifact with one line."""
    _move_experiment_away(team)
    try:
        ws = as_user(*ALICE, PAPERLINE_ARTIFACT_ROOT="mlflow-artifacts:/paperline")
        line = _one_error_line(ws.paperline("run", "sbert_sts", "--config", "smoke"))
        assert f"MLflow at {team.url} does not allow user 'alice' to write 'data_gate'" in line
        assert "mlflow-artifacts:/paperline/sbert_sts/" in line and "unset PAPERLINE_ARTIFACT_ROOT" in line
    finally:
        _move_experiment_away(team)  # the experiment made with the refused location


# ---- permissions on the registry: a 401/403 from any command is one line, and nothing moves ---------------------


def _aliases_and_history(team_repo: Path, client) -> tuple[dict, list]:
    from paperline.ops.store.audit import AuditStore

    history = AuditStore(f"sqlite:///{team_repo / '.paperline' / 'paperline.db'}").alias_history(MODEL)
    return (dict(client.get_registered_model(MODEL).aliases),
            [(e.id, e.alias, e.action, e.previous_version, e.new_version) for e in history])


def _alice_model_with_two_champions(as_user, client_as) -> None:
    """alice's model with a champion history of two versions (v1, then v2 promoted by hand), whatever ran before:
    a second version is made from the first one's files, no training."""
    alice = client_as(*ALICE)
    versions = alice.search_model_versions(f"name = '{MODEL}'")
    if not versions:
        result = as_user(*ALICE).paperline("run", "sbert_sts", "--config", "smoke")
        assert result.returncode == 0, result.stderr[-3000:]
        versions = alice.search_model_versions(f"name = '{MODEL}'")
    if len(versions) < 2:
        first = min(versions, key=lambda v: int(v.version))
        # a search's versions may not carry model_id; the source `models:/<model_id>` names it
        model_id = first.model_id or first.source.removeprefix("models:/")
        alice.create_model_version(MODEL, first.source, run_id=first.run_id, tags=first.tags, model_id=model_id)
    latest = max(int(v.version) for v in alice.search_model_versions(f"name = '{MODEL}'"))
    if str(alice.get_registered_model(MODEL).aliases.get("champion")) != str(latest):
        promoted = as_user(*ALICE).paperline("promote", MODEL, str(latest), "--force", "--reason", "a second champion")
        assert promoted.returncode == 0, promoted.stderr[-3000:]


@pytest.mark.postgres
def test_a_wrong_password_on_models_ls_and_history_is_one_line(team, as_user):
    for command in (["models", "ls"], ["models", "history", MODEL]):
        result = as_user(BOB[0], "not-his-password").paperline(*command)
        line = _one_error_line(result)
        assert result.stderr.strip() == line
        assert f"MLflow at {team.url} refused the login of user 'bob' (401 Unauthorized" in line
        assert "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line


@pytest.mark.postgres
def test_promote_and_rollback_without_permission_on_the_model_move_nothing(team, team_repo, as_user, client_as):
    """bob may read alice's model (default_permission = READ), not move its aliases: one line each, exit 1, the
    alias where it was and no audit row written (the row's transaction rolls back when the alias move fails)."""
    _alice_model_with_two_champions(as_user, client_as)
    alice = client_as(*ALICE)
    before = _aliases_and_history(team_repo, alice)
    champion = str(before[0]["champion"])
    other = next(str(v.version) for v in alice.search_model_versions(f"name = '{MODEL}'")
                 if str(v.version) != champion)

    bob = as_user(*BOB)
    promote = bob.paperline("promote", MODEL, other, "--force", "--reason", "bob tries")
    line = _one_error_line(promote)
    assert promote.stderr.strip() == line
    assert (f"MLflow at {team.url} does not allow user 'bob' to point the alias 'champion' of the model '{MODEL}' "
            f"at version {other} (403 Forbidden); ask the owner of the registered model '{MODEL}'") in line
    assert "for EDIT permission on it, or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line
    assert _aliases_and_history(team_repo, alice) == before

    rollback = bob.paperline("rollback", MODEL, "--reason", "bob tries")
    line = _one_error_line(rollback)
    assert rollback.stderr.strip() == line
    assert f"does not allow user 'bob' to point the alias 'champion' of the model '{MODEL}'" in line
    assert _aliases_and_history(team_repo, alice) == before


@pytest.mark.postgres
def test_a_run_whose_registration_is_refused_registers_nothing_and_closes_its_run(team, team_repo, as_user,
                                                                                  client_as):
    """bob may write runs to the project's experiment (an admin granted EDIT) but only read alice's model: his run
    trains, then registering is refused: one line, exit 1, no new version, his lineage row and MLflow run closed."""
    from paperline.ops.store.audit import AuditStore

    _alice_model_with_two_champions(as_user, client_as)
    alice = client_as(*ALICE)
    experiment = alice.get_experiment_by_name("sbert_sts") or alice.get_experiment(
        alice.create_experiment("sbert_sts"))
    # MLflow 3's basic-auth grants through one endpoint per user and resource (its 2.0 permission routes are gone)
    status, _ = team.request("POST", "/api/3.0/mlflow/users/permissions/grant",
                             {"username": BOB[0], "resource_type": "experiment",
                              "resource_id": experiment.experiment_id, "permission": "EDIT"}, auth=team.admin)
    assert status == 200
    versions = sorted(str(v.version) for v in alice.search_model_versions(f"name = '{MODEL}'"))
    before = _aliases_and_history(team_repo, alice)
    store = AuditStore(f"sqlite:///{team_repo / '.paperline' / 'paperline.db'}")
    earlier = {row.id for row in store.lineage(project="sbert_sts")}

    result = as_user(*BOB).paperline("run", "sbert_sts", "--config", "smoke", "seed=7")  # a model of its own
    line = _one_error_line(result)
    assert (f"MLflow at {team.url} does not allow user 'bob' to register a new version of the model '{MODEL}' "
            "(403 Forbidden)") in line and "for EDIT permission on it" in line

    assert sorted(str(v.version) for v in alice.search_model_versions(f"name = '{MODEL}'")) == versions
    assert _aliases_and_history(team_repo, alice) == before
    (row,) = [row for row in store.lineage(project="sbert_sts") if row.id not in earlier]
    assert row.status == "failed" and row.model_version is None
    run = alice.get_run(row.mlflow_run_id)
    assert run.info.status == "FAILED" and run.info.experiment_id == experiment.experiment_id
