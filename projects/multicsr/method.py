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

import hashlib
import json
import random
import shutil
from collections import defaultdict
from pathlib import Path

from pydantic import Field

from paperline.core.config import ProjectConfig, StrictModel
from paperline.core.errors import PaperlineError
from paperline.data import derived
from paperline.ml.evaluation import sts_results
from paperline.ml.models import load_sentence_transformer
from paperline.ml.training import fit
from paperline.project.discovery import project_module
from paperline.project.interface import (
    Evaluation,
    GeneratedData,
    ProjectData,
    RunContext,
    TrainedModel,
)
from paperline.project.sections import EvaluateSection, FitSection

HERE = Path(__file__).resolve().parent
ARMS = ("human", "generated", "curated", "guided")
HEADLINE = "guided"
GENERATED = "multicsr_generated"  # the generated dataset's name (gate, MLflow input)


class GeneratedDataError(PaperlineError):
    """Curation left too few generated triplets to train on (the gate over them is the platform's)."""


class Generate(StrictModel):
    lm: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    premises: int = Field(200, ge=2)  # distinct SNLI premises that have an entailment and a contradiction
    batch_size: int = Field(4, ge=1)
    max_new_tokens: int = Field(40, ge=4)
    temperature: float = Field(0.7, ge=0)
    threads: int | None = Field(None, ge=1)  # torch threads for the LM (None: torch's default)


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
    def metric_names(self) -> set[str]:
        names = {self.metric_name(split, f"{arm}_") for split in self.splits for arm in ARMS}
        return names | super().metric_names()


class Config(ProjectConfig):
    generate: Generate = Generate()
    curate: Curate = Curate()
    train: Train
    evaluate: Evaluate = Evaluate()


# ---- data --------------------------------------------------------------------------------------------------


def human_triplets(rows, premises: int, seed: int) -> list:
    """SNLI's own (premise, entailment, contradiction): one per premise that has both, the first `premises` of
    them after a seeded shuffle. These premises are the ones the LM is asked about."""
    gen = project_module(HERE / "generation.py")
    by_premise: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        by_premise[row.premise.strip()].setdefault(row.label, row.hypothesis)
    both = sorted(p for p, labels in by_premise.items() if {"entailment", "contradiction"} <= labels.keys())
    random.Random(seed).shuffle(both)
    return [gen.Triplet(p, by_premise[p]["entailment"], by_premise[p]["contradiction"]) for p in both[:premises]]


def generation_key(cfg: Config, premises: list[str]) -> str:
    """What the generated file depends on: the generation settings, the seed, the premises and the code that
    prompts, parses and writes (generation.py). Training settings are not in it, so changing them reuses the file."""
    text = json.dumps({"generate": cfg.generate.model_dump(exclude={"threads"}), "seed": cfg.seed,
                       "premises": premises, "code": (HERE / "generation.py").read_text()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def generation_dir(root: Path, cfg: Config, premises: list[str]) -> Path:
    """The generation's own folder under `root` (the project's generation folder, shared by its runs): a killed
    generation resumes there, and a run that changes only training settings finds the finished file."""
    return Path(root) / generation_key(cfg, premises)[:16]


def generate_file(cfg: Config, premises: list[str], path: Path, progress: bool):
    """Stage 1 with the configured LM (resuming into `path`); returns the GenerationReport."""
    import torch

    from paperline.ml.causal_lm import load_causal_lm

    gen = project_module(HERE / "generation.py")
    if gen.done_premises(path) >= set(premises):
        return gen.GenerationReport(rows=len(gen.done_premises(path)), generated=0, seconds=0.0)
    if cfg.generate.threads:
        torch.set_num_threads(cfg.generate.threads)
    model, tokenizer = load_causal_lm(cfg.generate.lm)
    return gen.generate_triplets(premises, path, gen.chat_writer(model, tokenizer, cfg.seed, cfg.generate.temperature),
                                 gen.chat_rater(model, tokenizer), batch_size=cfg.generate.batch_size,
                                 max_new_tokens=cfg.generate.max_new_tokens, progress=progress)


def triplet_dataset(triplets: list, rows: int, seed: int):
    """(anchor, positive, negative) columns, cycled to `rows` rows so every arm trains the same steps."""
    from datasets import Dataset

    if not triplets:
        raise GeneratedDataError("no triplets to train on")
    order = list(triplets)
    random.Random(seed).shuffle(order)
    cycled = [order[i % len(order)] for i in range(rows)]
    return Dataset.from_dict({"anchor": [t.anchor for t in cycled], "positive": [t.positive for t in cycled],
                              "negative": [t.negative for t in cycled]})


# ---- train -------------------------------------------------------------------------------------------------


def _premise_triplets(cfg: Config, data: ProjectData) -> list:
    return human_triplets([row for split in ("dev", "test") for row in data.read("snli", split)],
                          cfg.generate.premises, cfg.seed)


def generate(cfg: Config, data: ProjectData, ctx: RunContext) -> list[GeneratedData]:
    """Stage 1: the LM's triplets for the premises, in `generation_dir(ctx.workdir, ...)/triplets.tsv`, resumed
    where a killed generation stopped; the speed of the pass that wrote rows is kept beside it."""
    premises = [t.anchor for t in _premise_triplets(cfg, data)]
    path = generation_dir(ctx.workdir, cfg, premises) / "triplets.tsv"
    report = generate_file(cfg, premises, path, ctx.progress)
    if report.generated:
        path.with_name("generation.json").write_text(json.dumps(
            {"generated": report.generated, "seconds": report.seconds, "per_minute": report.premises_per_minute()}))
    return [GeneratedData(name=GENERATED, kind="nli_generated", path=path)]


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    gen = project_module(HERE / "generation.py")
    losses = project_module(HERE / "guided_loss.py")
    human = _premise_triplets(cfg, data)
    generated = ctx.generated_data(GENERATED)  # gated by the platform; its sha256 is in this run's cache key
    rows = generated.rows()
    curated = gen.curate(rows, cfg.curate.positive_min, cfg.curate.negative_max, cfg.curate.require_gap,
                         cfg.curate.min_margin)
    if len(curated) < cfg.curate.min_rows:
        raise GeneratedDataError(f"curation kept {len(curated)} of {len(rows)} generated triplets, fewer than "
                                 f"curate.min_rows={cfg.curate.min_rows}; lower curate.positive_min or raise "
                                 f"curate.negative_max, or generate more premises")
    speed_file = Path(generated.path).with_name("generation.json")
    speed = json.loads(speed_file.read_text()) if speed_file.is_file() else {}
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
            loss = losses.GuidedMultipleNegativesLoss(model, guide, cfg.train.phi, cfg.train.scale)
            result = fit(model, triplet_dataset(sets[arm], steps_rows, cfg.seed), loss,
                         cfg.train.settings(done.parent / "checkpoints", cfg.seed, ctx.progress))
            metrics.update({f"{arm}_{k}": v for k, v in result.metrics().items()})
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
