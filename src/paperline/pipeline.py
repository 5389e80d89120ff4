"""Pure steps of the pipeline that the Prefect flow wires together: cache keys, the data gate, the summary.

Nothing here imports Prefect, so every step can be tested, and reused by another orchestrator, on its own.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paperline.config import ProjectConfig, config_digest
from paperline.data import DatasetRef, read_frame
from paperline.projects import Project, digest_files

LIBRARY_DIR = Path(__file__).resolve().parent

# Library modules that cannot change a trained model or its metrics: editing them keeps cached results.
# Every other module of the library counts in the cache key, so a change to code a method calls retrains.
PLUMBING_MODULES = frozenset(
    {
        "cli.py",
        "pipeline.py",
        "policy.py",
        "prefect_server.py",
        "quality.py",
        "registry.py",
        "settings.py",
        "store.py",
        "tracking.py",
        "errors.py",
        "upstream.py",  # finds and downloads upstream models; their identity is in the key itself
        "cross_encoder_pyfunc.py",  # serving wrapper of a logged cross-encoder: cannot change training
    }
)


def library_digest() -> str:
    sha = hashlib.sha256()
    for path in sorted(LIBRARY_DIR.glob("*.py")):
        if path.name not in PLUMBING_MODULES:
            sha.update(path.name.encode())
            sha.update(path.read_bytes())
    return sha.hexdigest()


def cache_key(project: Project, cfg: ProjectConfig, dataset_md5: str, upstream: dict[str, str] | None = None) -> str:
    """What a trained model depends on: the project's files, the library code, the resolved config, the data,
    and the identity of every upstream model it consumes (`UpstreamModel.identity()` by role): a new teacher
    version retrains the student."""
    parts = [project.name, digest_files(project.root), library_digest(), config_digest(cfg), dataset_md5]
    parts += [f"upstream {role}={identity}" for role, identity in sorted((upstream or {}).items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def gate_cache_key(cfg: ProjectConfig, dataset_md5: str) -> str:
    """The gate's verdict depends only on the data version, the splits read and the gate's code."""
    uses = sorted((name, use.kind, tuple(use.splits)) for name, use in cfg.data.items())
    code = [(LIBRARY_DIR / name).read_bytes() for name in ("quality.py", "quality_report.py", "pipeline.py")]
    sha = hashlib.sha256(repr((uses, dataset_md5)).encode())
    for blob in code:
        sha.update(blob)
    return sha.hexdigest()


def git_commit(root: Path) -> str:
    """The commit of the repository, with `-dirty` when tracked files differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


@dataclass
class GateOutcome:
    """The data gate over every dataset a run reads."""

    results: list[Any]  # paperline.quality_report.GateResult, one per dataset

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def summary_lines(self) -> list[str]:
        return [line for r in self.results for line in r.summary_lines()]

    def to_markdown(self) -> str:
        return "\n\n".join(r.to_markdown() for r in self.results)

    def to_html(self) -> str:
        return "\n".join(r.to_html() for r in self.results)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "datasets": [r.to_dict() for r in self.results]}


def gate_datasets(refs: dict[str, DatasetRef], cfg: ProjectConfig, limits: dict | None = None) -> GateOutcome:
    """Validate every split of every dataset the config reads, with the GX suite of its data kind."""
    from paperline.quality import GateLimits, gate_splits

    results = []
    for name, use in cfg.data.items():
        ref = refs[name]
        frames = {split: read_frame(ref.split_path(split), ref.kind) for split in use.splits}
        results.append(gate_splits(name, ref.kind, frames, GateLimits(**(limits or {}))))
    return GateOutcome(results)


@dataclass
class RunSummary:
    """What `paperline run` prints at the end, and what the flow returns."""

    project: str
    config: str
    status: str  # registered | cached | gate-failed | failed
    metrics: dict[str, float] = field(default_factory=dict)
    model_name: str | None = None
    model_version: str | None = None
    champion_moved: bool = False
    is_champion: bool = False  # after the run: whether this run's version holds `champion`
    budget_aliases: dict[str, str] = field(default_factory=dict)  # alias -> the (layers x dims) cell it serves
    decision: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    dataset_md5: str | None = None
    cache_hit: bool = False
    message: str = ""

    def lines(self, primary_metric: str | None = None) -> list[str]:
        out = [f"{self.project} [{self.config}]: {self.status}" + (f": {self.message}" if self.message else "")]
        shown = sorted(self.metrics.items())
        if len(shown) > 12:  # a grid of metrics belongs in MLflow; the summary keeps the headline numbers
            shown = [(k, v) for k, v in shown if k.endswith(str(primary_metric))] or shown[:12]
            out.append(f"  ({len(self.metrics) - len(shown)} more metrics in the MLflow run)")
        for name, value in shown:
            mark = "  <- primary" if name == primary_metric else ""
            out.append(f"  {name:<40} {value:8.2f}{mark}")
        if self.model_version:
            alias = ("champion (promoted)" if self.champion_moved else "champion (unchanged)" if self.is_champion
                     else "challenger (champion unchanged)")
            out.append(f"  model: {self.model_name} v{self.model_version}, alias {alias}")
            out.extend(f"  budget alias: {a} -> {cell}" for a, cell in sorted(self.budget_aliases.items()))
        out.extend(f"  policy: {reason}" for reason in self.decision)
        if self.cache_hit:
            out.append("  training and evaluation: cached (unchanged code, config and data)")
        out.append(f"  data: {self.dataset_md5}")
        out.append(f"  MLflow run: {self.mlflow_run_id} (experiment {self.mlflow_experiment_id}); `paperline ui` to open")
        if self.flow_run_url:
            out.append(f"  Prefect flow run: {self.flow_run_url}")
        return out
