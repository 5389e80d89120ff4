"""Length-grouped batches: less padding, the same data in a random order.

A batch is padded to its longest text, so a batch mixing a 5-token caption with a 60-token news sentence
spends most of its compute on padding. Following the bucketing of Fairseq and HF's `group_by_length`, each
epoch shuffles the rows, cuts the shuffled list into pools of `pool_batches` batches, sorts each pool by
length, cuts it into batches, and shuffles the batches. Every row is still seen once per epoch; batches are
still random across the dataset, only homogeneous in length within a pool. The order depends only on the
seed and the epoch, so a resumed job sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

POOL_BATCHES = 50  # large enough to group lengths, small enough that each pool is a random sample


def text_lengths(dataset) -> list[int]:
    """Characters over the text columns of each row: a cheap proxy for its token count."""
    columns = [c for c in dataset.column_names if isinstance(dataset[0][c], str)]
    return [sum(len(row[c]) for c in columns) for row in dataset]


class LengthGroupedBatchSampler(DefaultBatchSampler):
    """Batches of similar-length rows in random order; a drop-in `batch_sampler` for sentence-transformers."""

    def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None,
                 seed: int = 0, pool_batches: int = POOL_BATCHES) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        self.lengths = text_lengths(dataset)
        self.pool_batches = pool_batches

    def _batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        pool = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=self.lengths.__getitem__)
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffled]

    def __iter__(self):
        yield from self._batches()

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full if self.drop_last else full + bool(rest)
