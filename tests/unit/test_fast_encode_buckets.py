"""paperline.ml.fast_encode's batching and backends on a tiny BERT (seconds): batches by token length give each
sentence the embedding it gets alone, in the order given; numpy padding is the tokenizer's; `dedupe` copies rows;
the OpenVINO backend gives ONNX Runtime's numbers; `int8-static` needs calibration sentences."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from paperline.core.errors import PaperlineError

SENTENCES = ["A man is playing a guitar.", "hello", "no", "Three men are playing chess in the park today.",
             "A woman is slicing an onion.", "hello", "word " * 300, "", "A dog runs on the beach.",
             "The quick brown fox jumps over the lazy dog, twice, and then once more for good measure.",
             "A woman is slicing an onion."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import tiny_sentence_transformer

    return tiny_sentence_transformer(tmp_path_factory.mktemp("st"))


@pytest.fixture(scope="module")
def exports(tiny, tmp_path_factory):
    from paperline.ml.fast_encode import cached_export

    cache = tmp_path_factory.mktemp("onnx-cache")
    return {variant: cached_export(tiny, variant, cache_dir=cache)[0] for variant in ("optimized", "int8")}


def test_token_length_batches_restore_the_order_and_equal_unbucketed(exports):
    from paperline.ml.fast_encode import OnnxEncoder

    bucketed = OnnxEncoder(exports["optimized"])
    assert bucketed.order == "tokens"
    ours = bucketed.encode(SENTENCES, batch_size=3)
    chars = OnnxEncoder(exports["optimized"], order="chars").encode(SENTENCES, batch_size=3)
    alone = np.stack([bucketed.encode([s], batch_size=1)[0] for s in SENTENCES])  # no batch, no order to restore
    assert ours.shape == (len(SENTENCES), bucketed.meta["width"]) and ours.dtype == np.float32
    assert np.abs(ours - chars).max() < 1e-5
    assert np.abs(ours - alone).max() < 1e-5
    assert np.abs(ours[1] - ours[5]).max() < 1e-6  # the same sentence twice, in different batches
    assert not np.allclose(ours[0], ours[1])  # rows are not all the same


def test_numpy_padding_is_the_tokenizers_padding(exports):
    from paperline.ml.fast_encode import OnnxEncoder

    encoder = OnnxEncoder(exports["optimized"])
    assert encoder._plain  # MiniLM's tokenizer pads right with [PAD], token types 0
    chosen = np.array([6, 0, 7, 1])
    mask, feeds = encoder._feeds(*encoder._tokenize(SENTENCES), chosen)
    theirs = encoder.tokenizer([SENTENCES[i] for i in chosen], padding=True, truncation=True,
                               max_length=encoder.meta["max_seq_length"], return_tensors="np")
    assert set(feeds) == set(encoder.meta["inputs"])
    for key, value in feeds.items():
        assert value.dtype == np.int64 and np.array_equal(value, theirs[key])
    assert np.array_equal(mask, theirs["attention_mask"])
    retokenised = OnnxEncoder(exports["optimized"])
    retokenised._plain = False  # the fallback for a tokenizer numpy padding does not reproduce
    assert np.abs(retokenised.encode(SENTENCES, batch_size=4) - encoder.encode(SENTENCES, batch_size=4)).max() < 1e-6


def test_dedupe_encodes_each_distinct_sentence_once(exports):
    from paperline.ml.fast_encode import OnnxEncoder

    encoder = OnnxEncoder(exports["optimized"])
    seen = []
    run = encoder._run
    encoder._run = lambda feeds: seen.append(len(feeds["input_ids"])) or run(feeds)
    deduped = encoder.encode(SENTENCES, batch_size=64, dedupe=True)
    assert sum(seen) == len(set(SENTENCES))
    assert np.abs(deduped - encoder.encode(SENTENCES, batch_size=64)).max() < 1e-5


def test_empty_input_and_dynamic_int8_keeps_the_character_order(exports):
    from paperline.ml.fast_encode import OnnxEncoder

    assert OnnxEncoder(exports["optimized"]).encode([]).shape == (0, 32)
    int8 = OnnxEncoder(exports["int8"])
    assert int8.order == "chars"  # per-batch activation scales: batches as they were measured
    assert int8.encode(SENTENCES, batch_size=3).shape == (len(SENTENCES), 32)


def test_bad_options_are_refused(exports, monkeypatch):
    from paperline.ml.fast_encode import OnnxEncoder

    with pytest.raises(PaperlineError, match="unknown encode backend"):
        OnnxEncoder(exports["optimized"], backend="tensorrt")
    with pytest.raises(PaperlineError, match="needs backend='openvino'"):
        OnnxEncoder(exports["optimized"], precision="bf16")
    with pytest.raises(PaperlineError, match="unknown batch order"):
        OnnxEncoder(exports["optimized"], order="random")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(PaperlineError, match="pip install openvino"):
        OnnxEncoder(exports["optimized"], backend="openvino")


def test_openvino_gives_the_onnxruntime_embeddings(exports):
    from paperline.ml.fast_encode import OnnxEncoder

    reference = OnnxEncoder(exports["optimized"]).encode(SENTENCES, batch_size=4)
    f32 = OnnxEncoder(exports["optimized"], threads=1, backend="openvino", precision="f32")
    assert f32.precision == "f32" and f32.session is None
    assert np.abs(f32.encode(SENTENCES, batch_size=4) - reference).max() < 1e-4
    default = OnnxEncoder(exports["optimized"], backend="openvino")  # bf16 where the CPU has it natively
    assert default.precision in ("f32", "bf16")
    assert default.encode(SENTENCES, batch_size=4).shape == reference.shape


def test_int8_static_needs_calibration_and_runs_on_both_backends(tiny, tmp_path):
    from paperline.ml.fast_encode import OnnxEncoder, cached_export

    with pytest.raises(PaperlineError, match="calibration"):
        cached_export(tiny, "int8-static", cache_dir=tmp_path)
    calibration = [s for s in SENTENCES if s] * 3
    folder, hit = cached_export(tiny, "int8-static", cache_dir=tmp_path, calibration=calibration)
    assert not hit and "-cal" in folder.name
    assert cached_export(tiny, "int8-static", cache_dir=tmp_path, calibration=calibration) == (folder, True)
    assert cached_export(tiny, "int8-static", cache_dir=tmp_path, calibration=calibration[:4])[0] != folder
    fp32 = OnnxEncoder(cached_export(tiny, "optimized", cache_dir=tmp_path)[0]).encode(SENTENCES)
    for backend in ("onnxruntime", "openvino"):
        int8 = OnnxEncoder(folder, backend=backend).encode(SENTENCES)
        cosine = (int8 * fp32).sum(1) / (np.linalg.norm(int8, axis=1) * np.linalg.norm(fp32, axis=1))
        assert cosine.min() > 0.9, backend
