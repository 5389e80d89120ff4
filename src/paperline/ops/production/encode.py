"""`paperline encode <model>@<alias> --dataset <name>[:<split>]`: a corpus's vectors under one model version.

The model is resolved to the version its alias names now (`sbert_sts@champion` -> v7), and the vectors are stored
under that version and the data version (`paperline.ml.embedding_store`): a champion that moves later never
changes vectors already written, and a store of v7 is never extended with v8's vectors. The corpus is streamed in
chunks (`paperline.data.corpus`), so memory is one chunk of texts and vectors plus the model; a rerun after a
kill resumes from the last finished chunk. Each encode is an MLflow run in the `paperline-embeddings` experiment
(model, version, data version, corpus, backend, rows per second) whose artifact `vectors/` is the store itself
(the manifest and every chunk), so every set of vectors is versioned and found from the model version it came
from.

Backends (`paperline.ops.production.defaults`, measured in bench/results/batch_encode.md): `openvino` (the default
where `paperline[openvino]` is installed: bf16 on CPUs with native bf16, else f32; PyTorch's embeddings to cosine
>= 0.999), `onnx` (ONNX Runtime, the default otherwise; cosine 1.0), `onnx-int8` (STS-B within 0.1) and `torch`
(sentence-transformers' own encode).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from paperline.core.errors import UsageError
from paperline.core.settings import Settings
from paperline.data.corpus import CorpusSpec, corpus_rows
from paperline.data.datasets import dataset_ref, resolve_data_version
from paperline.ml.embedding_store import EmbeddingStore, chunked, fill
from paperline.ops.production.defaults import BACKENDS, DEFAULT_BACKEND
from paperline.project.dataset_readers import dataset_readers

if TYPE_CHECKING:
    import numpy as np

CHUNK_ROWS = 8192  # rows per chunk: about 12 MB of 384-d vectors, and at most a few minutes lost to a kill
VECTORS_ARTIFACT = "vectors"
EXPERIMENT = "paperline-embeddings"
BATCH_SIZE = 64


@dataclass(frozen=True)
class ModelRef:
    """A registered model version, and the alias it was reached by (None: named by its number)."""

    name: str
    version: str
    alias: str | None
    run_id: str | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def describe(self) -> str:
        return f"{self.name} v{self.version}" + (f" (@{self.alias})" if self.alias else "")


def resolve_model(client, spec: str) -> ModelRef:
    """`name@alias` or `name/version` -> the version it names now; one line when it names nothing."""
    from mlflow.exceptions import MlflowException

    name, sep, alias = spec.partition("@")
    number = None
    if not sep:
        name, sep, number = spec.partition("/")
    if not sep or not name or not (alias or number):
        raise UsageError(f"'{spec}' is not <model>@<alias> or <model>/<version>; e.g. sbert_sts@champion")
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias
                 else client.get_model_version(name, number))
    except MlflowException as exc:
        raise UsageError(f"cannot find {spec}: {str(exc).splitlines()[0]}; `paperline models ls` lists models and "
                         "aliases") from None
    return ModelRef(name, str(found.version), alias or None, found.run_id)


def load_sentence_model(model: ModelRef):
    """The version as a SentenceTransformer (from its own folder when the artifacts are local)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from paperline.ops.compare.scoring import local_model_uri

    try:
        return mlflow.sentence_transformers.load_model(local_model_uri(model.uri))
    except MlflowException as exc:
        raise UsageError(f"{model.describe()} is not a sentence-transformers model, which is what a batch encode "
                         f"embeds with ({str(exc).splitlines()[0]})") from None


def sentence_encoder(model: ModelRef, backend: str, workspace: Path) -> Callable[[list[str]], np.ndarray]:
    """A function from texts to L2-normalised float32 vectors, with `backend`."""
    import numpy as np

    if backend not in BACKENDS:
        raise UsageError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    encoder = load_sentence_model(model)

    def normalised(vectors) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    variant, runtime = BACKENDS[backend]
    if variant is None:
        return lambda texts: normalised(encoder.encode(texts, batch_size=BATCH_SIZE, convert_to_numpy=True))
    from paperline.ml import fast_encode

    folder = workspace / "models" / f"{model.name}-v{model.version}"
    if not (folder / "modules.json").is_file():
        encoder.save(str(folder))
    try:
        exported, _ = fast_encode.cached_export(folder, variant)
    except fast_encode.NotExportable as exc:
        raise UsageError(f"{model.describe()} cannot use backend {backend} ({exc}); use --backend torch") from None
    onnx = fast_encode.OnnxEncoder(exported, backend=runtime)
    return lambda texts: normalised(onnx.encode(texts, batch_size=BATCH_SIZE))


