"""ONNX Runtime encoding (paperline.ml.fast_encode): the same embeddings as PyTorch on the real MiniLM, an export
cache keyed by the model folder's content, and evaluation's rule that ONNX scores only within 0.1 Spearman."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paperline.data.kinds.scored_pairs import ScoredPair

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PAIRS = [
    ScoredPair("A plane is taking off.", "An air plane is taking off.", 5.0),
    ScoredPair("A man is playing a large flute.", "A man is playing a flute.", 3.8),
    ScoredPair("Three men are playing chess.", "Two men are playing chess.", 2.6),
    ScoredPair("A man is playing the cello.", "A man seated is playing the cello.", 4.25),
    ScoredPair("Some men are fighting.", "Two men are fighting.", 4.25),
    ScoredPair("A man is smoking.", "A man is skating.", 0.5),
    ScoredPair("The man is playing the piano.", "The man is playing the guitar.", 1.6),
    ScoredPair("A woman is slicing an onion.", "A dog runs on the beach.", 0.0),
]
SENTENCES = [p.sentence1 for p in PAIRS] + [p.sentence2 for p in PAIRS] + ["no", "word " * 400]


def cosines(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def minilm():
    from paperline.ml.models import load_sentence_transformer, resolve_model_path

    return load_sentence_transformer(MINILM, device="cpu"), resolve_model_path(MINILM)


@pytest.fixture(scope="module")
def exports(minilm, tmp_path_factory):
    """The three exports of the real MiniLM, made once for the module: fp32, int8, fp32 with every layer."""
    from paperline.ml.fast_encode import cached_export

    cache = tmp_path_factory.mktemp("onnx-cache")
    _, path = minilm
    return {(variant, layers): cached_export(path, variant, layers, cache)[0]
            for variant, layers in (("optimized", False), ("int8", False), ("optimized", True))}


def test_onnx_embeddings_equal_pytorch_on_minilm(minilm, exports):
    from paperline.ml.fast_encode import OnnxEncoder

    model, _ = minilm
    reference = model.encode(SENTENCES, batch_size=4)
    fp32 = OnnxEncoder(exports[("optimized", False)]).encode(SENTENCES, batch_size=4)  # several batches, unsorted
    assert fp32.shape == reference.shape and fp32.dtype == np.float32
    assert cosines(fp32, reference).min() >= 0.999
    assert np.abs(fp32 - reference).max() < 1e-4
    int8 = OnnxEncoder(exports[("int8", False)]).encode(SENTENCES)
    assert cosines(int8, reference).min() >= 0.95  # int8's stated tolerance (docs/benchmarks.md (d))
    # int8 weights in every MatMul; the 47 MB word-embedding table stays float
    assert (exports[("int8", False)] / "model.onnx").stat().st_size < 0.8 * (
        exports[("optimized", False)] / "model.onnx").stat().st_size


def test_all_layers_export_gives_the_grid_of_pytorch(minilm, exports):
    from paperline.ml.fast_encode import OnnxEncoder
    from paperline.ml.layer_grid import encode_layers, grid_spearman

    model, _ = minilm
    encoder = OnnxEncoder(exports[("optimized", True)])
    per_layer = encoder.encode_layers(SENTENCES[:6], batch_size=4)
    torch_layers = encode_layers(model, SENTENCES[:6], batch_size=4)
    assert len(per_layer) == len(torch_layers) == 7
    for ours, theirs in zip(per_layer, torch_layers):
        assert np.abs(ours - theirs.numpy()).max() < 1e-4
    onnx_grid = grid_spearman(model, PAIRS, dims=[32, 384], encoder=encoder)
    torch_grid = grid_spearman(model, PAIRS, dims=[32, 384])
    assert onnx_grid == pytest.approx(torch_grid, abs=0.1)
    with pytest.raises(Exception, match="without all layers"):
        OnnxEncoder(exports[("optimized", False)]).encode_layers(SENTENCES)


def test_the_served_pyfunc_returns_the_pytorch_embeddings(minilm, exports):
    from paperline.ml.fast_encode import OnnxEncoder
    from paperline.ops.registry.onnx_export import pyfunc_embeddings

    model, _ = minilm
    served = pyfunc_embeddings(exports[("optimized", False)], SENTENCES)
    assert cosines(served, model.encode(SENTENCES)).min() >= 0.999
    # the pyfunc restates OnnxEncoder.encode so it can stand alone: the two must not drift apart
    assert np.abs(served - OnnxEncoder(exports[("optimized", False)]).encode(SENTENCES)).max() < 1e-6


def test_export_cache_hits_by_content_and_misses_on_a_changed_file(tmp_path, monkeypatch):
    from paperline.ml import fast_encode

    made = []

    def fake_export(model_dir, out, variant="optimized", all_layers=False):
        made.append((variant, all_layers))
        out.mkdir(parents=True, exist_ok=True)  # as the real export, which replaces an outdated folder
        (out / fast_encode.META).write_text(json.dumps({"format": fast_encode.FORMAT}))
        return out

    monkeypatch.setattr(fast_encode, "export_onnx", fake_export)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "weights.bin").write_bytes(b"\0" * 10)
    cache = tmp_path / "cache"
    first, hit = fast_encode.cached_export(model, "optimized", cache_dir=cache)
    assert not hit and made == [("optimized", False)]
    copy = tmp_path / "copy"  # the same content elsewhere: the same export
    copy.mkdir()
    for f in model.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert fast_encode.cached_export(copy, "optimized", cache_dir=cache) == (first, True)
    assert fast_encode.cached_export(model, "int8", cache_dir=cache)[1] is False  # another variant
    (model / "weights.bin").write_bytes(b"\1" * 10)  # new weights: a new export
    changed, hit = fast_encode.cached_export(model, "optimized", cache_dir=cache)
    assert not hit and changed != first and len(made) == 3
    # an export from an older recipe (FORMAT) is not reused
    (changed / fast_encode.META).write_text(json.dumps({"format": fast_encode.FORMAT - 1}))
    assert fast_encode.cached_export(model, "optimized", cache_dir=cache)[1] is False


class Shifted:
    """An encoder whose embeddings are the model's plus `noise`: Spearman near PyTorch's or far from it."""

    def __init__(self, model, noise: float):
        self.model, self.noise, self.calls = model, noise, 0
        self.rng = np.random.default_rng(0)  # one stream: each side of a pair gets its own noise

    def encode(self, sentences, batch_size=64):
        self.calls += 1
        emb = self.model.encode(sentences, batch_size=batch_size)
        return emb + self.noise * self.rng.standard_normal(emb.shape).astype(np.float32)


@pytest.mark.parametrize("noise, used", [(0.0, True), (10.0, False)])
def test_evaluation_uses_onnx_only_within_the_tolerance_and_says_so(minilm, tmp_path, monkeypatch, noise, used):
    from paperline.ml import evaluation, fast_encode

    model, path = minilm
    fake = Shifted(model, noise)
    folder = tmp_path / "export"
    folder.mkdir()
    monkeypatch.setattr(fast_encode, "cached_export", lambda *a, **k: (folder, True))
    monkeypatch.setattr(fast_encode, "OnnxEncoder", lambda f: fake)
    splits = {"dev": PAIRS, "test": PAIRS[::-1]}
    metrics, predictions, tags = evaluation.sts_backend_results(model, path, splits, "stsb", backend="onnx")
    torch_metrics, _ = evaluation.sts_results(model, splits, "stsb")
    if used:
        assert tags["stsb_encode_backend"] == "onnx" and "tolerance 0.1" in tags["stsb_encode_check"]
        assert metrics == pytest.approx(torch_metrics, abs=0.1)
    else:  # the fallback: PyTorch's numbers, and a tag that says why
        assert tags["stsb_encode_backend"] == "torch"
        assert tags["stsb_encode_check"].startswith("torch (onnx Spearman")
        assert metrics == torch_metrics
    assert set(predictions) == {"stsb_dev", "stsb_test"}
    # the check ran once and is kept beside the export: a second evaluation does not encode the check split again
    checks = json.loads((folder / evaluation.CHECKS).read_text())
    assert len(checks) == 1
    calls = fake.calls
    evaluation.sts_backend(model, path, PAIRS, "onnx")
    assert fake.calls == calls


def test_a_model_with_a_module_numpy_does_not_run_is_not_exported(tmp_path, minilm):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    from paperline.ml import evaluation

    model, _ = minilm
    dense = SentenceTransformer(modules=[model[0], model[1], Dense(384, 8)], device="cpu")
    dense.save(str(tmp_path / "dense"))
    encoder, note = evaluation.sts_backend(dense, tmp_path / "dense", PAIRS, "onnx", cache_dir=tmp_path / "c")
    assert encoder is None and note.startswith("torch (onnx not applicable: modules")
    assert evaluation.sts_backend(model, "unused", PAIRS, "torch") == (None, "torch (asked for)")
