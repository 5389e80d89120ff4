"""Pixel-Linguist on a CPU: sentences rendered to pictures, a vision encoder trained to embed them, and the paper's
robustness claim measured against a subword model on the same noisy text.

Xiao et al., "Pixel Sentence Representation Learning" (arXiv 2402.08183), after PIXEL (Rust et al., ICLR 2023,
arXiv 2207.06991): a sentence is drawn as an image and a vision encoder learns its semantics; small character-level
perturbations (a typo, a swap, a look-alike letter) change a few pixels rather than the subword sequence, so the
embedding should move less than a tokenizer-based model's. A `TrainedMethod` (paperline.project.interface):

- `train`: the student (pixel_student.py: EfficientNet-Lite0 with ImageNet weights, a linear projection to 384-d)
  reads `paperline.ml.text_render`'s 160x160 pictures. Stage 1 distils all-MiniLM-L6-v2 (the teacher, the card's
  base model) onto it: 1 - cos(student, teacher) on STS-B train and SNLI dev+test sentences (deduplicated, none of
  the scored STS-B splits; the teacher's embeddings computed once and kept). Stage 2 (optional, the paper's
  supervised "reasoning alignment"): symmetric in-batch InfoNCE on SNLI (premise, entailed hypothesis) pairs,
  temperature 0.05 as the reference. The loop is training.py's (checkpointed, resumable).
- `evaluate`: STS-B Spearman x100 (cosine) of the student and of the teacher on the same rows (`baseline_`), then
  the test split again under each noise kind of `paperline.ml.char_noise` (typos, swaps, lookalikes; seeded: the
  same noisy text for both models), with the drop (clean - noisy) for each model and the difference of the drops
  (`robustness_gain_<kind>`: > 0 when the pixel model loses less). After a stage 2, the stage-1 student is scored
  too (`distill_` names).

The registered model is the final student as an MLflow pyfunc (pyfunc_model.py): a list of sentences -> their
L2-normalised embeddings [n, 384]; it renders them itself, with the font file saved beside its weights.

References:
    - Xiao et al., "Pixel Sentence Representation Learning", arXiv 2402.08183; reference implementation
      gowitheflow-1998/Pixel-Linguist (PIXELTrainerForContrastive in src/pixel/trainer.py)
    - Rust et al., "Language Modelling with Pixels", ICLR 2023, arXiv 2207.06991

Inputs (data kinds):
    `scored_pairs` (STS-B: train sentences to distil on, dev and test to score) and `nli_pairs` (SNLI dev+test:
    sentences to distil on, entailment pairs for stage 2).

Example:
    paperline run pixel_linguist --config smoke
    paperline run pixel_linguist train.contrastive.steps=0 evaluate.noise_rate=0.2
    .venv/bin/python projects/pixel_linguist/method.py --config smoke      # without Prefect or MLflow
"""

from __future__ import annotations

if __name__ == "__main__":  # train + evaluate without Prefect or MLflow (paperline.project.local_run)
    from paperline.project.local_run import main_file

    main_file(__file__)

import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from paperline.core.config import ProjectConfig, StrictModel
from paperline.ml.char_noise import KINDS, changed_fraction
from paperline.project.interface import Evaluation, ProjectData, PyfuncSpec, RunContext, TrainedModel
from paperline.project.metrics import spearman_name, with_prefix
from paperline.project.sections import SENTENCES_EXAMPLE, EvaluateSection, pyfunc_spec

from . import pixel_student as px
from . import sentences as S
from . import training as loop

HERE = Path(__file__).resolve().parent
NoiseKind = Literal["typos", "swaps", "lookalikes"]


# ---- config ------------------------------------------------------------------------------------------------


class Student(StrictModel):
    frozen_blocks: int = Field(3, ge=0, le=16)  # stem + the first N MBConv blocks keep their ImageNet weights
    dim: int = Field(384, ge=1)  # the projection's output: the teacher's dimension (all-MiniLM-L6-v2: 384)
    device: str = "auto"  # auto: CUDA, then MPS, then the CPU


class Distill(StrictModel):
    steps: int = Field(400, ge=0)  # 0 skips stage 1: stage 2 starts from ImageNet and a new projection
    batch_size: int = Field(32, ge=2)
    learning_rate: float = Field(1.5e-3, gt=0)  # the encoder's trainable blocks
    head_learning_rate: float = Field(1.5e-3, gt=0)  # the new projection
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    loss: Literal["cosine", "mse"] = "cosine"
    # cap on distillation sentences (after the seeded shuffle); the teacher embeds only those the steps reach
    max_sentences: int | None = Field(None, ge=2)
    teacher_batch_size: int = Field(64, ge=1)
    checkpoint_every: int = Field(100, ge=1)


