"""paperline.ops.registry.champions on a fake MLflow client: which champions make the table, and what each row says."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from paperline.ops.registry.champions import (
    TASKS,
    UnknownTaskError,
    build_leaderboard,
    cost_of,
    key_params,
)


class Page(list):
    token = None


class FakeClient:
    """Registered models with aliases, versions with tags, runs with params/metrics/tags; `search_registered_models`
    pages two models at a time, as a real store may."""

    def __init__(self):
        self.models: dict[str, dict] = {}
        self.runs: dict[str, SimpleNamespace] = {}

    def add(self, name, version, *, champion=True, tags=None, params=None, run_metrics=None, run_tags=None):
        run_id = f"run-{name}-{version}"
        self.runs[run_id] = SimpleNamespace(data=SimpleNamespace(
            params=dict(params or {}), metrics=dict(run_metrics or {}), tags=dict(run_tags or {})))
        model = self.models.setdefault(name, {"aliases": {}, "versions": {}})
        model["versions"][str(version)] = SimpleNamespace(name=name, version=str(version), run_id=run_id,
                                                          tags=dict(tags or {}))
        if champion:
            model["aliases"]["champion"] = str(version)

    def search_registered_models(self, page_token=None):
        names = sorted(self.models)
        start = int(page_token or 0)
        page = Page(SimpleNamespace(name=n, aliases=dict(self.models[n]["aliases"])) for n in names[start:start + 2])
        page.token = str(start + 2) if start + 2 < len(names) else None
        return page

    def get_model_version_by_alias(self, name, alias):
        return self.models[name]["versions"][self.models[name]["aliases"][alias]]

    def get_run(self, run_id):
        return self.runs[run_id]


def _tags(project, md5="md5-a", **metrics):
    return {"paperline.project": project, "paperline.dataset_md5": md5, "paperline.primary_metric": "x",
            **{f"paperline.metric.{k}": f"{v:.4f}" for k, v in metrics.items()}}


@pytest.fixture
def client():
    c = FakeClient()
    c.add("sbert_sts", 1, tags=_tags("sbert_sts", stsb_test_spearman=83.0, stsb_dev_spearman=86.0),
          params={"base_model": "sentence-transformers/all-MiniLM-L6-v2", "train.stages.0.loss": "cosent",
                  "train.stages.0.fit.epochs": "1.0", "train.stages.0.fit.batch_size": "16", "seed": "0",
                  "evaluate.batch_size": "64"})
    # the champion is v1, not the later v2: the table shows what serves
    c.add("sbert_sts", 2, champion=False, tags=_tags("sbert_sts", stsb_test_spearman=99.0))
    c.add("classical_baselines", 1, tags=_tags("classical_baselines", stsb_test_spearman=60.5, stsb_dev_spearman=70.0,
                                               encode_ms_per_1k=15.0, minilm_encode_ms_per_1k=5000.0))
    c.add("defsent_plus", 3, tags=_tags("defsent_plus", revdict_test_mrr=31.0, revdict_test_top10=55.0))
    c.add("no_champion", 1, champion=False, tags=_tags("no_champion", stsb_test_spearman=90.0))
    c.add("unlabelled", 1, tags={}, run_metrics={"stsb_test_spearman": 70.0},  # registered by hand: run's metrics
          run_tags={"paperline.project": "unlabelled", "paperline.dataset_md5": "md5-b"})
    return c


def test_stsb_lists_each_champion_that_reports_the_metric_best_first(client):
    board = build_leaderboard(client, "stsb")
    assert [(r.model, r.version) for r in board.rows] == [("sbert_sts", "1"), ("unlabelled", "1"),
                                                          ("classical_baselines", "1")]
    top = board.rows[0]
    assert (top.project, top.test, top.dev, top.data_version) == ("sbert_sts", 83.0, 86.0, "md5-a")
    assert top.params == "base_model=all-MiniLM-L6-v2 loss=cosent epochs=1.0 batch_size=16"
    assert top.cost_ms_per_1k is None
    assert board.rows[2].cost_ms_per_1k == 15.0  # the served model's cost, not an arm's
    assert board.rows[1].project == "unlabelled" and board.rows[1].data_version == "md5-b"


def test_other_tasks_pick_their_own_metrics(client):
    board = build_leaderboard(client, "reverse-dictionary")
    assert [r.model for r in board.rows] == ["defsent_plus"]
    assert board.records()[0]["revdict_test_top10"] == 55.0
    assert board.header()[:4] == ["project", "model", "version", "revdict_test_mrr"]
    assert build_leaderboard(client, "response-selection").rows == []
    client.add("uni_encoder", 1, tags=_tags("uni_encoder", test_r10_at_1=60.0, dev_r10_at_1=62.0, test_mrr=70.0,
                                            stsb_test_spearman=10.0))
    (row,) = build_leaderboard(client, "response-selection").records()
    assert (row["model"], row["test_r10_at_1"], row["dev_r10_at_1"], row["test_mrr"]) == ("uni_encoder", 60.0, 62.0,
                                                                                          70.0)
    assert row["test_r10_at_2"] is None


def test_table_shapes_agree(client):
    board = build_leaderboard(client, "stsb")
    columns = board.columns()
    assert list(columns) == board.header()
    assert all(len(v) == len(board.rows) for v in columns.values())
    assert columns["encode ms/1k"] == ["-", "-", 15.0]
    assert board.text_rows()[0][3] == "83.00" and len(board.text_rows()[0]) == len(board.header())


def test_an_unknown_task_is_a_usage_error(client):
    with pytest.raises(UnknownTaskError, match="unknown task 'sts'; choose one of stsb, "):
        build_leaderboard(client, "sts")
    assert UnknownTaskError.exit_code == 2


def test_key_params_and_cost_rules():
    assert key_params({"seed": "0"}) == "-"
    two_stages = {"train.stages.0.loss": "mnrl", "train.stages.1.loss": "cosent", "train.stages.10.loss": "x",
                  "train.stages.0.fit.epochs": "1", "train.stages.1.fit.epochs": "1"}
    assert key_params(two_stages) == "loss=mnrl/cosent/x epochs=1"
    assert cost_of({"a_encode_ms_per_1k": 3.0}) == 3.0
    assert cost_of({"a_encode_ms_per_1k": 3.0, "b_encode_ms_per_1k": 4.0}) is None
    assert TASKS["stsb"].test == "stsb_test_spearman" and TASKS["stsb"].dev == "stsb_dev_spearman"


def test_a_champion_scored_on_capped_evaluation_rows_is_skipped_with_the_reason(client):
    """A smoke config scores the first 40 rows: 93 there is not comparable with 83 on the whole split."""
    client.add("sbert_sts-smoke", 1, tags=_tags("sbert_sts", stsb_test_spearman=93.1),
               params={"evaluate.max_rows": "40", "evaluate.batch_size": "64"})
    client.add("uncapped", 1, tags=_tags("sbert_sts", stsb_test_spearman=80.0), params={"evaluate.max_rows": "None"})
    board = build_leaderboard(client, "stsb")
    assert "sbert_sts-smoke" not in [r.model for r in board.rows] and "uncapped" in [r.model for r in board.rows]
    assert "sbert_sts-smoke v1 (evaluated on the first 40 rows, not the whole split; --include-capped lists it)" \
        in board.skipped
    (smoke,) = [r for r in build_leaderboard(client, "stsb", include_capped=True).rows if r.model == "sbert_sts-smoke"]
    assert smoke.params.endswith("(scored on the first 40 rows)")
