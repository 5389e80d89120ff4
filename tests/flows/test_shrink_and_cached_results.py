"""`paperline run` on the smoke config against two kinds of bad input that used to get through: a dataset version
whose split shrank against the last version that passed the gate, and cached results that were swapped or whose
model files changed in the workspace (a cloudpickle would have run; a changed model would have been registered)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from repo_copy import BIN

from paperline.ops.store.audit import AuditStore

MODEL = "sbert_sts-smoke"


def _run(ws, *extra):
    return ws.paperline("run", "sbert_sts", "--config", "smoke", *extra)


def _latest_run(ws):
    client = ws.client()
    experiment = client.get_experiment_by_name("sbert_sts")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]


def test_a_split_shrunk_against_the_last_gated_version_fails_the_gate_unless_the_config_allows_it(workspace):
    store = AuditStore(workspace.store_url)
    store.record_gated_rows("an-earlier-version.dir", {"stsb": {"train": 5749}})  # what the last gated run saw
    # Without the card's floor for train, only the shrink check stands between a 10-row train split and training.
    card = workspace.root / "projects" / "sbert_sts" / "project.yaml"
    floors = "min_rows: {train: 5000, dev: 1000, test: 1000}"
    assert floors in card.read_text()
    card.write_text(card.read_text().replace(floors, "min_rows: {dev: 1000, test: 1000}"))
    train = workspace.root / "data" / "stsb" / "train.tsv"
    train.write_text("\n".join(train.read_text().splitlines()[:11]) + "\n")
    subprocess.run([str(BIN / "dvc"), "add", "-q", "data"], cwd=workspace.root, env=workspace.env, check=True)

    refused = _run(workspace)
    assert refused.returncode == 3, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert ("stsb/train: expect_table_row_count_to_be_between: train has 10 rows, 99.83% fewer than the 5,749 of "
            "the last version that passed the gate; at most 20% fewer allowed") in refused.stderr
    assert "data.stsb.allow_shrink: true" in refused.stderr
    assert workspace.client().search_registered_models() == []
    (lineage,) = store.lineage(project="sbert_sts")
    assert lineage.status == "gate-failed" and lineage.model_version is None
    assert store.gated_rows(["stsb"])["stsb"]["train"] == 5749  # a refused version is no reference for the next

    allowed = _run(workspace, "data.stsb.allow_shrink=true")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert f"{MODEL} v1" in allowed.stdout
    rows = store.gated_rows(["stsb"])["stsb"]  # the version that passed is the next one's reference
    assert rows["train"] == 10 and rows["dev"] >= 1000 and rows["test"] >= 1000


class _RunsCode:
    """What a swapped cloudpickle would do when loaded: create a file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _swap_in_a_pickle(record: Path, marker: Path) -> None:
    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer

    swapped = ResultRecord(metadata=ResultRecordMetadata(storage_key=str(record), serializer=PickleSerializer()),
                           result=_RunsCode(marker))
    record.write_bytes(swapped.serialize())


def test_a_swapped_pickle_is_never_run_and_a_tampered_model_is_recomputed(workspace, tmp_path):
    first = _run(workspace)
    assert first.returncode == 0, first.stderr[-3000:]
    (train_record,) = (workspace.root / ".paperline").rglob("results/*-train")
    (evaluate_record,) = train_record.parent.glob("*-evaluate")
    for record in (train_record, evaluate_record):
        assert json.loads(record.read_bytes())["metadata"]["serializer"] == {"type": "paperline-json"}

    markers = [tmp_path / "train-ran", tmp_path / "evaluate-ran"]
    _swap_in_a_pickle(train_record, markers[0])
    _swap_in_a_pickle(evaluate_record, markers[1])
    swapped = _run(workspace)
    assert swapped.returncode == 0, swapped.stderr[-3000:]
    assert not any(marker.exists() for marker in markers)  # the pickles were never loaded
    assert (f"cached result {train_record} was written with the 'pickle' serializer, not 'paperline-json'; not "
            "loaded, recomputing train") in swapped.stderr
    assert f"cached result {evaluate_record} was written with the 'pickle' serializer" in swapped.stderr
    assert _latest_run(workspace).data.tags["paperline.cache_hit"] == "False"
    for record in (train_record, evaluate_record):  # recomputed, and stored as checked JSON again
        assert json.loads(record.read_bytes())["metadata"]["serializer"] == {"type": "paperline-json"}

    payload = json.loads(json.loads(train_record.read_bytes())["result"])["payload"]
    weights = Path(json.loads(payload)["fields"]["path"]["$path"]) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte in the middle of the tensor data, the header intact
    weights.write_bytes(bytes(data))
    tampered = _run(workspace)
    assert tampered.returncode == 0, tampered.stderr[-3000:]
    assert (f"cached result {train_record} cannot be used: {weights} differs from the sha256 recorded when the "
            "model was cached; recomputing train") in tampered.stderr
    assert _latest_run(workspace).data.tags["paperline.cache_hit"] == "False"
    assert bytes(data) != weights.read_bytes()  # the model was written again

    unchanged = _run(workspace)  # what was recomputed verifies: the next run is a cache hit again
    assert unchanged.returncode == 0, unchanged.stderr[-3000:]
    assert "cannot be used" not in unchanged.stderr and "recomputing" not in unchanged.stderr
    assert _latest_run(workspace).data.tags["paperline.cache_hit"] == "True"