class Contrastive(StrictModel):
    steps: int = Field(200, ge=0)  # 0 skips stage 2: the distilled student is the model
    batch_size: int = Field(32, ge=2)  # pairs per step: 2x pictures, batch_size - 1 in-batch negatives
    learning_rate: float = Field(3e-4, gt=0)
    head_learning_rate: float = Field(3e-4, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    temperature: float = Field(0.05, gt=0)  # the reference's
    max_pairs: int | None = Field(None, ge=2)
    checkpoint_every: int = Field(50, ge=1)


class Train(StrictModel):
    sts_dataset: str = "stsb"  # its train split's sentences are distilled on
    nli_dataset: str = "snli"  # its sentences are distilled on; its entailment pairs feed stage 2
    nli_splits: list[str] = ["dev", "test"]  # SNLI's train split is not available here
    distill: Distill = Distill()
    contrastive: Contrastive = Contrastive()

    @model_validator(mode="after")
    def _a_stage(self):
        if not self.distill.steps and not self.contrastive.steps:
            raise ValueError("train.distill.steps and train.contrastive.steps are both 0: nothing would train")
        return self


class Evaluate(EvaluateSection):
    noise_kinds: list[NoiseKind] = Field(default_factory=lambda: list(KINDS))
    noise_rate: float = Field(0.1, gt=0, le=1)  # fraction of the eligible characters changed
    noise_seed: int = 0
    noise_split: str = "test"
    score_distilled: bool = True  # after a stage 2, score the stage-1 student too (`distill_` names)
    # baseline (EvaluateSection): the teacher, all-MiniLM-L6-v2, on the same rows and the same noisy text


class Config(ProjectConfig):
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None leaves torch's default
    student: Student = Student()
    train: Train = Train()
    evaluate: Evaluate = Evaluate()

    def arms(self) -> list[str]:
        """Metric prefixes: the model (""), the teacher, and the stage-1 student when a stage 2 follows it."""
        e = self.evaluate
        t = self.train
        distilled = ["distill"] if t.distill.steps and t.contrastive.steps and e.score_distilled else []
        return ["", *(["baseline"] if e.baseline else []), *distilled]

    def metric_names(self) -> set[str]:
        e = self.evaluate
        names = set()
        for prefix in self.arms():
            names |= {spearman_name(e.dataset, split, prefix) for split in e.splits}
            noisy = spearman_name(e.dataset, e.noise_split, prefix)
            names |= {f"{noisy}_{what}_{kind}" for kind in e.noise_kinds for what in ("noise", "drop")}
        if e.baseline:
            names |= {f"robustness_gain_{kind}" for kind in e.noise_kinds}
        return names


def threads(cfg: Config) -> None:
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)


# ---- train ---------------------------------------------------------------------------------------------------


def held_out(cfg: Config, data: ProjectData) -> set[str]:
    """Every sentence of the scored splits, uncapped: no stage trains on them."""
    e = cfg.evaluate
    return S.held_out_sentences({split: data.read(e.dataset, split) for split in {*e.splits, e.noise_split}})


