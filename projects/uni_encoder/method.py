"""Uni-Encoder: response selection with the context and all K candidates in one pass (Song et al., ACL Findings 2023).

A `TrainedMethod` (paperline.project.interface). `train` builds the examples from `dialogues` (context = the
turns before one turn, positive = that turn, 9 negatives from other conversations, seeded), writes the dev/test
candidate sets as a derived TSV, and trains three arms from the same MiniLM start for the same steps: `diag`
(bi-encoder), `square` (cross-encoder, one pass per pair) and `arrow` (Uni-Encoder). `evaluate` scores each arm
on the fixed candidate sets: R10@1, R10@2, MRR (x100) and candidates scored per second on this machine. The
arrow model is the registered one, served as a pyfunc: [context, candidate_1, ..., candidate_K] -> K scores.
The attention layouts live in uni_encoder.py (shipped with the pyfunc), examples and their config sections
(`Examples`, `Evaluate`) in examples.py, the loop in training.py.

References:
    - Song et al., "Uni-Encoder: A Fast and Accurate Response Selection Paradigm for Generation-Based Dialogue
      Systems", Findings of ACL 2023 (arXiv 2106.01263); reference implementation dll-wu/Uni-Encoder.

Inputs (data kinds):
    `dialogues` (train for training examples, dev and test for the candidate sets).

Example:
    paperline run uni_encoder --config smoke
    .venv/bin/python projects/uni_encoder/method.py --config smoke      # without Prefect or MLflow
"""

from __future__ import annotations

if __name__ == "__main__":  # train + evaluate without Prefect or MLflow (paperline.project.local_run)
    from paperline.project.local_run import main_file

    main_file(__file__)

import time
from typing import Literal

from pydantic import Field, model_validator

from paperline.core.config import ProjectConfig, StrictModel
from paperline.project.interface import Evaluation, ProjectData, RunContext, TrainedModel
from paperline.project.metrics import metric_name, prefixed, with_prefix

from . import examples
from . import training as loop
from . import uni_encoder as uni
from .examples import Evaluate, Examples
from .scorers import layout, serving_spec, start, threads, tokenizer_of

ARMS = ("diag", "square", "arrow")
METRICS = ("r10_at_1", "r10_at_2", "mrr")
HEADLINE = "arrow"
DATASET = "dialogues"


# ---- config ------------------------------------------------------------------------------------------------


class Train(StrictModel):
    arms: list[Literal["diag", "square", "arrow"]] = Field(default_factory=lambda: list(ARMS))
    steps: int = Field(60, ge=1)  # optimizer steps per arm; each step takes batch_size fresh train contexts
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    head_learning_rate: float = Field(1e-3, gt=0)  # the new linear head of square and arrow
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    checkpoint_every: int = Field(20, ge=1)
    logit_scale: float = Field(20.0, gt=0)  # diag: cosine x scale

    @model_validator(mode="after")
    def _headline(self):
        if HEADLINE not in self.arms:
            raise ValueError(f"train.arms must include '{HEADLINE}', the method's own arm (the primary metric)")
        return self


class Config(ProjectConfig):
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None leaves torch's default
    examples: Examples = Examples()
    train: Train = Train()
    evaluate: Evaluate = Evaluate()

    def metric_names(self) -> set[str]:
        names = {metric_name(split, m) for split in self.evaluate.splits for m in METRICS}
        prefixes = ["", *self.train.arms, *(["baseline_diag"] if self.evaluate.baseline else [])]
        return prefixed(names, prefixes) | prefixed(["candidates_per_s"], self.train.arms)


