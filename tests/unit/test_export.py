"""Exporting one (layers, dims) budget: a plain sentence-transformers folder that reproduces the grid cell."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SENTENCES = ["A plane is taking off.", "A man is playing a flute.", "Two men are playing chess.", "hi"]


@pytest.fixture(scope="module")
def base_path():
    from paperline.ml.models import resolve_model_path

    return resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")


def test_round_trip_reproduces_the_grid_cell(base_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    from paperline.ml.export import export_truncated
    from paperline.ml.layer_grid import encode_layers

    out = export_truncated(base_path, layers=3, dim=128, out=tmp_path / "l3-d128")
    loaded = SentenceTransformer(str(out), device="cpu")  # plain load, no arguments
    assert loaded[0].auto_model.config.num_hidden_layers == 3
    assert len(loaded[0].auto_model.encoder.layer) == 3
    embeddings = torch.as_tensor(loaded.encode(SENTENCES))
    assert embeddings.shape == (4, 128)
    expected = encode_layers(SentenceTransformer(base_path, device="cpu"), SENTENCES)[3][:, :128]
    assert torch.allclose(embeddings, expected, atol=1e-5)
    # the removed layers are gone from the weights, not just skipped
    full_size = sum(p.stat().st_size for p in Path(base_path).glob("*.safetensors"))
    assert (out / "model.safetensors").stat().st_size < full_size


def test_full_width_keeps_no_truncation(base_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    from paperline.ml.export import export_truncated

    out = export_truncated(base_path, layers=6, dim=384, out=tmp_path / "full")
    loaded = SentenceTransformer(str(out), device="cpu")
    assert loaded.truncate_dim is None
    assert loaded.encode(SENTENCES[:1]).shape == (1, 384)


@pytest.mark.parametrize(("layers", "dim", "message"), [(0, 64, "--layers 0"), (7, 64, "choose 1..6"), (3, 999, "--dim 999")])
def test_out_of_range_budget_is_a_clear_error(base_path, tmp_path, layers, dim, message):
    from paperline.ml.export import ExportError, export_truncated

    with pytest.raises(ExportError, match=message):
        export_truncated(base_path, layers=layers, dim=dim, out=tmp_path / "x")


def test_an_existing_or_unwritable_target_is_one_error_and_force_replaces_whole(base_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    from paperline.core.targets import TargetError
    from paperline.ml.export import check_target, export_truncated

    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("a user's file")
    with pytest.raises(TargetError, match="exists already .* pass --force"):
        export_truncated(base_path, layers=2, dim=64, out=existing)
    assert (existing / "keep.txt").read_text() == "a user's file"  # nothing lost
    a_file = tmp_path / "model.txt"
    a_file.write_text("x")
    with pytest.raises(TargetError, match="exists already \\(a file\\)"):
        check_target(a_file)
    with pytest.raises(TargetError, match="is a file; an export is a folder"):
        check_target(a_file, force=True)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not __import__("os").access(locked, __import__("os").W_OK):  # root may write anywhere
        with pytest.raises(TargetError, match="is not a writable folder"):
            check_target(locked / "out")
    with pytest.raises(TargetError, match="is not a writable folder"):
        check_target(a_file / "inside")  # below a file: nothing can be written there
    out = export_truncated(base_path, layers=2, dim=64, out=existing, force=True)
    assert not (out / "keep.txt").exists() and SentenceTransformer(str(out)).encode(["hi"]).shape == (1, 64)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
