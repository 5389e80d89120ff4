"""Model registry operations against a real MLflow registry (SQLite, and PostgreSQL once) and a real audit store."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow import MlflowClient
from sqlalchemy import event

from paperline.ops.registry.policy import Decision, GridCell, Policy, decide
from paperline.ops.registry.aliases import ModelRegistry, RegistryError
from paperline.ops.store.audit import AuditStore


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    # MLflow migrates an empty database in a few seconds; do it once and copy the file for each test.
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def client(tmp_path: Path, _mlflow_template: Path) -> MlflowClient:
    shutil.copy(_mlflow_template, tmp_path / "mlflow.db")
    return _client(f"sqlite:///{tmp_path}/mlflow.db")


@pytest.fixture
def store(tmp_path: Path):
    audit = AuditStore(f"sqlite:///{tmp_path}/audit.db")
    yield audit
    audit.close()


@pytest.fixture
def registry(client: MlflowClient, store: AuditStore) -> ModelRegistry:
    return ModelRegistry(client, store, actor="alice")


def _logged_model(client: MlflowClient, root: Path) -> tuple[str, str]:
    """A run and a tiny MLflow 3 logged model from it: (run id, ``models:/<model_id>`` as log_model returns)."""
    experiment = client.get_experiment_by_name("paperline-test")
    if experiment is None:
        experiment_id = client.create_experiment("paperline-test", artifact_location=(root / "artifacts").as_uri())
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(experiment_id)
    model = client.create_logged_model(experiment_id, name="model", source_run_id=run.info.run_id)
    folder = root / f"model-{model.model_id}"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    client.log_model_artifacts(model.model_id, str(folder))
    client.finalize_logged_model(model.model_id, "READY")
    client.set_tag(run.info.run_id, "paperline.gate_passed", "True")  # as a real run's gate leaves it
    client.set_terminated(run.info.run_id)
    return run.info.run_id, f"models:/{model.model_id}"


def _register(registry: ModelRegistry, root: Path, name: str = "sbert_sts", metric: float = 84.0, **kw) -> str:
    run_id, uri = _logged_model(registry.client, root)
    tags = {"paperline.primary_metric": "stsb_test_spearman", "paperline.metric.stsb_test_spearman": str(metric)}
    return registry.register(name=name, model_uri=uri, run_id=run_id, tags=tags, **kw)


def _versions(client: MlflowClient, name: str) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'"))


def test_register_sets_challenger_and_writes_history(registry: ModelRegistry, tmp_path: Path, monkeypatch):
    # MLflow would resolve models:/<model_id> through the process-wide tracking URI (./mlflow.db by default):
    # registering must go through the client it was given and leave nothing in the working directory.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    version = _register(registry, tmp_path, flow_run_id="flow-1")
    assert version == "1"
    assert list(cwd.iterdir()) == []
    source = registry.client.get_model_version_download_uri("sbert_sts", "1")
    assert (Path(urlparse(source).path) / "MLmodel").exists()  # the version points at the model's own files
    model = registry.client.get_registered_model("sbert_sts")
    assert model.aliases == {"challenger": 1}
    assert registry.client.get_model_version("sbert_sts", "1").tags["paperline.primary_metric"] == "stsb_test_spearman"
    [row] = registry.history("sbert_sts")
    assert (row.alias, row.action, row.actor, row.previous_version, row.new_version) == (
        "challenger", "register", "alice", None, "1")
    assert row.flow_run_id == "flow-1" and row.mlflow_run_id is not None

    assert _register(registry, tmp_path) == "2"
    assert registry.history("sbert_sts")[-1].previous_version == "1"


def test_failed_alias_step_leaves_no_version_alias_or_row(registry, tmp_path, monkeypatch):
    _register(registry, tmp_path)

    def refuse(*args, **kwargs):
        raise RuntimeError("registry unavailable")

    monkeypatch.setattr(registry.client, "set_registered_model_alias", refuse)
    with pytest.raises(RuntimeError, match="registry unavailable"):
        _register(registry, tmp_path)
    assert _versions(registry.client, "sbert_sts") == ["1"]
    assert registry.client.get_registered_model("sbert_sts").aliases == {"challenger": 1}
    assert len(registry.history("sbert_sts")) == 1


def test_failed_audit_commit_puts_the_alias_back(registry, store, tmp_path):
    _register(registry, tmp_path)
    engine = store._engine  # the store's own engine only: MLflow's sessions must keep committing

    def refuse_commit(connection):
        raise RuntimeError("audit store went away")

    event.listen(engine, "commit", refuse_commit)
    try:
        with pytest.raises(RuntimeError, match="audit store went away"):
            _register(registry, tmp_path)
    finally:
        event.remove(engine, "commit", refuse_commit)
    assert _versions(registry.client, "sbert_sts") == ["1"]
    assert registry.client.get_registered_model("sbert_sts").aliases == {"challenger": 1}
    assert len(registry.history("sbert_sts")) == 1


def test_rejected_tag_on_a_new_model_leaves_nothing(registry, tmp_path):
    run_id, uri = _logged_model(registry.client, tmp_path)
    with pytest.raises(Exception, match="Names may only contain"):
        registry.register(name="fresh", model_uri=uri, run_id=run_id, tags={"bad key!": "x"})
    assert registry.client.search_registered_models(filter_string="name = 'fresh'") == []
    assert registry.history("fresh") == []


def test_apply_decision_promotes_only_when_the_policy_says_so(registry, tmp_path):
    version = _register(registry, tmp_path)
    refused = Decision(promote=False, reasons=["floor: failed (stsb_test_spearman 60 < 70)"])
    assert registry.apply_decision(name="sbert_sts", version=version, decision=refused, gate_passed=True) is False
    assert registry.champion("sbert_sts") is None

    decision = decide(Policy(min_primary_metric=70.0), gate_passed=True, metric_name="stsb_test_spearman",
                      candidate=84.0, champion=None)
    assert registry.apply_decision(name="sbert_sts", version=version, decision=decision, gate_passed=True,
                                   flow_run_id="flow-1") is True
    assert str(registry.champion("sbert_sts").version) == version
    row = registry.history("sbert_sts")[-1]
    assert (row.alias, row.action, row.actor, row.gate_passed) == ("champion", "auto-promote", "policy", True)
    assert row.reason == "; ".join(decision.reasons)
    assert row.details["promote"] is True and row.details["candidate"] == 84.0


def test_promote_then_rollback_restores_the_previous_champion(registry, tmp_path):
    first, second = _register(registry, tmp_path), _register(registry, tmp_path)
    registry.promote("sbert_sts", first, reason="baseline")
    registry.promote("sbert_sts", second, reason="better on STS-B")
    back = registry.rollback("sbert_sts", reason="bad answers in production")

    assert str(registry.champion("sbert_sts").version) == first
    assert (back.previous_version, back.new_version) == (second, first)
    champion_rows = [r for r in registry.history("sbert_sts") if r.alias == "champion"]
    assert [(r.action, r.actor, r.reason, r.new_version) for r in champion_rows] == [
        ("promote", "alice", "baseline", first),
        ("promote", "alice", "better on STS-B", second),
        ("rollback", "alice", "bad answers in production", first),
    ]
    # Rollbacks undo like a stack: a second one has nowhere left to go, rather than flipping back to `second`.
    with pytest.raises(RegistryError, match="no earlier champion to roll back to"):
        registry.rollback("sbert_sts", reason="again")


def test_rollbacks_walk_back_one_champion_each(registry, tmp_path):
    versions = [_register(registry, tmp_path) for _ in range(3)]
    for version in versions:
        registry.promote("sbert_sts", version, reason=f"v{version}")
    assert registry.rollback("sbert_sts", reason="v3 is broken").new_version == versions[1]
    assert registry.rollback("sbert_sts", reason="v2 is broken too").new_version == versions[0]
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback("sbert_sts", reason="and v1?")


def test_rollback_skips_versions_deleted_since(registry, tmp_path):
    versions = [_register(registry, tmp_path) for _ in range(3)]
    for version in versions:
        registry.promote("sbert_sts", version, reason=f"v{version}")
    registry.client.delete_model_version("sbert_sts", versions[1])
    assert registry.rollback("sbert_sts", reason="v3 is broken").new_version == versions[0]


def test_user_errors_are_one_clear_line(registry, tmp_path):
    version = _register(registry, tmp_path)
    cases = [
        (lambda: registry.rollback("sbert_sts", reason="x"), "'sbert_sts' has no champion"),
        (lambda: registry.promote("nope", "1", reason="x"), "there is no registered model 'nope'"),
        (lambda: registry.promote("sbert_sts", "7", reason="x"), "model 'sbert_sts' has no version '7'"),
        (lambda: registry.promote("sbert_sts", version, reason="  "), "a reason is required"),
        (lambda: registry.rollback("sbert_sts", reason=""), "a reason is required"),
        (lambda: registry.champion("nope"), "there is no registered model 'nope'"),
    ]
    for call, message in cases:
        with pytest.raises(RegistryError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)
    registry.promote("sbert_sts", version, reason="first")
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote("sbert_sts", version, reason="again")
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback("sbert_sts", reason="only one champion ever")


def test_list_models_reports_aliases_and_the_champions_metric(registry, tmp_path):
    _register(registry, tmp_path, metric=83.5)
    _register(registry, tmp_path, metric=84.25)
    registry.promote("sbert_sts", "1", reason="baseline")
    _register(registry, tmp_path, name="matryoshka_2d", metric=80.0)

    rows = {row["name"]: row for row in registry.list_models()}
    assert rows["sbert_sts"] == {
        "name": "sbert_sts", "latest_version": "2", "versions": 2,
        "aliases": {"challenger": "2", "champion": "1"},
        "primary_metric": "stsb_test_spearman", "champion_metric": 83.5,
    }
    assert rows["matryoshka_2d"]["champion_metric"] is None
    assert rows["matryoshka_2d"]["primary_metric"] == "stsb_test_spearman"  # from the latest version


def test_actor_defaults_to_the_environment(client, store, monkeypatch):
    monkeypatch.setenv("PAPERLINE_ACTOR", "ci-bot")
    assert ModelRegistry(client, store).actor == "ci-bot"


@pytest.mark.postgres
def test_mlflow_and_audit_store_on_postgresql(new_postgres_database, postgres_url, tmp_path):
    # MLflow migrates the empty database itself; the audit store lives in a schema of another database.
    # The driver is explicit: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed.
    client = _client(new_postgres_database().replace("postgresql://", "postgresql+psycopg2://", 1))
    store = AuditStore(postgres_url)
    try:
        registry = ModelRegistry(client, store, actor="alice")
        first, second = _register(registry, tmp_path), _register(registry, tmp_path)
        decision = decide(Policy(), gate_passed=True, metric_name="stsb_test_spearman", candidate=84.0,
                          champion=None)
        assert registry.apply_decision(name="sbert_sts", version=first, decision=decision, gate_passed=True)
        registry.promote("sbert_sts", second, reason="better")
        assert registry.rollback("sbert_sts", reason="worse in production").new_version == first
        assert [r.action for r in registry.history("sbert_sts")] == [
            "register", "register", "auto-promote", "promote", "rollback"]
    finally:
        store.close()


BUDGET_POLICY = """
projects:
  m2d: {budgets: [{max_layers: 3, max_dims: 128}, {max_layers: 1, max_dims: 32}]}
