"""The shrink check of the data gate: a split of a new dataset version that lost more of its rows than its data
kind allows, against the last version of the same dataset that passed the gate.

A floor (`min_rows` in the card) catches a split cut to nothing; it cannot catch a train split cut from 50,000
rows to 30,000, which still parses, trains and looks fine. Comparing with the previous gated version does. The
history of gated row counts lives in the audit store (paperline.ops.store.audit); the flow reads it and hands the
counts in, so this layer knows nothing about where they come from. A cut that is meant is declared in the config
(`data.<name>.allow_shrink: true`), and the gate then leaves this check out.
"""

from __future__ import annotations

import math
from typing import Any


def shrink_floor(previous: int, max_fraction: float) -> int:
    """The fewest rows a split may keep when it had `previous` rows and may lose at most `max_fraction` of them."""
    # The epsilon keeps a float product such as 5749 * 0.8 = 4599.2000000000003 from raising the bound by one.
    return max(0, math.ceil(previous * (1.0 - max_fraction) - 1e-9))


def shrink_expectation(E: Any, dataset: str, split: str, rows: int, previous: int, max_fraction: float
                       ) -> tuple[Any, str]:
    """The GX expectation that the split kept enough of its `previous` rows, and the sentence a failure reports.

    `E` is `great_expectations.expectations`, passed in so that this module never imports GX.
    """
    floor = shrink_floor(previous, max_fraction)
    lost = (previous - rows) / previous if previous else 0.0
    detail = (f"{split} has {rows:,} rows, {lost:.2%} fewer than the {previous:,} of the last version that passed "
              f"the gate; at most {max_fraction * 100:g}% fewer allowed (at least {floor:,} rows). If the cut is "
              f"intended, set data.{dataset}.allow_shrink: true in the config")
    return E.ExpectTableRowCountToBeBetween(min_value=floor), detail
