"""The token cache: the collator's own ids, read back instead of tokenized again, and missed when the dataset's
texts or the tokenizer change (paperline.ml.token_cache)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from paperline.ml import token_cache

WORDS = "the a cat dog sat on mat quickly über naïve résumé 42 , . ! unbelievably antidisestablishmentarianism".split()


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) for _ in range(n)]
    return texts + [" ".join(WORDS * 40)]  # longer than max_seq_length: truncated like the collator truncates


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from sentence_transformers import SentenceTransformer
    from tiny_models import tiny_sentence_transformer

    return SentenceTransformer(str(tiny_sentence_transformer(tmp_path_factory.mktemp("tiny"))), device="cpu")


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.npz")}


def test_cached_batches_are_what_the_model_would_tokenize(model, tmp_path):
    texts = _texts(300, seed=0)
    table = token_cache.load_or_build(model, texts, tmp_path)
    rng = random.Random(1)
    for size in (1, 7, 32):
        batch = rng.sample(texts, size)
        expected, got = model.preprocess(batch), table.batch(batch)
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, got[key]), key
            else:
                assert value == got[key], key


def test_a_second_run_reads_the_ids_without_tokenizing(model, tmp_path, monkeypatch):
    texts = _texts(100, seed=2)
    token_cache.load_or_build(model, texts, tmp_path)
    entries = _entries(tmp_path)
    assert len(entries) == 1

    calls = []
    original = model.preprocess
    monkeypatch.setattr(model, "preprocess", lambda inputs, **kw: calls.append(len(inputs)) or original(inputs, **kw))
    table = token_cache.load_or_build(model, list(reversed(texts)), tmp_path)  # order does not matter
    assert texts[0] in table and _entries(tmp_path) == entries
    # one text, only to leave the tokenizer's settings as building would (they are saved with checkpoints)
    assert calls == [1]


def test_new_texts_or_another_tokenizer_miss_the_cache(model, tmp_path):
    texts = _texts(100, seed=3)
    token_cache.load_or_build(model, texts, tmp_path)
    token_cache.load_or_build(model, texts[:-1] + ["a sentence the old version did not have"], tmp_path)
    assert len(_entries(tmp_path)) == 2  # a dataset version with other texts
    before = model[0].max_seq_length
    try:
        model[0].max_seq_length = 16  # the same vocabulary, another truncation: other ids
        table = token_cache.load_or_build(model, texts, tmp_path)
        assert len(_entries(tmp_path)) == 3
        assert torch.equal(table.batch(texts[-1:])["input_ids"], model.preprocess(texts[-1:])["input_ids"])
    finally:
        model[0].max_seq_length = before
    from sentence_transformers import SentenceTransformer

    other = SentenceTransformer(_saved(model, tmp_path), device="cpu")
    other[0].tokenizer.add_tokens(["paperlinetoken"])  # another vocabulary
    token_cache.load_or_build(other, texts, tmp_path)
    assert len(_entries(tmp_path)) == 4


def test_a_damaged_entry_is_rebuilt_not_read(model, tmp_path):
    texts = _texts(50, seed=4)
    token_cache.load_or_build(model, texts, tmp_path)
    (arrays,) = tmp_path.glob("*.npz")
    arrays.write_bytes(arrays.read_bytes()[:-40] + b"\0" * 40)
    table = token_cache.load_or_build(model, texts, tmp_path)
    batch = texts[:5]
    assert torch.equal(table.batch(batch)["input_ids"], model.preprocess(batch)["input_ids"])
    token_cache.load_or_build(model, texts, tmp_path)  # and the rebuilt entry verifies


def test_training_with_the_cache_is_training_without_it(model, tmp_path):
    """Same seed, same rows: the same loss at every step and the same weights, with ids from the cache."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    from paperline.ml.training import TrainSettings, fit

    texts = _texts(64, seed=5)
    rows = Dataset.from_dict({"sentence1": texts[:32], "sentence2": texts[32:64],
                              "score": [i / 31 for i in range(32)]})
    results, weights = {}, {}
    for cached in (False, True):
        encoder = SentenceTransformer(_saved(model, tmp_path), device="cpu")
        settings = TrainSettings(output_dir=tmp_path / f"out-{cached}", batch_size=8, max_steps=6,
                                 checkpoint_every=2, progress=False, device="cpu", token_cache=cached)
        results[cached] = fit(encoder, rows, CoSENTLoss(encoder), settings)
        weights[cached] = [p.detach().clone() for p in encoder.parameters()]
    losses = {k: [h["loss"] for h in r.history] for k, r in results.items()}
    assert losses[True] == losses[False] and len(losses[True]) == 3
    assert all(torch.equal(a, b) for a, b in zip(weights[False], weights[True]))
    assert _entries(token_cache.default_dir())  # the cached run wrote its entry where the environment says


def _saved(model, tmp_path: Path) -> str:
    folder = tmp_path / "start"
    if not folder.exists():
        model.save(str(folder))
    return str(folder)


def test_a_cross_encoder_keeps_its_own_tokenization(model, tmp_path):
    """A CrossEncoder's batches are pairs its loss tokenizes together: no cache entry is built for it."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer

    from paperline.ml.training import use_token_cache

    encoder = CrossEncoder(_saved(model, tmp_path), num_labels=1, device="cpu")
    rows = Dataset.from_dict({"sentence1": ["a b", "c"], "sentence2": ["b a", "d"], "score": [1.0, 0.0]})
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

    args = CrossEncoderTrainingArguments(output_dir=str(tmp_path / "trainer"), report_to="none", use_cpu=True)
    trainer = CrossEncoderTrainer(model=encoder, args=args, train_dataset=rows)
    before = _entries(token_cache.default_dir())
    assert use_token_cache(trainer, encoder, rows) is False
    assert _entries(token_cache.default_dir()) == before
