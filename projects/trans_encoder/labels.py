"""Pseudo-labelled data: a TSV per cycle and side, identified by its sha256, and the per-cycle report.

Project plumbing around the paper's cycles (method.py): the labels each encoder writes for the other are files,
versioned by content, recorded on the run as tags and attached as artifacts under names that say their cycle
and side. The splits every cycle is scored on (the `Evaluate` config section) and that score live here too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import Field

from paperline.core.config import StrictModel
from paperline.data import derived
from paperline.project.interface import ProjectData
from paperline.project.metrics import spearman_names

LABELS_HEADER = ["sentence1", "sentence2", "label"]


class Evaluate(StrictModel):
    dataset: str = "stsb"
    select_split: str = "dev"  # the split the best cycle is chosen on
    report_split: str = "test"
    max_rows: int | None = Field(None, ge=2)

    def metric_names(self) -> set[str]:
        return spearman_names(self.dataset, [self.select_split, self.report_split])

    def rows(self, data: ProjectData) -> dict[str, list]:
        """Split -> rows (capped at `max_rows`): the selection split, then the report split."""
        return {split: data.read(self.dataset, split, self.max_rows)
                for split in dict.fromkeys([self.select_split, self.report_split])}


def bi_scores(encoder, splits: dict[str, list]) -> dict[str, float]:
    """Split -> the bi-encoder's STS Spearman x100 on its rows."""
    from paperline.ml.evaluation import sts_spearman

    return {split: sts_spearman(encoder, rows, name=split) for split, rows in splits.items()}


def write_labels(path: Path, pairs: list[tuple[str, str]], labels) -> str:
    """Write (sentence1, sentence2, label) rows; returns the file's sha256, its version."""
    return derived.write_tsv(path, LABELS_HEADER, ((a, b, f"{float(s):.6f}") for (a, b), s in zip(pairs, labels)))


def read_labels(path: Path) -> tuple[list[tuple[str, str]], list[float]]:
    rows = derived.read_tsv(path)
    return [(r["sentence1"], r["sentence2"]) for r in rows], [float(r["label"]) for r in rows]


def cycles_report(records: list[dict], select: str, report: str, folders: dict[str, Path], workdir: Path):
    """(the per-cycle table of both encoders, the labels' sha256 as tags, the labels files as artifacts)."""
    table: dict[str, list] = {"cycle": [], "bi_dev": [], "bi_test": [], "cross_dev": [], "cross_test": [],
                              "bi_labels_sha256": [], "cross_labels_sha256": []}
    tags, artifacts = {}, {}
    for r in records:
        table["cycle"].append(r["cycle"])
        for side in ("bi", "cross"):
            table[f"{side}_dev"].append(round(r[side].get(select, float("nan")), 2))
            table[f"{side}_test"].append(round(r[side].get(report, float("nan")), 2))
            table[f"{side}_labels_sha256"].append(r.get(f"{side}_labels_sha256", ""))
            if r["cycle"]:
                tags[f"trans_encoder.cycle{r['cycle']}.{side}_labels.sha256"] = r[f"{side}_labels_sha256"]
                artifacts[f"cycle{r['cycle']}_{side}_labels.tsv"] = named_copy(folders[f"cycle{r['cycle']}"],
                                                                               workdir, r["cycle"], side)
    return table, tags, artifacts


def named_copy(cycle_folder: Path, workdir: Path, cycle: int, side: str) -> Path:
    """The labels file under a name that says its cycle and side (MLflow keeps artifacts by file name)."""
    named = workdir / "pseudo_labels" / f"cycle{cycle}_{side}_labels.tsv"
    named.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(cycle_folder) / f"{side}_labels.tsv", named)
    return named
