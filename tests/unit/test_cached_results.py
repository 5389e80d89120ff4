"""Cached step results as checked JSON (paperline.ops.cache.results) and the Prefect serializer over it: only
paperline's own result types come back, nothing runs, a payload or a model folder that changed is refused."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil

import numpy as np
import pytest

from paperline.data.quality_report import (
    ExpectationFailure,
    ExpectationOutcome,
    GateOutcome,
    GateResult,
)
from paperline.ops.cache import results as cached_results
from paperline.ops.cache.results import CachedResultError, decode, encode
from paperline.project.interface import Evaluation, PyfuncSpec, TrainedModel


@pytest.fixture
def model(tmp_path) -> TrainedModel:
    folder = tmp_path / "model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\x01" * 4096)
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    serving = PyfuncSpec(python_model=tmp_path / "pyfunc_model.py", artifacts={"model": folder},
                         pip_requirements=["torch"], metadata={"input": "pairs"})
    return TrainedModel(path=folder, flavor="pyfunc", serving=serving, metrics={"steps": np.float64(4), "loss": 0.5},
                        notes={"device": "cpu", "$type": "not a tag"}, outputs={"log": tmp_path / "log.json"})


def test_a_trained_model_an_evaluation_and_a_gate_outcome_come_back_equal(model):
    evaluation = Evaluation(metrics={"stsb_test_spearman": np.float32(83.5)}, artifacts={"plot": model.path / "p.png"},
                            tables={"grid": {"layers": [1, 2], "score": np.array([0.5, 0.7])}}, tags={"a": "b"})
    failure = ExpectationFailure("train", "expect_column_values_to_not_be_null", "sentence1", "null in 1 of 9 rows",
                                 [{"score": 1.5, "sentence1": None, "$path": "a column named like a tag"}])
    gate = GateOutcome([GateResult("stsb", "scored_pairs", False, 3, [failure], {"train": 9},
                                   [ExpectationOutcome("train", "expect_column_to_exist", "score", True, "present")])])
    assert decode(encode(model)) == model
    back = decode(encode(evaluation))
    assert back.metrics == {"stsb_test_spearman": 83.5} and back.tables["grid"]["score"] == [0.5, 0.7]
    assert decode(encode(gate)) == gate and decode(encode(gate)).passed is False


def test_new_plain_fields_of_a_result_type_need_no_change_to_the_codec(monkeypatch):
    @dataclasses.dataclass
    class Later:  # e.g. TrainedModel with a `history` list of dicts added by another change
        metrics: dict
        history: list = dataclasses.field(default_factory=list)

    monkeypatch.setitem(cached_results.KNOWN_TYPES, "Later", Later)
    value = Later({"a": 1.0}, [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7}])
    assert decode(encode(value)) == value


def test_a_pickle_or_another_serializers_json_is_refused_without_running_anything(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for blob in (pickle.dumps(Evil()), b'{"__class__": "os.system", "data": "touch ran"}', b""):
        with pytest.raises(CachedResultError, match="not a paperline result"):
            decode(blob)
    assert not marker.exists()


def test_an_unknown_type_name_is_refused_not_imported():
    payload = json.dumps({"$type": "os.system", "fields": {"command": "true"}})
    blob = json.dumps({"format": cached_results.FORMAT, "payload": payload,
                       "sha256": __import__("hashlib").sha256(payload.encode()).hexdigest()}).encode()
    with pytest.raises(CachedResultError, match="unknown result type 'os.system'"):
        decode(blob)


def test_a_payload_edited_after_it_was_written_is_refused(model):
    envelope = json.loads(encode(model))
    envelope["payload"] = envelope["payload"].replace('"loss":0.5', '"loss":0.1')
    with pytest.raises(CachedResultError, match="differs from the sha256"):
        decode(json.dumps(envelope).encode())


def test_a_model_folder_changed_after_caching_is_refused_naming_the_file(model):
    blob = encode(model)
    weights = model.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[2048] ^= 0xFF  # one byte inside the tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(CachedResultError, match=f"{weights} differs from the sha256"):
        decode(blob)
    weights.unlink()
    with pytest.raises(CachedResultError, match="model.safetensors is missing"):
        decode(blob)


def test_a_file_added_to_the_model_folder_is_refused(model):
    blob = encode(model)
    (model.path / "extra.py").write_text("import os\n")
    with pytest.raises(CachedResultError, match="extra.py was added"):
        decode(blob)


def test_anything_but_the_result_types_is_refused_when_written(model):
    with pytest.raises(CachedResultError, match="cannot cache result.notes.x: object"):
        encode(dataclasses.replace(model, notes={"x": object()}))
    with pytest.raises(CachedResultError, match="keys that are not text"):
        encode(Evaluation(metrics={}, tables={"t": {1: [1]}}))


def test_the_prefect_serializer_round_trips_through_a_result_record(model):
    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata

    from paperline_flows.results import RESULTS

    record = ResultRecord(metadata=ResultRecordMetadata(storage_key="k", serializer=RESULTS), result=model)
    stored = record.serialize()
    assert json.loads(stored)["metadata"]["serializer"] == {"type": "paperline-json"}
    assert ResultRecord.deserialize(stored).result == model  # Prefect finds the serializer by its type name


def test_a_failed_tasks_error_is_stored_as_its_text_never_as_its_class():
    from paperline.core.config import ConfigError
    from paperline.ops.cache.results import StoredError

    back = decode(encode(ConfigError("unknown key 'x'")))
    assert type(back) is StoredError and str(back) == "unknown key 'x'" and back.exit_code == 2
    assert type(decode(encode(KeyError("k")))) is StoredError


def test_checkpoints_inside_a_model_folder_are_not_part_of_it(model):
    (model.path / "checkpoint-2").mkdir()
    (model.path / "checkpoint-2" / "optimizer.pt").write_bytes(b"\x00" * 16)
    blob = encode(model)
    shutil.rmtree(model.path / "checkpoint-2")  # what the flow does once the run is registered
    assert decode(blob) == model
