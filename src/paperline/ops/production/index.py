"""A search index over a model version's corpus vectors, versioned like a model and served behind `@serving`.

    vectors (embedding store) -> build the ANN index -> recall check against exact search -> register a version
    of `<model>-<corpus>` (challenger) -> move `serving` to it only if the check passed (blue/green: the old
    version serves until then; a failed check leaves it serving and says why)

The index version is an MLflow pyfunc (src/paperline/serving/index_pyfunc.py): its artifacts are the index and
the rows (label, text); its config names the query model version (`models:/sbert_sts/7`) whose vectors it holds,
so a query is always encoded by that version. `paperline search <index>@serving "..."` loads it as served
(`mlflow models serve` answers the same JSON), and refuses a `--model` that is not the index's own version:
vectors of two model versions are never compared.

The index holds each distinct text once, with every label of it (`distinct_rows`). The recall check: twice
`CHECK_QUERIES` of its texts, drawn with a fixed seed, are searched in the index and exactly (numpy, every
vector); each query's own row is left out of both answers, so that it is a held-out query (finding itself is not
recall). The smallest `ef_search` that reaches `min_recall` (0.95 by default) on the first half is the one the
version serves with, but never below `MIN_SERVING_EF`; the recall reported and gated is the second half's,
measured at that ef.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from paperline.core.errors import PaperlineError
from paperline.ml.embedding_store import EmbeddingStore
from paperline.ops.production.encode import ModelRef, resolve_model
from paperline.ops.production.defaults import MIN_RECALL

# The queries a served index meets are not its own rows: glosses searched among 148,717 WordNet terms reached
# recall@10 0.85 at the ef_search of 10 that corpus rows tuned, 0.96 at 32 (bench/results/reverse_dictionary.md),
# still 11,000 queries/s. So a version serves with at least this ef, whatever its own rows tuned.
MIN_SERVING_EF = 32

if TYPE_CHECKING:
    from paperline.ops.registry.aliases import ModelRegistry

SERVING = "serving"
RECALL_K = 10
CHECK_QUERIES = 1000
CHECK_SEED = 0
PYFUNC = Path(__file__).resolve().parents[2] / "serving" / "index_pyfunc.py"  # src/paperline/serving
ROWS_FILE = "rows.tsv"
CHECK_FILE = "recall_check.json"


class SearchIndexError(PaperlineError):
    """An index that cannot be built, found or queried as asked; the message says what to do."""


@dataclass(frozen=True)
class RecallCheck:
    recall: float
    k: int
    ef_search: int
    queries: int
    min_recall: float
    build_seconds: float
    index_qps: float
    exact_qps: float

    @property
    def passed(self) -> bool:
        return self.recall >= self.min_recall

    def line(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"recall@{self.k} {self.recall:.4f} against exact search on {self.queries} held-out queries "
                f"(ef_search {self.ef_search}; needs >= {self.min_recall}): {verdict}; {self.index_qps:.0f} "
                f"queries/s vs exact {self.exact_qps:.0f}, built in {self.build_seconds:.1f} s")


def index_name(model: str, corpus: str, text: str | None = None) -> str:
    """`sbert_sts`, `definitions` -> `sbert_sts-definitions` (`-term` for another text column)."""
    return f"{model}-{corpus.replace(':', '-')}" + (f"-{text}" if text else "")


def _without_self(ids, own):
    """Each row of `ids` (k + 1 answers) without the query's own row id, cut to k."""
    import numpy as np

    out = np.empty((ids.shape[0], ids.shape[1] - 1), dtype=ids.dtype)
    for row, (answers, mine) in enumerate(zip(ids, own)):
        kept = answers[answers != mine]
        out[row] = kept[: out.shape[1]] if len(kept) >= out.shape[1] else np.pad(kept, (0, out.shape[1] - len(kept)),
                                                                                constant_values=-1)
    return out