"""


def _register_grid(registry, root, grid: dict[tuple[int, int], float]) -> str:
    run_id, uri = _logged_model(registry.client, root)
    tags = {"paperline.primary_metric": "stsb_test_spearman", "paperline.project": "m2d",
            "paperline.metric.stsb_test_spearman": "83.0",
            **{f"paperline.metric.stsb_test_spearman_l{l}_d{d}": str(v) for (l, d), v in grid.items()}}
    return registry.register(name="m2d_model", model_uri=uri, run_id=run_id, tags=tags)


@pytest.fixture
def budget_registry(client, store, tmp_path) -> ModelRegistry:
    (tmp_path / "policy.yaml").write_text(BUDGET_POLICY)
    return ModelRegistry(client, store, actor="alice", policy_path=tmp_path / "policy.yaml")


def test_budget_aliases_follow_the_champion_with_the_cell_the_grid_picks(budget_registry, tmp_path):
    registry = budget_registry
    first = _register_grid(registry, tmp_path, {(1, 32): 47.0, (2, 128): 56.0, (3, 128): 55.0, (3, 256): 66.0})
    second = _register_grid(registry, tmp_path, {(2, 128): 50.0, (3, 128): 60.0})  # no layer-1 cell

    decision = decide(Policy(), gate_passed=True, metric_name="stsb_test_spearman", candidate=83.0, champion=None)
    assert registry.apply_decision(name="m2d_model", version=first, decision=decision, gate_passed=True)
    assert registry.client.get_registered_model("m2d_model").aliases == {
        "challenger": 2, "champion": 1, "champion-l3-d128": 1, "champion-l1-d32": 1}
    assert registry.budget_aliases("m2d_model") == {"champion-l1-d32": "l1 x d32 (47.00)",
                                                    "champion-l3-d128": "l2 x d128 (56.00)"}
    assert registry.budget_cell("m2d_model", "champion-l3-d128") == GridCell(2, 128, 56.0)
    assert registry.budget_cell("m2d_model", "champion") is None
    row = [r for r in registry.history("m2d_model") if r.alias == "champion-l3-d128"][-1]
    assert (row.action, row.actor, row.new_version) == ("auto-promote", "policy", first)
    assert "champion-l3-d128 serves 2 layers x 128 dims (stsb_test_spearman 56.00)" in row.reason

    # A champion whose grid has no cell within a budget takes that budget's alias away rather than leaving it on
    # the old model; a rollback puts every alias back.
    registry.promote("m2d_model", second, reason="better at l3")
    assert registry.client.get_registered_model("m2d_model").aliases == {
        "challenger": 2, "champion": 2, "champion-l3-d128": 2}
    assert registry.budget_cell("m2d_model", "champion-l3-d128") == GridCell(3, 128, 60.0)
    registry.rollback("m2d_model", reason="worse in production")
    assert registry.client.get_registered_model("m2d_model").aliases == {
        "challenger": 2, "champion": 1, "champion-l3-d128": 1, "champion-l1-d32": 1}


def test_a_failed_budget_alias_moves_no_alias_at_all(budget_registry, tmp_path, monkeypatch):
    registry = budget_registry
    first = _register_grid(registry, tmp_path, {(1, 32): 47.0, (3, 128): 55.0})
    real = registry.client.set_registered_model_alias

    def refuse_budgets(name, alias, version):
        if alias.startswith("champion-l1"):
            raise RuntimeError("registry unavailable")
        real(name, alias, version)

    monkeypatch.setattr(registry.client, "set_registered_model_alias", refuse_budgets)
    with pytest.raises(RuntimeError, match="registry unavailable"):
        registry.promote("m2d_model", first, reason="try")
    assert registry.client.get_registered_model("m2d_model").aliases == {"challenger": 1}
    assert [r.alias for r in registry.history("m2d_model")] == ["challenger"]