def serving_spec(folder: Path) -> PyfuncSpec:
    return pyfunc_spec(HERE / "pyfunc_model.py", {"student": Path(folder)},
                       ["torch", "numpy", "pillow", "safetensors"], code_paths=[HERE / "pixel_student.py"],
                       metadata={"model_type": "pixel-sentence-encoder",
                                 "input": "list of sentences (rendered to 160x160 pictures by the model)",
                                 "output": "float32 [n, 384] L2-normalised embeddings; cosine = dot product"},
                       input_example=SENTENCES_EXAMPLE)


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Stage 1 (distillation onto the teacher), then stage 2 (NLI contrastive); either is skipped at 0 steps. A
    finished stage's student is kept on disk, so a killed job resumes where it was."""
    import torch

    from paperline.ml.image_encoder import pixels_to_tensor
    from paperline.ml.training import select_device

    threads(cfg)
    t, d, c = cfg.train, cfg.train.distill, cfg.train.contrastive
    out = ctx.workdir / "pixel_linguist"
    device = select_device(cfg.student.device)
    held = held_out(cfg, data)
    nli_rows = [r for split in t.nli_splits for r in data.read(t.nli_dataset, split)]
    renderer = px.default_renderer()
    student = None
    metrics: dict[str, float] = {}
    notes = {"device": device, "stages": ", ".join(name for name, steps in (("distill", d.steps),
                                                                             ("contrastive", c.steps)) if steps)}
    outputs: dict[str, Path] = {}

    def pictures(texts: list[str]):
        return pixels_to_tensor(renderer.render_batch(texts)).to(device)

    def stage(name: str, steps: int, s, batch_loss, n_examples: int) -> Path:
        """Train `student` through one stage unless its saved student exists; that student's folder."""
        nonlocal student, renderer
        folder = out / name / "student"
        if (folder / px.CONFIG).is_file():
            student, renderer = px.load_student(folder, device)
            return folder
        settings = loop.LoopSettings(steps=steps, batch_size=s.batch_size, learning_rate=s.learning_rate,
                                     head_learning_rate=s.head_learning_rate, warmup_ratio=s.warmup_ratio,
                                     checkpoint_every=s.checkpoint_every, seed=cfg.seed, progress=ctx.progress)
        metrics.update(with_prefix(loop.train(student, batch_loss, n_examples, settings, out / name, name), name))
        return px.save_student(student, renderer, folder)

    student = px.new_student(cfg.student.dim, cfg.student.frozen_blocks, cfg.seed).to(device)
    if d.steps:  # stage 1: distillation onto the teacher's embeddings of the same sentences
        cap = min(d.max_sentences or d.steps * d.batch_size, d.steps * d.batch_size)  # only what the steps reach
        sentences = S.distill_sentences(data.read(t.sts_dataset, "train"), nli_rows, held, cfg.seed, cap)
        began = time.perf_counter()
        teacher, listing = S.teacher_embeddings(cfg.base_model, sentences, out / "teacher", d.teacher_batch_size,
                                                ctx.progress)
        if teacher.shape[1] != cfg.student.dim:
            raise ValueError(f"student.dim is {cfg.student.dim} but the teacher {cfg.base_model} embeds in "
                             f"{teacher.shape[1]} dimensions; set student.dim={teacher.shape[1]}")
        metrics.update({"distill_sentences": float(len(sentences)),
                        "teacher_seconds": round(time.perf_counter() - began, 1)})
        notes["teacher_sentences_sha256"] = S.digest(sentences)
        outputs["teacher_sentences"] = listing

        def distill_batch(indices: list[int]):
            target = torch.from_numpy(teacher[indices]).to(device)
            return loop.distill_loss(student(pictures([sentences[i] for i in indices])), target, d.loss)

        outputs["distill"] = stage("distill", d.steps, d, distill_batch, len(sentences))
    if c.steps:  # stage 2: in-batch contrastive on entailment pairs
        pairs = S.entailment_pairs(nli_rows, held, cfg.seed, c.max_pairs)

        def contrastive_batch(indices: list[int]):
            texts = [pairs[i][0] for i in indices] + [pairs[i][1] for i in indices]
            embeddings = student(pictures(texts))  # one forward pass: BatchNorm sees both sides
            return loop.info_nce(embeddings[:len(indices)], embeddings[len(indices):], c.temperature)

        outputs["contrastive"] = stage("contrastive", c.steps, c, contrastive_batch, len(pairs))
        metrics["contrastive_pairs"] = float(len(pairs))
    final = outputs["contrastive" if c.steps else "distill"]
    outputs["student"] = final
    return TrainedModel(path=final, flavor="pyfunc", serving=serving_spec(final), metrics=metrics,
                        outputs=outputs, notes=notes)


# ---- evaluate ------------------------------------------------------------------------------------------------


