"""The Prefect tasks of a run: each calls one library function or the project's method, and says how Prefect
caches it (the data gate, train and evaluate persist checked JSON in the workspace's result store, under keys
from `paperline.ops.cache.keys`; the rest run every time). `paperline_flows.pipeline` calls them."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from paperline.core.settings import Settings
from paperline.data.datasets import DataVersion, resolve_data_version
from paperline.data.quality import gate_datasets
from paperline.data.quality_report import GateOutcome
from paperline.ops.compare.champion import Comparison
from paperline.ops.compare.suite import ComparisonPlan
from paperline.ops.registry.aliases import ModelRegistry
from paperline.ops.registry.decisions import Lineage
from paperline.ops.registry.policy import Policy
from paperline.ops.runs.promote_run import register_and_promote
from paperline.ops.runs.summary import RunSummary
from paperline.ops.services.outages import step
from paperline.project.discovery import Project
from paperline.project.distributed_job import JobSpec, launch
from paperline.project.interface import Evaluation, GeneratedData, ProjectData, RunContext, TrainedModel
from paperline_flows import dashboard
from paperline_flows.results import RESULTS


@task(name="resolve data", cache_policy=NO_CACHE, persist_result=False)  # DVC decides each time
def resolve_data(settings: Settings) -> DataVersion:
    version = resolve_data_version(settings.root)
    if version.pulled:
        get_run_logger().info(f"pulled data {version.md5} from the DVC remote")
    return version


@task(name="data gate", cache_key_fn=lambda context, parameters: parameters["key"], persist_result=True,
      result_serializer=RESULTS)
def data_gate(refs, cfg, min_rows: dict, key: str, previous_rows: dict | None = None,
              dataset_limits: dict | None = None) -> GateOutcome:
    """GX validation of every split the run reads, with the card's row floors and, against the row counts of the
    last version that passed (`previous_rows`), its shrink fractions; cached per data version, those inputs and
    gate code."""
    outcome = gate_datasets(refs, cfg, min_rows=min_rows, previous_rows=previous_rows, dataset_limits=dataset_limits)
    create_markdown_artifact(key=dashboard.artifact_key("data-gate"), markdown=outcome.to_markdown(),
                             description="data gate report")
    for line in outcome.summary_lines():
        get_run_logger().info(line)
    return outcome


def _step_key(step: str):
    return lambda context, parameters: f"{parameters['key']}-{step}"


# `step`: a full disk or a lost service is one line in Prefect's log too, not a traceback from inside a library
@task(name="train", cache_key_fn=_step_key("train"), persist_result=True, result_serializer=RESULTS)
@step("training")
def train(project: Project, cfg, data: ProjectData, key: str, ctx: RunContext, job: JobSpec | None = None,
          nproc: int = 1) -> TrainedModel:
    if job is not None and nproc > 1:  # the same train, on every rank of a torchrun; rank 0's result comes back
        import torch

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        get_run_logger().info(f"training under torchrun --standalone: {nproc} processes ({backend})")
        return launch(job, nproc)
    # a training-free method builds its servable model instead (TrainingFreeMethod.prepare)
    return project.build_model(cfg, data, ctx)


@task(name="evaluate", cache_key_fn=_step_key("evaluate"), persist_result=True, result_serializer=RESULTS)
@step("evaluation")
def evaluate(project: Project, model: TrainedModel, cfg, data: ProjectData, key: str, ctx: RunContext) -> Evaluation:
    return project.method().evaluate(model, cfg, data, ctx)


@task(name="generate data", cache_policy=NO_CACHE, persist_result=False)
def generate_data(project: Project, cfg, data: ProjectData, runs_dir: Path, models: dict) -> dict[str, GeneratedData]:
    """A generating method's first stage (an LM writing triplets). Not cached by Prefect: the method resumes and
    reuses its own files, and the files' sha256, known only once they exist, keys the training cache."""
    return project.generate(cfg, data, runs_dir, models)


# Never cached: registration and the policy run every time (and a registry cannot be hashed into a key).
@task(name="register and promote", cache_policy=NO_CACHE, persist_result=False)
@step("registration")
def register(registry: ModelRegistry, policy: Policy, project: Project, model: TrainedModel, key: str,
             lineage: Lineage, summary: RunSummary, comparison: ComparisonPlan | None = None) -> Comparison | None:
    """Compare with the champion on the same rows, register, and let the policy decide (`register_and_promote`);
    the version's model card is also a Prefect artifact."""
    compared = register_and_promote(registry, policy, project.card, model, key, lineage, summary, comparison)
    create_markdown_artifact(key=dashboard.artifact_key("model-card"), markdown=summary.model_card,
                             description=f"model card of {summary.model_name} v{summary.model_version}")
    return compared
