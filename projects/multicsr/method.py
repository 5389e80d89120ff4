"""MultiCSR: an LM writes NLI triplets for premises, curates them, and a guide masks false negatives in training.

Stage 1 (generation.py): SmolLM2-135M-Instruct writes an entailment and a contradiction of each SNLI premise and
rates the similarity of both pairs; the rows are appended to a TSV (kind `nli_generated`) that resumes after a
kill. The file is gated by the data gate like any dataset before anything trains on it, and its sha256 is its
version (tag `multicsr.generated.sha256`, attached to the run as `generated_triplets`). Stage 2: self-curation by
the reference's thresholds. Stage 3 (guided_loss.py): in-batch contrastive training with hard negatives, a
frozen copy of the base model masking candidates above cosine phi.

Four arms, same premises, same steps, same seed, each from the base model: `human` (SNLI's own entailment and
contradiction of those premises), `generated` (every generated row), `curated` (rows kept by curation) and
`guided` (curated rows, guide masking); `guided` is the registered model. A smaller curated set is cycled to the
same number of steps (epochs follow), so every arm sees the same number of batches.

How a new generation retrains downstream: generation is this method's `generate` (GeneratingMethod), which the
platform runs before `train` and whose file it treats as a dataset version of its own: gated under kind
`nli_generated`, logged as an MLflow dataset input whose digest is the file's sha256, and that sha256 in the
training cache key. A new generation (other settings, other prompts, or the file made again) retrains every arm;
an unchanged one is a cache hit. The file lives in a folder keyed by what it depends on (`generation_dir`): a
rerun after a kill finds the rows already written, and a run that changes only training settings reuses it.

References:
    - Wang et al., "Large Language Models can Contrastively Refine their Generation for Better Sentence
      Representation Learning" (MultiCSR), NAACL 2024, arXiv 2310.10962; github Circle-Ming/MultiCSR

Inputs (data kinds):
    `nli_pairs` (SNLI dev+test: premises, and the human triplets of the `human` arm), `scored_pairs` (STS-B dev
    and test for evaluation), `nli_generated` (written by `generate`, gated by the platform before `train`).

Example:
    paperline run multicsr --config smoke
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import Field

from paperline.core.config import ProjectConfig, StrictModel
from paperline.data import derived
from paperline.ml.evaluation import sts_results
from paperline.ml.models import load_sentence_transformer
from paperline.ml.training import fit
from paperline.project.interface import Evaluation, GeneratedData, ProjectData, RunContext, TrainedModel
from paperline.project.metrics import with_prefix
from paperline.project.sections import EvaluateSection, FitSection

from .triplets import (Generate, GeneratedDataError, generate_file, generation_dir, premise_triplets, read_speed,
                       triplet_dataset, write_speed)

ARMS = ("human", "generated", "curated", "guided")
HEADLINE = "guided"
GENERATED = "multicsr_generated"  # the generated dataset's name (gate, MLflow input)


class Curate(StrictModel):
    positive_min: float = Field(3.0, ge=0, le=5)  # the reference's filter_type 15
    negative_max: float = Field(3.0, ge=0, le=5)
    require_gap: bool = True  # the two ratings must differ
    min_margin: float = Field(0.0, ge=0, le=5)  # and differ by at least this much (ours; 0: the reference's rule)
    min_rows: int = Field(8, ge=2)  # fewer kept rows than this: stop with one line rather than train on noise


class Train(FitSection):
    phi: float = Field(0.95, gt=-1, le=1)  # the guide's absolute cosine threshold (the paper's value)
    scale: float = Field(20.0, gt=0)  # 1 / temperature 0.05


class Evaluate(EvaluateSection):
    arms = ARMS  # every arm's `<arm>_stsb_<split>_spearman` besides the headline's unprefixed ones


class Config(ProjectConfig):
    generate: Generate = Generate()
    curate: Curate = Curate()
    train: Train
    evaluate: Evaluate = Evaluate()


# ---- train -------------------------------------------------------------------------------------------------


def generate(cfg: Config, data: ProjectData, ctx: RunContext) -> list[GeneratedData]:
    """Stage 1: the LM's triplets for the premises, in `generation_dir(ctx.workdir, ...)/triplets.tsv`, resumed
    where a killed generation stopped; the speed of the pass that wrote rows is kept beside it."""
    premises = [t.anchor for t in premise_triplets(cfg, data)]
    path = generation_dir(ctx.workdir, cfg, premises) / "triplets.tsv"
    write_speed(path, generate_file(cfg, premises, path, ctx.progress))
    return [GeneratedData(name=GENERATED, kind="nli_generated", path=path)]


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    from . import generation as gen
    from .guided_loss import GuidedMultipleNegativesLoss
    human = premise_triplets(cfg, data)
    generated = ctx.generated_data(GENERATED)  # gated by the platform; its sha256 is in this run's cache key
    rows = generated.rows()
    curated = gen.curate(rows, cfg.curate.positive_min, cfg.curate.negative_max, cfg.curate.require_gap,
                         cfg.curate.min_margin)
    if len(curated) < cfg.curate.min_rows:
        raise GeneratedDataError(f"curation kept {len(curated)} of {len(rows)} generated triplets, fewer than "
                                 f"curate.min_rows={cfg.curate.min_rows}; lower curate.positive_min or raise "
                                 f"curate.negative_max, or generate more premises")
    speed = read_speed(Path(generated.path))
    sets = {"human": human, "generated": gen.uncurated(rows), "curated": curated, "guided": curated}
    steps_rows = cfg.train.max_rows or len(human)
    metrics = {"generated_rows": float(len(rows)), "curated_rows": float(len(curated)),
               "human_rows": float(len(human)), "generation_seconds": float(speed.get("seconds", 0.0)),
               "generation_premises_per_minute": float(speed.get("per_minute", 0.0))}
    outputs: dict[str, Path] = {"generated_triplets": Path(generated.path)}
    for arm in ARMS:
        done = ctx.workdir / "arms" / arm / "model"
        if not (done / "config.json").is_file():  # a finished arm is kept: a killed job resumes at the next
            model = load_sentence_transformer(cfg.base_model)
            guide = load_sentence_transformer(cfg.base_model).eval() if arm == "guided" else None
            loss = GuidedMultipleNegativesLoss(model, guide, cfg.train.phi, cfg.train.scale)
            result = fit(model, triplet_dataset(sets[arm], steps_rows, cfg.seed), loss,
                         cfg.train.settings(done.parent / "checkpoints", cfg.seed, ctx.progress))
            metrics.update(with_prefix(result.metrics(), arm))
            if guide is not None:
                metrics["guided_masked_candidates"] = float(loss.masked)
            model.save(str(done))
        outputs[f"{arm}_model"] = done
    final = ctx.workdir / "model"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(outputs[f"{HEADLINE}_model"], final)
    notes = {"multicsr.generated.sha256": generated.sha256 or derived.sha256_file(Path(generated.path)),
             "multicsr.generated.rows": str(len(rows)),
             "multicsr.generated.lm": cfg.generate.lm}
    return TrainedModel(path=final, metrics=metrics, notes=notes, outputs=outputs)


# ---- evaluate ----------------------------------------------------------------------------------------------


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """STS-B Spearman x100 of every arm (`<arm>_stsb_<split>_spearman`), the headline arm unprefixed, and the
    untrained base model (`baseline_`)."""
    from sentence_transformers import SentenceTransformer

    e = cfg.evaluate
    splits = e.rows(data)
    metrics, predictions = {}, {}
    for arm in ARMS:
        arm_metrics, arm_predictions = sts_results(SentenceTransformer(str(model.output(f"{arm}_model"))), splits,
                                                   f"{arm}_{e.dataset}")
        metrics.update(arm_metrics)
        if arm == HEADLINE:
            predictions = {k.removeprefix(f"{arm}_"): v for k, v in arm_predictions.items()}
            metrics.update({k.removeprefix(f"{arm}_"): v for k, v in arm_metrics.items()})
    if e.baseline:
        metrics.update(sts_results(load_sentence_transformer(cfg.base_model), splits, f"baseline_{e.dataset}")[0])
    tags = {"multicsr.generated.sha256": derived.sha256_file(model.output("generated_triplets"))}
    return Evaluation(metrics=metrics, predictions=predictions, tags=tags,
                      artifacts={"generated_triplets.tsv": model.output("generated_triplets")})
