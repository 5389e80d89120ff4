"""Batch embeddings and the search index that follow a model's champion.

    resolve <model>@<alias> -> encode the corpus in chunks (resumable) -> build the ANN index -> recall check
    against exact search -> register the index version -> move `serving` only if the check passed

Deployed as `embed-sbert-sts-definitions` (infra/prefect.yaml), triggered by a champion move of sbert_sts: a new
champion re-embeds the glosses and the index follows it, blue/green. `paperline encode` runs it by hand. Run as a
script: `python -m paperline_flows.embed sbert_sts@champion definitions`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from paperline.core.settings import Settings
from paperline.data.corpus import CorpusSpec
from paperline.ml.embedding_store import EmbeddingStore
from paperline.ops.production import index as search_index
from paperline.ops.production.defaults import DEFAULT_BACKEND, MIN_RECALL
from paperline.ops.production.encode import EXPERIMENT, encode_corpus
from paperline.ops.registry.aliases import ModelRegistry
from paperline.ops.store.audit import AuditStore
from paperline.ops.tracking.client import connect, experiment_id
from paperline_flows import events
from paperline_flows.dashboard import artifact_key


@dataclass
class EmbedOutcome:
    lines: list[str] = field(default_factory=list)
    index: str | None = None
    index_version: str | None = None
    serving: bool = False


@flow(name="paperline-embed", flow_run_name="embed-{model}-{dataset}", persist_result=False)
def embed(model: str = "sbert_sts@champion", dataset: str = "definitions", text: str | None = None,
          backend: str = DEFAULT_BACKEND, limit: int | None = None, build_index: bool = True,
          min_recall: float = MIN_RECALL) -> EmbedOutcome:
    """Embed a versioned corpus with the version an alias names, and serve a search index over it.

    Args:
        model: `<model>@<alias>` (or `<model>/<version>`), e.g. sbert_sts@champion.
        dataset: `<dataset>[:<split>]` in data/, e.g. definitions (every split) or definitions:test.
        text: The column to embed (default: the data kind's corpus column, the gloss for definitions).
        backend: openvino (the default where installed, else onnx), onnx, onnx-int8 or torch.
        limit: Embed only the first N rows (a smoke run).
        build_index: Build, check and register the search index after encoding.
        min_recall: Recall@10 against exact search the index must reach before `serving` moves to it.
    """
    logger = get_run_logger()
    settings = Settings.from_env()
    client = connect(settings)
    corpus = CorpusSpec.parse(dataset, text)
    encoded = encode_corpus(settings, client, model, corpus, backend, limit, progress=logger.info)
    outcome = EmbedOutcome([encoded.line()])
    logger.info(encoded.line())
    if build_index:
        name = search_index.index_name(encoded.model.name, corpus.describe(), text)
        registry = ModelRegistry(connect(settings), AuditStore(settings.store_url), actor=_actor(),
                                 policy_path=settings.policy_path)
        try:
            done = search_index.follow(registry, name, EmbeddingStore.load(encoded.folder), encoded.model,
                                       settings.workspace, min_recall,
                                       experiment_id(client, EXPERIMENT, settings.artifact_root),
                                       flow_run_id=str(flow_run.id) if flow_run.id else None, progress=logger.info)
        finally:
            registry.store.close()
        outcome.lines += done.lines()
        outcome.index, outcome.index_version, outcome.serving = done.name, done.version, done.serving
        for line in done.lines():
            logger.info(line)
        if done.moved:
            events.index_serving_moved(done.name, done.version, {
                "model": encoded.model.name, "model_version": encoded.model.version, "previous": done.previous_serving,
                "recall": done.check.recall, "data_version": encoded.data_version})
    create_markdown_artifact(key=artifact_key(f"embed-{model}-{dataset}"), description="batch embeddings and search index",
                             markdown="\n".join(f"- {line}" for line in outcome.lines))
    return outcome


def _actor() -> str:
    return f"prefect:{flow_run.name} ({flow_run.id})" if flow_run.id else "paperline"



if __name__ == "__main__":
    result = embed(sys.argv[1], sys.argv[2])
    print("\n".join(result.lines))
