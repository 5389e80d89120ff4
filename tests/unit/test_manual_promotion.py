"""A manual promotion answers to the policy's hard rules unless forced, and alias moves of one model serialise:
real MLflow on SQLite, a real audit store (SQLite, and PostgreSQL for the race), real processes racing."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import test_registry as base
from test_registry import _logged_model

from paperline.ops.registry.manual_policy import policy_view
from paperline.ops.registry.policy import Policy
from paperline.ops.registry.aliases import ModelRegistry, PolicyRefusal
from paperline.ops.store.audit import AuditStore

POLICY = "default: {require_gate_passed: true, min_primary_metric: 80.0}\n"
NAME = "sbert_sts"
# test_registry's fixtures: an MLflow registry on SQLite, an audit store, a registry without a policy file
_mlflow_template, client, store, registry = base._mlflow_template, base.client, base.store, base.registry


def _version(registry: ModelRegistry, root: Path, metric: float | None, gate: str | None = "True") -> str:
    run_id, uri = _logged_model(registry.client, root)  # its run says the gate passed, as a real run's does
    if gate is None:
        registry.client.delete_tag(run_id, "paperline.gate_passed")
    else:
        registry.client.set_tag(run_id, "paperline.gate_passed", gate)
    tags = {"paperline.primary_metric": "stsb_test_spearman"}
    if metric is not None:
        tags["paperline.metric.stsb_test_spearman"] = str(metric)
    return registry.register(name=NAME, model_uri=uri, run_id=run_id, tags=tags)


@pytest.fixture
def policed(client, store, tmp_path) -> ModelRegistry:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return ModelRegistry(client, store, actor="alice", policy_path=tmp_path / "policy.yaml")


def _champion(registry: ModelRegistry) -> str | None:
    version = registry.client.get_registered_model(NAME).aliases.get("champion")
    return None if version is None else str(version)


def test_a_version_below_the_floor_is_refused_in_one_line_and_moves_nothing(policed, tmp_path):
    good = _version(policed, tmp_path, 84.0)
    low = _version(policed, tmp_path, 70.0)
    event = policed.promote(NAME, good, reason="baseline")
    assert event.reason == "baseline" and event.gate_passed is True
    assert event.details["policy"]["refusals"] == [] and not event.details["policy"]["forced"]
    rows = len(policed.history(NAME))

    with pytest.raises(PolicyRefusal) as refused:
        policed.promote(NAME, low, reason="try it")
    message = str(refused.value)
    assert "\n" not in message
    assert "floor: failed (stsb_test_spearman 70 < 80)" in message and "--force" in message
    assert _champion(policed) == good and len(policed.history(NAME)) == rows


def test_force_promotes_and_the_audit_row_says_what_was_overridden(policed, tmp_path):
    good = _version(policed, tmp_path, 84.0)
    low = _version(policed, tmp_path, 70.0)
    policed.promote(NAME, good, reason="baseline")
    event = policed.promote(NAME, low, reason="incident 42: v1 leaks", force=True)
    assert _champion(policed) == low
    assert event.reason == "incident 42: v1 leaks | forced: floor: failed (stsb_test_spearman 70 < 80)"
    assert event.details["policy"]["forced"] is True and event.action == "promote" and event.actor == "alice"
    assert policed.history(NAME)[-1].reason == event.reason  # what the audit history keeps


def test_force_on_a_version_the_policy_accepts_is_no_override(policed, tmp_path):
    good = _version(policed, tmp_path, 84.0)
    event = policed.promote(NAME, good, reason="baseline", force=True)
    assert event.reason == "baseline" and event.details["policy"]["forced"] is False


@pytest.mark.parametrize("gate, line", [("False", "data gate: failed"), (None, "data gate: unknown")])
def test_a_failed_or_unrecorded_gate_is_refused_unless_forced(policed, tmp_path, gate, line):
    version = _version(policed, tmp_path, 90.0, gate=gate)
    with pytest.raises(PolicyRefusal, match=line):
        policed.promote(NAME, version, reason="try")
    assert _champion(policed) is None
    event = policed.promote(NAME, version, reason="try", force=True)
    assert f"| forced: {line}" in event.reason and event.gate_passed is (False if gate else None)


def test_worse_than_the_champion_is_shown_not_refused(policed, tmp_path):
    best = _version(policed, tmp_path, 86.0)
    older = _version(policed, tmp_path, 82.0)
    policed.promote(NAME, best, reason="best")
    event = policed.promote(NAME, older, reason="v1 is slower in production")
    assert _champion(policed) == older
    lines = event.details["policy"]["lines"]
    assert any("WORSE than the champion" in line and "-4" in line for line in lines), lines


def test_rollback_records_the_policys_view_of_its_target(policed, tmp_path):
    first, second = _version(policed, tmp_path, 84.0), _version(policed, tmp_path, 85.0)
    policed.promote(NAME, first, reason="a")
    policed.promote(NAME, second, reason="b")
    event = policed.rollback(NAME, reason="b misbehaves")
    assert event.new_version == first and event.details["policy"]["version"] == first


def test_without_a_policy_file_nothing_is_refused(registry, tmp_path):
    version = _version(registry, tmp_path, 10.0, gate="False")
    assert registry.promote(NAME, version, reason="no policy here").new_version == version


def test_the_floor_is_a_ceiling_where_lower_is_better():
    policy = Policy(min_primary_metric=0.5)
    kwargs = {"gate_passed": True, "metric": "loss", "greater_is_better": False, "champion_version": "1",
              "champion_value": "0.3"}
    assert policy_view(policy, version="2", value="0.4", **kwargs).refusals == []
    view = policy_view(policy, version="2", value="0.6", **kwargs)
    assert view.refusals == ["floor: failed (loss 0.6 > 0.5)"]
    assert "WORSE than the champion" in view.lines[-1]
    assert policy_view(Policy(require_gate_passed=False), version="2", value="0.6",
                       **{**kwargs, "gate_passed": False}).refusals == []
    assert policy_view(policy, version="2", value=None, **kwargs).refusals == ["floor: failed (v2 has no loss value)"]


# ---- racing promotions --------------------------------------------------------------------------------------

RACER = """
import sys, time
from contextlib import nullcontext
from pathlib import Path
from mlflow import MlflowClient
from paperline.ops.registry.aliases import ModelRegistry, RegistryError
from paperline.ops.store.audit import AuditStore

