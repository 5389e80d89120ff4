"""Cache keys: what a cached training or gate result depends on, so that exactly those changes recompute it.

The library is split by layer (paperline/core, data, ml, project, ops, cli); the subpackages whose code can
change a trained model or its metrics are in the key as whole folders, so a module added to one of them is
covered without a list to maintain. `ops` (tracking, registry, policy, caching, Prefect) and the CLI only
record, decide and orchestrate: editing them keeps cached results.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from paperline.core.config import ProjectConfig, config_digest
from paperline.project.discovery import Project, digest_files

LIBRARY_DIR = Path(__file__).resolve().parents[2]  # src/paperline (this file is ops/cache/keys.py)
# The layers whose code runs inside train and evaluate, or decides what they are given.
RESULT_SUBPACKAGES = ("core", "data", "ml", "project")
GATE_SUBPACKAGES = ("data",)  # the gate's verdict: the data kinds, the GX suites, the report


def library_digest(subpackages: tuple[str, ...] = RESULT_SUBPACKAGES) -> str:
    """sha256 over every file of the given subpackages (bytecode and markdown left out)."""
    sha = hashlib.sha256()
    for name in subpackages:
        sha.update(name.encode())
        sha.update(digest_files(LIBRARY_DIR / name).encode())
    return sha.hexdigest()


def cache_key(project: Project, cfg: ProjectConfig, dataset_md5: str, upstream: dict[str, str] | None = None,
              generated: dict[str, str] | None = None) -> str:
    """What a trained model depends on: the project's files, the library code, the resolved config, the data,
    the identity of every upstream model it consumes (`UpstreamModel.identity()` by role: a new teacher version
    retrains the student) and the sha256 of every dataset its `generate` wrote (a new generation retrains)."""
    parts = [project.name, digest_files(project.root), library_digest(), config_digest(cfg), dataset_md5]
    parts += [f"upstream {role}={identity}" for role, identity in sorted((upstream or {}).items())]
    parts += [f"generated {name}={sha256}" for name, sha256 in sorted((generated or {}).items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def gate_cache_key(cfg: ProjectConfig, dataset_md5: str, min_rows: dict | None = None,
                   previous_rows: dict | None = None, dataset_limits: dict | None = None) -> str:
    """The gate's verdict depends only on the data version, the datasets and splits read (and whether a shrink is
    allowed), the row floors and own limits (shrink, duplicates) of the card, the row counts of the last versions
    that passed the gate (the shrink check compares with them), and the gate's code."""
    uses = sorted((name, use.kind, tuple(use.splits), use.allow_shrink) for name, use in cfg.data.items())
    floors = sorted((name, sorted(splits.items())) for name, splits in (min_rows or {}).items())
    previous = sorted((name, sorted(splits.items())) for name, splits in (previous_rows or {}).items())
    own = sorted((name, sorted(values.items())) for name, values in (dataset_limits or {}).items())
    parts = (uses, floors, previous, own, dataset_md5, library_digest(GATE_SUBPACKAGES))
    return hashlib.sha256(repr(parts).encode()).hexdigest()
