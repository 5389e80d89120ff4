"""The length-grouped batch sampler (paperline.ml.batching): every row once per epoch, deterministic per seed and
epoch (so a job resumed mid-epoch sees the batches an uninterrupted one would), and less padding than random."""

from __future__ import annotations

import random

import pytest
from datasets import Dataset

from paperline.ml.batching import LengthGroupedBatchSampler, text_lengths

ROWS = 1000


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rng = random.Random(0)
    words = lambda n: " ".join(rng.choice(["a", "man", "plays", "guitar", "on", "stage"]) for _ in range(n))  # noqa: E731
    return Dataset.from_dict({"sentence1": [words(rng.randint(2, 60)) for _ in range(ROWS)],
                              "sentence2": [words(rng.randint(2, 20)) for _ in range(ROWS)],
                              "score": [rng.random() for _ in range(ROWS)]})


def _sampler(dataset, seed=0, epoch=0, batch_size=16, drop_last=False, **kwargs) -> LengthGroupedBatchSampler:
    sampler = LengthGroupedBatchSampler(dataset, batch_size=batch_size, drop_last=drop_last, seed=seed, **kwargs)
    sampler.set_epoch(epoch)
    return sampler


def test_every_row_once_per_epoch_and_only_full_batches_with_drop_last(dataset):
    batches = list(_sampler(dataset))
    assert sorted(i for b in batches for i in b) == list(range(ROWS)) and len(batches) == len(_sampler(dataset))
    full = list(_sampler(dataset, batch_size=48, drop_last=True))
    assert all(len(b) == 48 for b in full) and len(full) == len(_sampler(dataset, batch_size=48, drop_last=True))
    assert len({i for b in full for i in b}) == sum(len(b) for b in full)  # no row twice


def test_the_order_is_a_function_of_seed_and_epoch_so_a_resumed_epoch_repeats_it(dataset):
    first = list(_sampler(dataset, seed=3, epoch=1))
    assert first == list(_sampler(dataset, seed=3, epoch=1))  # a fresh process, same seed and epoch: same batches
    # a job killed after 20 batches of epoch 1 resumes by skipping them: the rest is what it would have seen
    assert list(_sampler(dataset, seed=3, epoch=1))[20:] == first[20:]
    assert first != list(_sampler(dataset, seed=4, epoch=1)) and first != list(_sampler(dataset, seed=3, epoch=2))


def test_grouped_batches_pad_less_than_random_ones(dataset):
    lengths = text_lengths(dataset)

    def padded(batches) -> int:  # characters of padding: each row padded to its batch's longest
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    order = list(range(ROWS))
    random.Random(0).shuffle(order)
    shuffled = [order[i:i + 16] for i in range(0, ROWS, 16)]
    assert padded(list(_sampler(dataset))) < 0.5 * padded(shuffled)
    # smaller pools group less: a pool of one batch is a random batch
    assert padded(list(_sampler(dataset))) < padded(list(_sampler(dataset, pool_batches=8))) \
        < padded(list(_sampler(dataset, pool_batches=1)))
    assert padded(list(_sampler(dataset, pool_batches=1))) > 0.8 * padded(shuffled)