def cosine_spearman(embed, rows: list) -> tuple[float, list[float]]:
    """Spearman x100 of the cosine of each pair's embeddings against the gold scores, each distinct sentence
    embedded once by `embed(list[str]) -> (n, d)` normalised; and the cosines."""
    from paperline.ml.cross_encoder import spearman

    unique = sorted({s for r in rows for s in (r.sentence1, r.sentence2)})
    index = {s: i for i, s in enumerate(unique)}
    vectors = np.asarray(embed(unique), dtype=np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosines = (vectors[[index[r.sentence1] for r in rows]] * vectors[[index[r.sentence2] for r in rows]]).sum(1)
    return spearman(cosines.tolist(), [r.score for r in rows]), cosines.tolist()


def noise_example(renderer, text: str, kinds: list[str], rate: float, seed: int, path: Path) -> Path:
    """One sentence as the pixel model sees it, clean and under each noise kind, stacked into one PNG."""
    from PIL import Image

    from paperline.ml.char_noise import noisy

    texts = [text] + [noisy(text, kind, rate, seed) for kind in kinds]
    pictures = renderer.render_batch(texts)
    Image.fromarray(np.concatenate(list(pictures), axis=1)).save(path)
    return path


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """STS-B Spearman x100 of the student and the teacher, clean and under each kind of character noise."""
    from paperline.ml.models import load_sentence_transformer
    from paperline.ml.training import select_device

    threads(cfg)
    e = cfg.evaluate
    device = select_device(cfg.student.device)
    splits = e.rows(data)
    if e.noise_split not in splits:
        splits[e.noise_split] = data.read(e.dataset, e.noise_split, e.max_rows)
    clean = splits[e.noise_split]
    conditions = dict(splits)  # the clean splits first: each noise drop is measured against its clean score
    conditions |= {f"noise_{kind}": S.noisy_rows(clean, kind, e.noise_rate, e.noise_seed) for kind in e.noise_kinds}

    def pixel_arm(output: str):
        def build():
            student, renderer = px.load_student(model.output(output), device)
            return lambda texts: px.encode(student, renderer, texts, e.batch_size)
        return build

    def text_arm():
        teacher = load_sentence_transformer(cfg.base_model)
        return lambda texts: teacher.encode(texts, batch_size=e.batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False)

    builders = {"": pixel_arm("student"), "baseline": text_arm, "distill": pixel_arm("distill")}
    metrics: dict[str, float] = {}
    predictions: dict[str, dict[str, list[float]]] = {}
    table: dict[str, list] = {"model": [], "condition": [], "spearman": [], "drop": [], "retained_pct": []}
    for prefix in cfg.arms():
        embed = builders[prefix]()
        for condition, rows in conditions.items():
            began = time.perf_counter()
            score, cosines = cosine_spearman(embed, rows)
            seconds = time.perf_counter() - began
            if condition in splits:
                metrics[spearman_name(e.dataset, condition, prefix)] = score
                predictions[spearman_name(e.dataset, condition, prefix).removesuffix("_spearman")] = {
                    "gold": [float(r.score) for r in rows], "predicted": [round(c, 6) for c in cosines]}
                if condition == e.noise_split:
                    n = len({s for r in rows for s in (r.sentence1, r.sentence2)})
                    metrics[f"{prefix or 'pixel'}_sentences_per_s"] = round(n / seconds, 1)
                drop, retained = 0.0, 100.0
            else:
                base = spearman_name(e.dataset, e.noise_split, prefix)
                kind = condition.removeprefix("noise_")
                metrics[f"{base}_noise_{kind}"] = score
                drop = metrics[f"{base}_drop_{kind}"] = metrics[base] - score
                retained = 100.0 * score / metrics[base] if metrics[base] else float("nan")
            table["model"].append(prefix or "pixel"), table["condition"].append(condition)
            table["spearman"].append(round(score, 2)), table["drop"].append(round(drop, 2))
            table["retained_pct"].append(round(retained, 1))
    for kind in e.noise_kinds:
        pairs = [changed_fraction(a, b, kind) for r, n in zip(clean, conditions[f"noise_{kind}"])
                 for a, b in ((r.sentence1, n.sentence1), (r.sentence2, n.sentence2))]
        metrics[f"noise_changed_fraction_{kind}"] = sum(c for c, _ in pairs) / max(1, sum(t for _, t in pairs))
        if e.baseline:  # > 0: the pixel model loses less than the teacher on the same noisy text
            drop = {prefix: metrics[f"{spearman_name(e.dataset, e.noise_split, prefix)}_drop_{kind}"]
                    for prefix in ("", "baseline")}
            metrics[f"robustness_gain_{kind}"] = drop["baseline"] - drop[""]
    renderer = px.load_renderer(model.output("student"))
    example = noise_example(renderer, clean[0].sentence1, e.noise_kinds, e.noise_rate, e.noise_seed,
                            ctx.workdir / "noise_example.png")
    return Evaluation(metrics=metrics, tables={"robustness": table}, predictions=predictions,
                      artifacts={"noise_example.png": example},
                      tags={"pixel_linguist.noise": f"{', '.join(e.noise_kinds)} at rate {e.noise_rate:g}, seed "
                                                    f"{e.noise_seed}, on {e.dataset} {e.noise_split}",
                            "pixel_linguist.renderer": renderer.fingerprint})