# ---- the interface -------------------------------------------------------------------------------------------


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Every arm from the same MiniLM start, the same examples in the same order, the same steps (Song et al.
    2023 compare bi-, poly-, cross- and Uni-Encoder trained on the same data)."""
    threads(cfg)
    out = ctx.workdir / "uni_encoder"
    out.mkdir(parents=True, exist_ok=True)
    e, t = cfg.examples, cfg.train
    tokenizer = tokenizer_of(cfg)

    # Held-out candidate sets first: fixed by the seed, versioned by their file's sha256.
    candidates_path = out / "candidate_sets.tsv"
    sha = examples.write_held_out(candidates_path, cfg, lambda split: data.read(DATASET, split))

    convs = examples.conversations(data.read(DATASET, "train"))
    train_examples = examples.sample_examples(convs, t.steps * t.batch_size, e.candidates, cfg.seed)
    cache: dict = {}

    def batch_of(indices: list[int]):
        tokens = [uni.tokenize_example(tokenizer, layout(cfg, HEADLINE), *examples.texts(convs, train_examples[i],
                                                                                          e.max_context_turns), cache)
                  for i in indices]
        return ([c for c, _ in tokens], [k for _, k in tokens], [train_examples[i].label for i in indices],
                tokenizer.pad_token_id)

    metrics: dict[str, float] = {"train_examples": float(len(train_examples))}
    outputs = {"candidate_sets": candidates_path}
    settings = loop.LoopSettings(steps=t.steps, batch_size=t.batch_size, learning_rate=t.learning_rate,
                                 head_learning_rate=t.head_learning_rate, warmup_ratio=t.warmup_ratio,
                                 checkpoint_every=t.checkpoint_every, seed=cfg.seed, progress=ctx.progress)
    for arm in t.arms:
        scorer = start(cfg, arm)
        result = loop.train(scorer, batch_of, len(train_examples), settings, out / arm, arm)
        metrics.update(with_prefix(result, arm))
        outputs[arm] = uni.save(scorer, tokenizer, out / arm / "model")
    return TrainedModel(path=outputs[HEADLINE], flavor="pyfunc", serving=serving_spec(outputs[HEADLINE]),
                        metrics=metrics, outputs=outputs,
                        notes={"candidate_sets_sha256": sha, "arms": ",".join(t.arms),
                               "train_contexts": str(len(train_examples))})


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """R10@1, R10@2, MRR (x100) of every arm on the fixed dev/test candidate sets, and candidates scored per
    second (test): Uni-Encoder's claim is cross-encoder quality at a fraction of the cost."""
    threads(cfg)
    candidates_path = model.output("candidate_sets")
    from paperline.data.derived import sha256_file

    requests = examples.held_out_requests(candidates_path, cfg, lambda split: data.read(DATASET, split))
    scorers = {arm: (lambda arm=arm: uni.load(model.output(arm))) for arm in cfg.train.arms}
    if cfg.evaluate.baseline:
        scorers["baseline_diag"] = lambda: (start(cfg, "diag").eval(), tokenizer_of(cfg))
    metrics: dict[str, float] = {}
    table: dict[str, list] = {"arm": [], "split": [], **{m: [] for m in METRICS}, "candidates_per_s": []}
    for name, build in scorers.items():
        scorer, tokenizer = build()
        for split, (texts, labels) in requests.items():
            began = time.perf_counter()
            scores = uni.score(scorer, tokenizer, texts, cfg.evaluate.batch_size)
            seconds = time.perf_counter() - began
            per_s = sum(len(c) for _, c in texts) / seconds
            ranks = examples.ranking_metrics(scores, labels)
            metrics.update(with_prefix(with_prefix(ranks, split), name))
            if name == HEADLINE:
                metrics.update(with_prefix(ranks, split))
            if split == cfg.evaluate.splits[-1] and name in cfg.train.arms:
                metrics[f"{name}_candidates_per_s"] = round(per_s, 1)
            table["arm"].append(name), table["split"].append(split), table["candidates_per_s"].append(round(per_s, 1))
            for m in METRICS:
                table[m].append(round(ranks[m], 2))
    sha = sha256_file(candidates_path)
    return Evaluation(metrics=metrics, tables={"arms": table}, artifacts={"candidate_sets.tsv": candidates_path},
                      tags={"uni_encoder.candidate_sets_sha256": sha,
                            "uni_encoder.candidate_sets": f"{', '.join(cfg.evaluate.splits)}: "
                                                          f"{cfg.examples.candidates} candidates, seed {cfg.seed}"})

