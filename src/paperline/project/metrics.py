"""Metric names, built in one place: `<prefix>_<dataset>_<split>_<measure>`, e.g. `baseline_stsb_test_spearman`.

A prefix names what was scored besides the model itself (`baseline`, `teacher`, an arm such as `guided`); the
empty prefix is the model's own, unprefixed, headline metric. Methods name what `evaluate` reports with these, and
their `Config.metric_names()` (paperline.core.config.ProjectConfig) declares the same names with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def metric_name(*parts: str) -> str:
    """The parts joined by `_`, empty parts (the empty prefix) left out: ("", "stsb", "test", "spearman") ->
    `stsb_test_spearman`."""
    return "_".join(part for part in parts if part)


def spearman_name(dataset: str, split: str, prefix: str = "") -> str:
    """`stsb_test_spearman`, or with a prefix `baseline_stsb_test_spearman`."""
    return metric_name(prefix, dataset, split, "spearman")


def spearman_names(dataset: str, splits: Iterable[str], prefixes: Iterable[str] = ("",)) -> set[str]:
    """`spearman_name` of every split under every prefix."""
    return {spearman_name(dataset, split, prefix) for split in splits for prefix in prefixes}


def prefixed(names: Iterable[str], prefixes: Iterable[str]) -> set[str]:
    """Every name under every prefix (`""` keeps the name as it is)."""
    return {metric_name(prefix, name) for prefix in prefixes for name in names}


def with_prefix(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    """The same numbers under prefixed names: a training result's `{"steps": 4}` -> `{"sts_steps": 4}`."""
    return {metric_name(prefix, name): value for name, value in metrics.items()}