def distinct_rows(rows: list[tuple[str, str]]) -> tuple[list[int], list[tuple[str, str]]]:
    """Each distinct text once, with every label it has (a WordNet gloss is one row per term of its synset: 43%
    of the 207k rows repeat a gloss), as (row ids kept, (labels joined by ", ", text))."""
    where: dict[str, int] = {}
    kept: list[int] = []
    labels: list[list[str]] = []
    for row, (label, text) in enumerate(rows):
        slot = where.get(text)
        if slot is None:
            where[text] = len(kept)
            kept.append(row)
            labels.append([label])
        elif label not in labels[slot]:
            labels[slot].append(label)
    return kept, [(", ".join(names), rows[row][1]) for row, names in zip(kept, labels)]


def build_and_check(store: EmbeddingStore, folder: Path, min_recall: float = MIN_RECALL,
                    queries: int = CHECK_QUERIES, progress=print) -> RecallCheck:
    """Build the index of `store` into `folder` (index files, rows, the check), checking its recall.

    The queries are drawn once and cut in two: `ef_search` is tuned on the first half and the recall the check
    reports is measured on the second, so the number is not flattered by the choice it made (an ef tuned to
    exactly 0.95 on one set gave 0.945-0.948 on another in bench/ann_index.py)."""
    import csv

    import numpy as np

    from paperline.ml.vector_index import (
        EF_LADDER,
        VectorIndex,
        VectorIndexError,
        exact_search,
        recall_at_k,
        tune_ef_search,
    )

    kept, rows = distinct_rows(store.labelled_rows())
    vectors = store.vectors()[kept]
    if len(vectors) < 4:
        raise SearchIndexError(f"{store.folder} holds {len(vectors)} distinct texts; an index needs at least 4")
    progress(f"building the index over {len(vectors)} distinct texts ({store.rows} rows) of width {vectors.shape[1]}")
    started = time.perf_counter()
    index = VectorIndex.build(vectors)
    build_seconds = time.perf_counter() - started
    size = min(queries, len(vectors) // 2)
    chosen = np.random.default_rng(CHECK_SEED).choice(len(vectors), size=2 * size, replace=False)
    tune_ids, check_ids = chosen[:size], chosen[size:]
    exact_tune = _without_self(exact_search(vectors, vectors[tune_ids], RECALL_K + 1)[0], tune_ids)
    try:
        ef, _ = tune_ef_search(_LeaveSelfOut(index, tune_ids), vectors[tune_ids], exact_tune, k=RECALL_K,
                               target=min_recall, ladder=[e for e in EF_LADDER if e >= MIN_SERVING_EF])
    except VectorIndexError as missed:  # not even the largest ef reaches it: measured there, the check fails
        progress(str(missed))
        ef = EF_LADDER[-1]
    index.ef_search = ef
    asked = vectors[check_ids]
    started = time.perf_counter()
    exact_ids = _without_self(exact_search(vectors, asked, RECALL_K + 1)[0], check_ids)
    exact_qps = len(asked) / max(time.perf_counter() - started, 1e-9)
    started = time.perf_counter()
    found, _ = index.search(asked, RECALL_K + 1)
    index_qps = len(asked) / max(time.perf_counter() - started, 1e-9)
    recall = recall_at_k(_without_self(found, check_ids), exact_ids, RECALL_K)
    check = RecallCheck(round(recall, 6), RECALL_K, ef, len(asked), min_recall, round(build_seconds, 3),
                        round(index_qps, 1), round(exact_qps, 1))
    folder.mkdir(parents=True, exist_ok=True)
    index.save(folder / "index")
    with open(folder / ROWS_FILE, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerows(rows)
    (folder / CHECK_FILE).write_text(json.dumps(asdict(check), indent=1))
    progress(check.line())
    return check


class _LeaveSelfOut:
    """The index as `tune_ef_search` sees it: k + 1 answers with each query's own row taken out."""

    def __init__(self, index, own):
        self.index, self.own = index, own

    @property
    def ef_search(self) -> int:
        return self.index.ef_search

    @ef_search.setter
    def ef_search(self, ef: int) -> None:
        self.index.ef_search = ef

    def search(self, queries, k: int):
        ids, scores = self.index.search(queries, k + 1)
        return _without_self(ids, self.own), scores


@dataclass(frozen=True)
class IndexVersion:
    name: str
    version: str
    model: ModelRef
    check: RecallCheck
    serving: bool  # whether `serving` now names this version
    previous_serving: str | None
    run_id: str
    moved: bool = False  # whether this call moved `serving` (False also when it already named this version)

    def lines(self) -> list[str]:
        out = [f"index {self.name} v{self.version}: vectors of {self.model.describe()}", self.check.line()]
        if self.serving and not self.moved:
            out.append(f"{self.name}@{SERVING} already names v{self.version}")
        elif self.serving:
            out.append(f"{self.name}@{SERVING}: v{self.previous_serving or '-'} -> v{self.version}")
        else:
            out.append(f"{self.name}@{SERVING} stays on v{self.previous_serving or '-'}: the new version failed its "
                       "recall check (it is registered as challenger, never served)")
        return out


def register_and_serve(registry: ModelRegistry, name: str, folder: Path, store: EmbeddingStore, model: ModelRef,
                       check: RecallCheck, experiment_id: str | None, flow_run_id: str | None = None) -> IndexVersion:
    """Log the index as a pyfunc, register it (alias challenger), and move `serving` to it if its check passed."""
    import mlflow

    from paperline.core.requirements import pinned_requirements
    from paperline.ops.tracking import tags

    identity = store.identity
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"index-{name}") as run:
        mlflow.set_tags({tags.INDEX_MODEL: model.name, tags.INDEX_MODEL_VERSION: model.version,
                         tags.DATASET_MD5: identity["data_version"]})
        mlflow.log_params({"model": model.uri, "corpus": identity["corpus"], "backend": identity["backend"],
                           "rows": store.rows, "ef_search": check.ef_search})
        mlflow.log_metrics({f"recall_at_{check.k}": check.recall, "build_seconds": check.build_seconds,
                            "index_qps": check.index_qps, "exact_qps": check.exact_qps})
        info = mlflow.pyfunc.log_model(
            name="index", python_model=str(PYFUNC), artifacts={"index": str(folder)},
            model_config={"query_model": model.uri, "k": RECALL_K},
            pip_requirements=pinned_requirements(["mlflow", "sentence-transformers", "numpy", "pandas"]),
            input_example=(["a large animal with a trunk"], {"k": RECALL_K}))
    version_tags = {tags.INDEX_MODEL: model.name, tags.INDEX_MODEL_VERSION: model.version,
                    tags.INDEX_VECTORS: vectors_key(store),
                    tags.DATASET_MD5: identity["data_version"], tags.INDEX_CORPUS: identity["corpus"],
                    tags.INDEX_RECALL: f"{check.recall:.6f}", tags.INDEX_CHECK: "passed" if check.passed else "failed"}
    version = registry.register(name=name, model_uri=info.model_uri, run_id=run.info.run_id, tags=version_tags,
                                flow_run_id=flow_run_id)
    return _serve(registry, name, version, model, check, run.info.run_id)


def _serve(registry: ModelRegistry, name: str, version: str, model: ModelRef, check: RecallCheck,
           run_id: str) -> IndexVersion:
    previous = registry.aliases(name).get(SERVING)
    if not check.passed or previous == version:
        return IndexVersion(name, version, model, check, previous == version, previous, run_id)
    registry.point_alias(name, SERVING, version, action="serve", reason=check.line(),
                         details={"recall_check": asdict(check), "model": model.uri})
    return IndexVersion(name, version, model, check, True, previous, run_id, moved=True)


def _existing(registry: ModelRegistry, name: str, store: EmbeddingStore):
    """The newest version of `name` already built from these very vectors (`vectors_key`), if any."""
    from paperline.ops.tracking import tags

    try:
        versions = registry.client.search_model_versions(f"name = '{name}'")
    except Exception:  # noqa: BLE001 -- no such model yet
        return None
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        if version.tags.get(tags.INDEX_VECTORS) == vectors_key(store):
            return version
    return None


def vectors_key(store: EmbeddingStore) -> str:
    """What the index's vectors are, as one tag: a digest of the store's identity (model and data version,
    corpus, column, backend, limit), so that another limit or backend is never taken for the same vectors."""
    import hashlib

    return hashlib.sha256(json.dumps(store.identity, sort_keys=True).encode()).hexdigest()[:16]


def follow(registry: ModelRegistry, name: str, store: EmbeddingStore, model: ModelRef, workspace: Path,
           min_recall: float, experiment_id: str | None, flow_run_id: str | None = None,
           progress=print) -> IndexVersion:
    """The index of `store` served behind `name@serving` if its recall check passes; idempotent: vectors that
    already have a version (a rerun, a second trigger of one promotion) reuse it instead of registering again."""
    from paperline.ops.tracking import tags

    folder = workspace / "indexes" / name / f"{model.name}-v{model.version}-{vectors_key(store)}"
    found = _existing(registry, name, store)
    if found is not None and found.tags.get(tags.INDEX_CHECK) == "passed" and (folder / CHECK_FILE).is_file():
        check = RecallCheck(**json.loads((folder / CHECK_FILE).read_text()))
        progress(f"{name} v{found.version} already holds these vectors; not rebuilt")
        return _serve(registry, name, str(found.version), model, check, found.run_id or "")
    check = build_and_check(store, folder, min_recall, progress=progress)
    return register_and_serve(registry, name, folder, store, model, check, experiment_id, flow_run_id)


def index_model(client, index_spec: str) -> tuple[str, str, ModelRef]:
    """(index name, version, the model version whose vectors it holds) for `<index>@<alias>` or `<index>/<n>`."""
    found = resolve_model(client, index_spec)
    version = client.get_model_version(found.name, found.version)
    from paperline.ops.tracking import tags

    model, model_version = version.tags.get(tags.INDEX_MODEL), version.tags.get(tags.INDEX_MODEL_VERSION)
    if not model or not model_version:
        raise SearchIndexError(f"{index_spec} (v{found.version}) is not a search index (no {tags.INDEX_MODEL} tag); "
                          "`paperline encode <model>@<alias> --dataset <name>` builds one")
    return found.name, found.version, ModelRef(model, model_version, None, None)


def check_query_model(client, index_spec: str, query_model: str | None) -> tuple[str, str, ModelRef]:
    """The index's identity, after refusing a `query_model` that is not the version the index's vectors are of."""
    name, version, holds = index_model(client, index_spec)
    if query_model:
        asked = resolve_model(client, query_model)
        if (asked.name, asked.version) != (holds.name, holds.version):
            raise SearchIndexError(
                f"{name} v{version} holds vectors of {holds.name} v{holds.version}; the query model {query_model} is "
                f"{asked.name} v{asked.version}, and vectors of two model versions are never compared: search with "
                f"--model {holds.name}/{holds.version}, or re-embed (`paperline encode {query_model} ...`) so that "
                "the index follows it")
    return name, version, holds


def search(client, index_spec: str, queries: list[str], k: int = RECALL_K, query_model: str | None = None):
    """Answer `queries` from the index as served: a DataFrame of query, rank, label, text, score."""
    import mlflow

    name, version, _ = check_query_model(client, index_spec, query_model)
    from paperline.ops.compare.scoring import local_model_uri

    served = mlflow.pyfunc.load_model(local_model_uri(f"models:/{name}/{version}"))
    return served.predict(queries, params={"k": k})