def store_folder(workspace: Path, model: ModelRef, corpus: CorpusSpec, data_version: str, backend: str,
                 limit: int | None = None) -> Path:
    name = (corpus.describe().replace(":", "-") + (f"-{corpus.text}" if corpus.text else "")
            + (f"-first{limit}" if limit else ""))
    return workspace / "embeddings" / model.name / f"v{model.version}" / f"{name}-{data_version[:12]}-{backend}"


@dataclass(frozen=True)
class EncodeResult:
    model: ModelRef
    corpus: str
    data_version: str
    backend: str
    folder: Path
    rows: int
    rows_encoded: int
    rows_skipped: int
    seconds: float
    mlflow_run_id: str | None

    @property
    def rows_per_second(self) -> float:
        return self.rows_encoded / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        if not self.rows_encoded and self.rows_skipped == self.rows:
            return (f"encoded {self.corpus} with {self.model.describe()} ({self.backend}): {self.rows} rows, already "
                    f"complete in {self.folder}; nothing encoded")
        resumed = f", {self.rows_skipped} resumed from an earlier run" if self.rows_skipped else ""
        speed = f" at {self.rows_per_second:.0f} rows/s" if self.rows_encoded else ""
        return (f"encoded {self.corpus} with {self.model.describe()} ({self.backend}): {self.rows} rows "
                f"({self.rows_encoded} now{speed}{resumed}) into {self.folder}")


def encode_corpus(settings: Settings, client, model_spec: str, corpus: CorpusSpec, backend: str = DEFAULT_BACKEND,
                  limit: int | None = None, chunk_rows: int = CHUNK_ROWS,
                  progress: Callable[[str], None] = print) -> EncodeResult:
    """Encode (or finish encoding) `corpus` with the version `model_spec` names; see the module docstring."""
    import mlflow

    from paperline.ops.tracking.client import experiment_id

    model = resolve_model(client, model_spec)
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    version = resolve_data_version(settings.root)
    kind = dataset_readers(settings.projects_dir).kind(corpus.dataset)
    ref = dataset_ref(version, corpus.dataset, kind)
    identity = {"model": model.name, "model_version": model.version, "data_version": version.md5,
                "corpus": corpus.describe(), "text": corpus.text, "label": corpus.label, "kind": kind,
                "backend": backend, "chunk_rows": chunk_rows, "limit": limit, "normalized": True}
    folder = store_folder(settings.workspace, model, corpus, version.md5, backend, limit)
    store = EmbeddingStore.open(folder, identity)
    rows = corpus_rows(ref, corpus, limit)
    if store.complete:
        return EncodeResult(model, corpus.describe(), version.md5, backend, folder, store.rows, 0, store.rows, 0.0,
                            store.manifest.get("mlflow_run_id"))
    encode = sentence_encoder(model, backend, settings.workspace)
    with mlflow.start_run(experiment_id=experiment_id(client, EXPERIMENT, settings.artifact_root),
                          run_name=f"encode-{model.name}-v{model.version}-{corpus.describe()}") as run:
        mlflow.set_tags({"paperline.embeddings.model": model.name, "paperline.embeddings.model_version": model.version,
                         "paperline.embeddings.corpus": corpus.describe(), "paperline.data_version": version.md5})
        mlflow.log_params({k: v for k, v in identity.items() if v is not None})
        started = time.perf_counter()
        stats = fill(store, chunked(rows, chunk_rows), encode, progress)
        store.manifest["mlflow_run_id"] = run.info.run_id
        store.finish(time.perf_counter() - started)
        mlflow.log_metrics({"rows": store.rows, **stats,
                            "rows_per_second": stats["rows_encoded"] / max(stats["encode_seconds"], 1e-9)})
        # the versioned artifact: the manifest and every chunk, under the run of the model version they came from
        # (the workspace copy is the working one; the artifact store keeps it when the workspace is gone)
        mlflow.log_artifacts(str(folder), artifact_path=VECTORS_ARTIFACT)
    return EncodeResult(model, corpus.describe(), version.md5, backend, folder, store.rows,
                        int(stats["rows_encoded"]), int(stats["rows_skipped"]), stats["encode_seconds"],
                        run.info.run_id)

