"""However a run ends, its lineage row and its MLflow run say so: a fault at each stage of `paperline run` (the
gate, training, evaluation, registration), each a real fault in the data or the files, leaves no lineage row
`running` and no MLflow run RUNNING; a file the reader cannot parse is bad data, stopped at the gate (exit 3)."""

from __future__ import annotations

import subprocess

import pytest
from repo_copy import BIN

from paperline.ops.store.audit import AuditStore

SMOKE = ("run", "sbert_sts", "--config", "smoke")


def _new_version(workspace) -> None:
    """Make the edited data/ a DVC version of its own, as a user who commits bad data does."""
    subprocess.run([str(BIN / "dvc"), "add", "-q", "data"], cwd=workspace.root, env=workspace.env, check=True)


def _mlflow_runs(workspace, experiment: str):
    client = workspace.client()
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def _assert_closed(workspace, project: str, status: str) -> None:
    rows = AuditStore(workspace.store_url).lineage(project=project)
    assert [row.status for row in rows] == [status], [(row.status, row.details) for row in rows]
    assert [run.info.status for run in _mlflow_runs(workspace, project)] == ["FAILED"]
    assert workspace.client().search_registered_models() == []


def test_a_quoted_field_the_file_ends_inside_is_a_gate_line_naming_the_file_and_line(workspace):
    dev = workspace.root / "data" / "stsb" / "dev.tsv"
    lines = dev.read_text().splitlines()
    broken = len(lines)  # the last line, 1-based: its sentence2 opens a quote the file never closes
    fields = lines[-1].split("\t")
    fields[-1] = '"' + fields[-1][:12]
    dev.write_text("\n".join(lines[:-1] + ["\t".join(fields)]))
    _new_version(workspace)

    result = workspace.paperline(*SMOKE)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "ParserError" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("paperline: error: data gate failed: stsb/dev: file_is_tab_separated: "), last
    assert f"{dev} cannot be read as tab-separated text: the quoted field that starts on line {broken} " \
           "is never closed" in last
    _assert_closed(workspace, "sbert_sts", "gate-failed")

    validated = workspace.paperline("data", "validate")
    assert validated.returncode == 3, validated.stdout[-2000:] + validated.stderr[-2000:]
    assert f"stsb/dev: file_is_tab_separated: {dev} cannot be read" in validated.stdout
    assert f"starts on line {broken} is never closed" in validated.stdout


def test_a_line_with_more_fields_than_the_header_is_a_gate_line(workspace):
    train = workspace.root / "data" / "stsb" / "train.tsv"
    lines = train.read_text().splitlines()
    lines[9] += "\tstray field"  # line 10
    train.write_text("\n".join(lines) + "\n")
    _new_version(workspace)

    result = workspace.paperline(*SMOKE)
    assert result.returncode == 3, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert f"stsb/train: file_is_tab_separated: {train} cannot be read as tab-separated text: line 10 has 8 " \
           "fields where the header has 7" in last, last
    _assert_closed(workspace, "sbert_sts", "gate-failed")


def test_a_gate_that_crashes_closes_the_lineage(workspace):
    """A split the card reads, gone from the committed version: the gate's reader raises (exit 1, one line)."""
    (workspace.root / "data" / "stsb" / "test.tsv").unlink()
    _new_version(workspace)
    result = workspace.paperline(*SMOKE)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "test.tsv does not exist" in result.stderr.strip().splitlines()[-1]
    _assert_closed(workspace, "sbert_sts", "failed")


# A tiny project whose trained model folder does not load (its config.json is cut short): with
# `evaluate.load_model=true` its evaluation loads the folder and crashes; with `false` it reports numbers without
# loading it, and the registration, which logs the model (sentence-transformers loads the folder), crashes.
FRAGILE_METHOD = '''"""A test project whose trained model folder does not load."""

from paperline.core.config import ProjectConfig
from paperline.project.interface import Evaluation, TrainedModel
from paperline.project.sections import EvaluateSection


class Evaluate(EvaluateSection):
    load_model: bool = True


class Config(ProjectConfig):
    evaluate: Evaluate = Evaluate()


def train(cfg, data, ctx):
    folder = ctx.workdir / "model"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_')  # cut short
    return TrainedModel(path=folder)


def evaluate(model, cfg, data, ctx):
    if cfg.evaluate.load_model:
        from sentence_transformers import SentenceTransformer

        SentenceTransformer(str(model.path), device="cpu")
    return Evaluation(metrics={name: 50.0 for name in cfg.metric_names()})
'''


@pytest.mark.parametrize("stage, load_model", [("evaluation", "true"), ("registration", "false")])
def test_an_evaluation_or_registration_that_crashes_closes_the_lineage(workspace, stage, load_model):
    created = workspace.paperline("new", "fragile")
    assert created.returncode == 0, created.stderr
    folder = workspace.root / "projects" / "fragile"
    (folder / "method.py").write_text(FRAGILE_METHOD)
    for config in ("default", "smoke"):
        (folder / "configs" / f"{config}.yaml").write_text(
            f"seed: 0\nmodel_name: fragile-{config}\nevaluate: {{max_rows: 40, baseline: false}}\n")
    result = workspace.paperline("run", "fragile", "--config", "smoke", f"evaluate.load_model={load_model}")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    _assert_closed(workspace, "fragile", "failed")
    run = _mlflow_runs(workspace, "fragile")[0]
    assert run.data.tags["paperline.status"] == "failed" and run.data.tags["paperline.error"]
    evaluated = "paperline.cache_key" in run.data.tags  # tagged once training and evaluation are logged
    assert evaluated == (stage == "registration"), run.data.tags