tracking, store_url, barrier, me, lock, *versions = sys.argv[1:]
registry = ModelRegistry(MlflowClient(tracking_uri=tracking, registry_uri=tracking), AuditStore(store_url), actor=me)
if lock == "off":  # the control: the same race without the model lock must break the chain
    registry.model_lock = lambda name: nullcontext()
move = registry._move_aliases
def slow_move(*args, **kwargs):
    time.sleep(0.3)  # between reading the champion and writing its row: a wide window for the other process
    return move(*args, **kwargs)
registry._move_aliases = slow_move
registry._model("sbert_sts"); registry.history("sbert_sts")  # connect both stores before the start line
Path(barrier, me).touch()
while len(list(Path(barrier).iterdir())) < 2:
    time.sleep(0.01)
moves = 0
for version in versions:
    try:
        registry.promote("sbert_sts", version, reason=f"{me} v{version}")
        moves += 1
    except RegistryError:  # already the champion: no move, no row
        pass
print(moves)
"""


ALIAS_WRITE_CLASH = "UNIQUE constraint failed: registered_model_aliases"


def _race(tracking: str, store_url: str, folder: Path, lock: str, orders: list[list[str]]) -> tuple[int, int]:
    """Run the racers; returns (alias moves made, racers that crashed on MLflow's own alias-write clash)."""
    barrier = folder / f"barrier-{lock}"
    barrier.mkdir()
    racers = [subprocess.Popen([sys.executable, "-c", RACER, tracking, store_url, str(barrier), f"racer{i}", lock,
                                *order], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i, order in enumerate(orders)]
    moves = clashes = 0
    for racer in racers:
        out, err = racer.communicate(timeout=300)
        # Without the lock, two processes writing the same alias can also collide inside MLflow's SQLite registry
        # (it reads, then inserts): that crash is the race showing, and only the control may have it.
        if lock == "off" and racer.returncode != 0 and ALIAS_WRITE_CLASH in err:
            clashes += 1
            continue
        assert racer.returncode == 0, err[-3000:]
        moves += int(out.strip().splitlines()[-1])
    return moves, clashes


def _chained(events) -> bool:
    return all(later.previous_version == earlier.new_version for earlier, later in itertools.pairwise(events))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_racing_promotions_serialise_and_their_audit_rows_chain(backend, client, tmp_path, request):
    url = f"sqlite:///{tmp_path}/race.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    orders = [["1", "2", "3", "4", "1", "2"], ["4", "3", "2", "1", "4", "3"]]
    for lock in ("off", "on"):
        store = AuditStore(url)
        registry = ModelRegistry(client, store, actor="setup")
        name = NAME
        for _ in range(4) if lock == "off" else ():
            run_id, uri = _logged_model(client, tmp_path)
            registry.register(name=name, model_uri=uri, run_id=run_id, tags={})
        start = len(store.alias_history(name, "champion"))
        moves, clashes = _race(tracking, url, tmp_path, lock, orders)
        events = store.alias_history(name, "champion")[start:]
        champion = _champion(registry)
        store.close()
        if lock == "off":
            assert clashes or not _chained(events), "the race never happened: the test could not tell a lock from none"
            continue
        assert len(events) == moves > 0  # exactly one row per move
        assert _chained(events), [(e.actor, e.previous_version, e.new_version) for e in events]
        assert champion == events[-1].new_version and champion in {"1", "2", "3", "4"}


def _try_lock(url: str, name: str) -> str:
    code = ("import sys; from paperline.ops.store.audit import AuditStore\n"
            "with AuditStore(sys.argv[1]).hold(sys.argv[2], wait=False) as got: print(got)")
    return subprocess.run([sys.executable, "-c", code, url, name], capture_output=True, text=True,
                          timeout=120, check=False).stdout.strip()


def test_the_model_lock_excludes_other_processes_and_is_reentrant(registry, store, tmp_path, monkeypatch):
    monkeypatch.setattr("paperline.ops.registry.aliases.MODEL_LOCK_TIMEOUT_S", 5.0)  # a deadlock fails in seconds
    version = _version(registry, tmp_path, 84.0)
    with registry.model_lock(NAME):
        assert _try_lock(store.url, f"model:{NAME}") == "False"
        # promote takes the lock again inside the caller's (register_and_promote does this): no self-deadlock
        assert registry.promote(NAME, version, reason="inside the lock").new_version == version
    assert _try_lock(store.url, f"model:{NAME}") == "True"
