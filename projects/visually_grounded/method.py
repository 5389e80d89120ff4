"""Visually grounded sentence representations: MiniLM trained to meet EfficientNet-Lite0 pictures in one space,
with and without STS alongside (Kiela et al., NAACL 2018; Bordes et al., EMNLP 2019).

A `TrainedMethod` (paperline.project.interface). `train` decodes the captioned pictures once, caches the frozen
part of the image tower's output for each (towers.py), and trains each arm of `train.arms` from the same MiniLM
and ImageNet start:

- `text_tower`: the caption side only learns; the image tower is frozen EfficientNet-Lite0 features with a
  trained linear projection (the seed paper's setting: a sentence encoder trained to meet fixed image features);
- `grounded`: both towers learn (MiniLM, the image tower's last blocks, both projections), CLIP's symmetric
  InfoNCE with a learned temperature on caption-picture pairs;
- `grounded_sts`: `grounded`, and every other step a CoSENT step on STS-B train pairs for the text side (the
  paper's point: grounding should help, or at least not hurt, sentence similarity);
- `sts_only`: the control for `grounded_sts`: the same STS steps on the same pairs, no pictures.

The untrained MiniLM (`text_only`) is scored beside them. `evaluate` measures, per arm: caption->image and
image->caption recall@1/5/10 on the held-out pictures (scoring.py states how repeated captions count), STS-B test
and the STS 2012-2016 suite (cosine in the shared space; STS-B train pairs left out of the suite), and draws each
image arm's top-5 pictures for a few test captions (a PNG the run logs). The `train.serve` arm is registered as a
pyfunc: rows of `caption` (text) or `image` (a base64 PNG) -> L2-normalised embeddings in the shared space.

References:
    - Kiela, Conneau, Jabri, Nickel, "Learning Visually Grounded Sentence Representations", NAACL 2018
      (arXiv 1707.06320).
    - Bordes, Zablocki, Soulier, Piwowarski, Gallinari, "Incorporating Visual Semantics into Sentence
      Representations within a Grounded Space", EMNLP-IJCNLP 2019 (arXiv 2002.02734).
    - Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (CLIP), ICML 2021:
      the symmetric InfoNCE and learned temperature.

Inputs (data kinds):
    `captioned_images` (train to train, test, or the splits of `evaluate.splits`, to score), `scored_pairs`
    (STS-B: train for the STS steps, test to score; STS 2012-2016 test to score).

Example:
    paperline run visually_grounded --config smoke
    .venv/bin/python projects/visually_grounded/method.py --config smoke      # without Prefect or MLflow
"""

from __future__ import annotations

if __name__ == "__main__":  # train + evaluate without Prefect or MLflow (paperline.project.local_run)
    from paperline.project.local_run import main_file

    main_file(__file__)

import gc
import random
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from paperline.core.config import ProjectConfig, StrictModel
from paperline.project.interface import Evaluation, ProjectData, PyfuncSpec, RunContext, TrainedModel
from paperline.project.metrics import metric_name, prefixed, with_prefix
from paperline.project.sections import pyfunc_spec

from . import scoring
from . import training as loop

HERE = Path(__file__).resolve().parent
IMAGES, STSB, SUITE = "captioned_images", "stsb", "sts12_16"
ARMS = ("text_tower", "grounded", "grounded_sts", "sts_only")
IMAGE_ARMS = ("text_tower", "grounded", "grounded_sts")
BASELINE = "text_only"  # the untrained MiniLM, scored on STS only (it has no picture side)
STS_METRICS = ("stsb_test_spearman",)
ENCODER_METRIC = "stsb_test_spearman_encoder"  # MiniLM's own pooled output, before the shared-space projection


# ---- config ------------------------------------------------------------------------------------------------


class Images(StrictModel):
    size: int = Field(160, ge=32)  # the data set's pictures are 160 x 160: no resampling
    # stem + this many MBConv blocks keep their ImageNet weights and are cached once per picture; the rest of the
    # tower trains in the grounded arms. 11 = up to stage 5 (112 x 10 x 10 at 160 px): the trained part is the
    # last 5 blocks and the 1280-d head, 3.2M of the network's 3.4M weights (classifier left out).
    frozen_blocks: int = Field(11, ge=0, le=16)
    # train pictures per caption text: "gramastar" names 1,375 stars, "Lemon SVG theme" 407 icons; more copies of
    # one caption teach nothing and fill batches with false negatives. Chosen by a seeded draw.
    max_per_caption: int | None = Field(10, ge=1)
    max_train_rows: int | None = Field(None, ge=2)  # smoke runs
    batch_size: int = Field(64, ge=1)  # pictures per forward pass when caching and encoding


class Space(StrictModel):
    dim: int = Field(384, ge=2)  # MiniLM's width: the text projection starts as the identity
    temperature: float = Field(0.07, gt=0)  # CLIP's initial temperature; learned


class Train(StrictModel):
    arms: list[Literal["text_tower", "grounded", "grounded_sts", "sts_only"]] = Field(
        default_factory=lambda: list(ARMS), min_length=1)
    serve: Literal["text_tower", "grounded", "grounded_sts"] = "grounded_sts"  # registered; the primary metric's
    epochs: float = Field(2.0, gt=0)  # over the (capped) caption rows; the STS arms take as many STS steps
    max_steps: int | None = Field(None, ge=1)  # caps the caption (and STS) steps, for smoke runs
    batch_size: int = Field(64, ge=2)  # caption-picture rows per contrastive step
    sts_batch_size: int = Field(32, ge=2)  # STS-B pairs per STS step
    max_sts_rows: int | None = Field(None, ge=2)  # smoke runs
    learning_rate: float = Field(2e-5, gt=0)  # MiniLM (SBERT's fine-tuning rate)
    image_learning_rate: float = Field(1e-4, gt=0)  # the image tower's trained blocks
    head_learning_rate: float = Field(1e-3, gt=0)  # projections and temperature, freshly initialised
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_text_tokens: int = Field(64, ge=8)  # captions are 1-74 words (median 2); STS-B sentences fit
    checkpoint_every: int = Field(50, ge=1)

    @model_validator(mode="after")
    def _served_arm_trains(self):
        if self.serve not in self.arms:
            raise ValueError(f"train.serve '{self.serve}' must be one of train.arms ({', '.join(self.arms)})")
        return self


class Evaluate(StrictModel):
    splits: list[str] = ["test"]  # captioned_images splits scored for retrieval
    max_rows: int | None = Field(None, ge=2)  # first rows of each split (smoke)
    sts: bool = True  # STS-B test
    suite: bool = True  # STS 2012-2016 (STS-B train pairs left out)
    max_sts_rows: int | None = Field(None, ge=3)  # first rows of STS-B test and of each suite year (smoke)
    baseline: bool = True  # score the untrained MiniLM (`text_only`) on STS
    examples: int = Field(6, ge=0)  # test captions in the retrieval picture
    batch_size: int = Field(128, ge=1)


class Config(ProjectConfig):
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None leaves torch's default
    images: Images = Images()
    space: Space = Space()
    train: Train = Train()
    evaluate: Evaluate = Evaluate()

    def sts_names(self) -> set[str]:
        return ({*STS_METRICS} if self.evaluate.sts else set()) | (set(scoring.SUITE_METRICS) if self.evaluate.suite
                                                                   else set())

    def retrieval_names(self) -> set[str]:
        return {metric_name(split, m) for split in self.evaluate.splits for m in scoring.RETRIEVAL_METRICS}

    def metric_names(self) -> set[str]:
        sts, retrieval = self.sts_names(), self.retrieval_names()
        encoder = {ENCODER_METRIC} if self.evaluate.sts else set()
        names = retrieval | sts | encoder  # the served arm's, unprefixed
        for arm in self.train.arms:
            names |= prefixed(sts | encoder | (retrieval if arm in IMAGE_ARMS else set()), [arm])
        if self.evaluate.baseline:
            names |= prefixed(sts, [BASELINE])
        return names


def threads(cfg: Config) -> None:
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)


# ---- data --------------------------------------------------------------------------------------------------


def image_folder(data: ProjectData) -> Path:
    """The folder a row's picture path is relative to (the dataset's, at its DVC version)."""
    if IMAGES not in data.refs:
        raise ValueError(f"'{IMAGES}' must be read from its dataset folder (ProjectData refs), not given as rows")
    return data.refs[IMAGES].path


def train_rows(cfg: Config, data: ProjectData) -> list:
    """The train split, at most `max_per_caption` pictures per caption text (a seeded draw), file order kept."""
    rows = data.read(IMAGES, "train")
    cap = cfg.images.max_per_caption
    if cap:
        groups: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(row.caption, []).append(i)
        rng = random.Random(cfg.seed)
        keep = sorted(i for members in groups.values()
                      for i in (members if len(members) <= cap else rng.sample(members, cap)))
        rows = [rows[i] for i in keep]
    if cfg.images.max_train_rows:
        rows = random.Random(cfg.seed).sample(rows, min(cfg.images.max_train_rows, len(rows)))
    return rows


def load_pictures(rows: list, folder: Path):
    from PIL import Image

    pictures = []
    for row in rows:
        with Image.open(row.path(folder)) as picture:
            pictures.append(picture.convert("RGB"))
    return pictures


def pixels_of(rows: list, folder: Path, size: int, batch_size: int = 256):
    """(N, 3, size, size) float pictures in [-1, 1], decoded once."""
    import torch

    from paperline.ml.image_encoder import images_to_tensor

    chunks = [images_to_tensor(load_pictures(rows[i:i + batch_size], folder), size)
              for i in range(0, len(rows), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, 3, size, size)


def cache_prefix(cfg: Config, rows: list, folder: Path, progress: bool):
    """The frozen part of the image tower on every train picture, float16 (22 KB a picture at the defaults),
    and the frozen tower's pooled features (for `text_tower`). ImageNet weights, identical for every arm."""
    import torch

    from paperline.ml.image_encoder import images_to_tensor, load_efficientnet_lite0
    from paperline.ml.progress import bar

    from .towers import image_prefix, image_suffix

    net, blocks = load_efficientnet_lite0(pretrained=True), cfg.images.frozen_blocks
    maps, pooled = [], []
    step = cfg.images.batch_size
    with torch.no_grad(), bar(len(rows), "caching pictures", unit="picture", enabled=progress) as shown:
        for i in range(0, len(rows), step):
            pixels = images_to_tensor(load_pictures(rows[i:i + step], folder), cfg.images.size)
            prefix = image_prefix(net, blocks, pixels)
            maps.append(prefix.half())
            pooled.append(image_suffix(net, blocks, prefix))
            shown.update(len(pixels))
    return torch.cat(maps), torch.cat(pooled)


# ---- the interface -------------------------------------------------------------------------------------------


def steps_of(cfg: Config, n_rows: int) -> int:
    t = cfg.train
    per_epoch = max(1, n_rows // t.batch_size)
    steps = max(1, round(t.epochs * per_epoch))
    return min(steps, t.max_steps) if t.max_steps else steps


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Every arm from the same MiniLM and ImageNet start, the same caption batches and STS batches in the same
    order (Kiela et al. compare grounded and text-only encoders trained alike)."""
    import torch
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    from . import towers

    threads(cfg)
    out = ctx.workdir / "visually_grounded"
    out.mkdir(parents=True, exist_ok=True)
    t, folder = cfg.train, image_folder(data)
    rows = train_rows(cfg, data)
    captions = [row.caption for row in rows]
    _, caption_ids = scoring.distinct(captions)
    caption_ids = torch.from_numpy(caption_ids)
    pairs = data.read(STSB, "train", t.max_sts_rows) if {"grounded_sts", "sts_only"} & set(t.arms) else []
    labels = torch.tensor([p.score / 5.0 for p in pairs], dtype=torch.float32)
    caption_steps = steps_of(cfg, len(rows))

    metrics: dict[str, float] = {"train_pictures": float(len(rows)), "train_distinct_captions":
                                 float(int(caption_ids.max()) + 1 if len(rows) else 0),
                                 "train_caption_steps": float(caption_steps)}
    outputs: dict[str, Path] = {}
    cache = None
    for arm in t.arms:
        done = out / arm / "model"
        if (done / towers.CONFIG).is_file():  # a finished arm of a killed job
            outputs[arm] = done
            continue
        if arm in IMAGE_ARMS and cache is None:
            began = time.perf_counter()
            cache = cache_prefix(cfg, rows, folder, ctx.progress)
            metrics["cache_seconds"] = round(time.perf_counter() - began, 1)
        maps, pooled = cache if cache is not None else (None, None)
        model = towers.new_encoder(cfg.base_model, cfg.space.dim, arm in IMAGE_ARMS, cfg.images.frozen_blocks,
                                   cfg.space.temperature, cfg.images.size, cfg.seed)
        image_trainable = arm in ("grounded", "grounded_sts")
        cosent = CoSENTLoss(model.text)

        def caption_step(batch: list[int], model=model, image_trainable=image_trainable, maps=maps, pooled=pooled):
            texts = model.project_texts(model.text_features([captions[i] for i in batch], t.max_text_tokens))
            index = torch.tensor(batch)
            features = model.image_suffix(maps[index].float()) if image_trainable else pooled[index]
            return loop.info_nce(texts, model.project_images(features), caption_ids[index], model.scale())

        def sts_step(batch: list[int], model=model, cosent=cosent):
            first = [pairs[i].sentence1 for i in batch]
            second = [pairs[i].sentence2 for i in batch]
            embedded = model.project_texts(model.text_features(first + second, t.max_text_tokens))
            return cosent.compute_loss_from_embeddings([embedded[:len(batch)], embedded[len(batch):]],
                                                       labels[torch.tensor(batch)])

        settings = loop.LoopSettings(
            caption_steps=caption_steps if arm in IMAGE_ARMS else 0,
            sts_steps=caption_steps if arm in ("grounded_sts", "sts_only") else 0,
            batch_size=t.batch_size, sts_batch_size=t.sts_batch_size, learning_rate=t.learning_rate,
            image_learning_rate=t.image_learning_rate, head_learning_rate=t.head_learning_rate,
            warmup_ratio=t.warmup_ratio, checkpoint_every=t.checkpoint_every, seed=cfg.seed, progress=ctx.progress)
        result = loop.train(model, settings, image_trainable, caption_step, sts_step, len(rows), len(pairs),
                            out / arm, arm)
        metrics.update(with_prefix(result, arm))
        outputs[arm] = towers.save(model, done)
        del model, cosent
        gc.collect()
    return TrainedModel(path=outputs[t.serve], flavor="pyfunc", serving=serving_spec(outputs[t.serve]),
                        metrics=metrics, outputs=outputs,
                        notes={"arms": ",".join(t.arms), "served_arm": t.serve,
                               "train_pictures": str(len(rows)), "caption_steps": str(caption_steps)})


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """Per arm: recall@1/5/10 both ways on each split of `evaluate.splits`, STS-B test and STS 2012-2016
    Spearman of the shared space (and STS-B of MiniLM's own output), and a picture of retrievals per image arm."""
    from . import towers

    threads(cfg)
    e = cfg.evaluate
    folder = image_folder(data)
    splits = {split: data.read(IMAGES, split, e.max_rows) for split in e.splits}
    pixels = {split: pixels_of(rows, folder, cfg.images.size) for split, rows in splits.items()}
    stsb_test = data.read(STSB, "test", e.max_sts_rows) if e.sts else []
    suite, removed = {}, {}
    if e.suite:
        trained = {scoring.pair_key(p.sentence1, p.sentence2) for p in data.read(STSB, "train")}
        suite, removed = scoring.suite_by_year(suite_rows(data), trained, e.max_sts_rows)
    sentences = sorted({s for p in [*stsb_test, *(r for rows in suite.values() for r in rows)]
                        for s in (p.sentence1, p.sentence2)})

    metrics: dict[str, float] = {}
    table: dict[str, list] = {"arm": [], "split": [], **{m: [] for m in scoring.RETRIEVAL_METRICS},
                              **{m: [] for m in (*STS_METRICS, ENCODER_METRIC, *scoring.SUITE_METRICS)}}
    artifacts: dict[str, Path] = {}

    def add_row(arm: str, split: str, values: dict[str, float]) -> None:
        table["arm"].append(arm), table["split"].append(split)
        for column in table:
            if column not in ("arm", "split"):
                table[column].append(round(values[column], 2) if column in values else None)

    for split, rows in splits.items():
        texts, ids = scoring.distinct([r.caption for r in rows])
        chance = scoring.chance_recall(len(texts), ids)
        metrics[metric_name("chance", split, "mean_recall")] = chance["mean_recall"]
        add_row("chance", split, chance)

    if e.baseline and sentences:
        from paperline.ml.models import load_sentence_transformer

        base = load_sentence_transformer(cfg.base_model)
        vectors = base.encode(sentences, batch_size=e.batch_size, normalize_embeddings=True, show_progress_bar=False)
        values = scoring.sts_scores(dict(zip(sentences, vectors)), stsb_test, suite)
        metrics.update(with_prefix(values, BASELINE))
        add_row(BASELINE, "-", values)
        del base
        gc.collect()

    for arm in cfg.train.arms:
        encoder = towers.load(model.output(arm))
        arm_metrics: dict[str, float] = {}
        if sentences:
            own, shared = encoder.encode_texts(sentences, e.batch_size)
            arm_metrics.update(scoring.sts_scores(dict(zip(sentences, shared)), stsb_test, suite))
            if stsb_test:
                arm_metrics[ENCODER_METRIC] = scoring.sts_scores(dict(zip(sentences, own)), stsb_test, {})[
                    "stsb_test_spearman"]
        sts_values = dict(arm_metrics)
        if arm in IMAGE_ARMS:
            for split, rows in splits.items():
                texts, ids = scoring.distinct([r.caption for r in rows])
                caption_vectors = encoder.encode_texts(texts, e.batch_size)[1]
                image_vectors = encoder.encode_pixels(pixels[split], cfg.images.batch_size)
                values = scoring.recall(caption_vectors, image_vectors, ids)
                arm_metrics.update(with_prefix(values, split))
                add_row(arm, split, {**values, **sts_values})
                if e.examples and split == e.splits[-1]:
                    name = f"retrievals_{arm}_{split}.png"
                    artifacts[name] = example_grid(arm, split, rows, texts, ids, caption_vectors, image_vectors,
                                                   folder, e.examples, cfg.seed, ctx.workdir / name)
        else:
            add_row(arm, "-", sts_values)
        metrics.update(with_prefix(arm_metrics, arm))
        if arm == cfg.train.serve:
            metrics.update(arm_metrics)
        del encoder
        gc.collect()
    tags = {"visually_grounded.served_arm": cfg.train.serve,
            "visually_grounded.recall_rule": "caption->image: a distinct caption hits when a top-k picture carries it; "
                                             "image->caption: over distinct captions, the picture's own text in top k"}
    if removed:
        tags["visually_grounded.suite_removed"] = ", ".join(f"{y} {n}" for y, n in removed.items()) + \
            " (STS-B train pairs, left out for every arm)"
    return Evaluation(metrics=metrics, tables={"arms": table}, artifacts=artifacts, tags=tags)


def suite_rows(data: ProjectData) -> list:
    """The STS 2012-2016 rows with their year (`source`), which the `scored_pairs` row type does not carry."""
    from dataclasses import dataclass

    from paperline.data.datasets import read_frame

    @dataclass(frozen=True)
    class SuiteRow:
        source: str
        sentence1: str
        sentence2: str
        score: float

    if SUITE not in data.refs:
        return []
    frame = read_frame(data.refs[SUITE].split_path("test"), "scored_pairs")
    return [SuiteRow(str(s), a, b, float(g)) for s, a, b, g in
            zip(frame["source"], frame["sentence1"], frame["sentence2"], frame["score"])]


def example_grid(arm: str, split: str, rows: list, texts: list[str], ids, caption_vectors, image_vectors,
                 folder: Path, count: int, seed: int, out: Path) -> Path:
    """`count` captions of the split (a seeded draw, taking the sources in turn: emoji, openclipart, tuxpaint)
    with their 5 nearest pictures."""
    import numpy as np

    by_source: dict[str, list[int]] = {}
    for row, caption_id in zip(rows, ids):
        members = by_source.setdefault(row.source or "-", [])
        if caption_id not in members:
            members.append(int(caption_id))
    rng = random.Random(seed)
    pools = [rng.sample(members, len(members)) for _, members in sorted(by_source.items())]
    chosen: list[int] = []
    while len(chosen) < min(count, len(texts)) and any(pools):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.append(pool.pop())
    top = np.argsort(-(caption_vectors[chosen] @ image_vectors.T), axis=1, kind="stable")[:, :5]
    retrieved = [[rows[j].path(folder) for j in picks] for picks in top]
    hits = [[int(ids[j]) == q for j in picks] for q, picks in zip(chosen, top)]
    return scoring.retrieval_grid(f"{arm}: top-5 {split} pictures per caption (green: carries the caption)",
                                  [texts[q] for q in chosen], retrieved, hits, out)


# ---- serving ----------------------------------------------------------------------------------------------------


def request_example() -> list[dict[str, str]]:
    """One caption and one picture (a drawn red disc, 64 x 64 PNG, base64): what a request looks like."""
    import base64
    import io

    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(picture).ellipse([8, 8, 56, 56], fill=(200, 30, 30))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return [{"caption": "a red apple"}, {"image": base64.b64encode(buffer.getvalue()).decode("ascii")}]


def serving_spec(folder: Path) -> PyfuncSpec:
    """The served arm as a pyfunc: models from code (pyfunc_model.py, towers.py), no pickles."""
    return pyfunc_spec(HERE / "pyfunc_model.py", {"encoder": Path(folder)},
                       ["torch", "transformers", "sentence-transformers", "safetensors", "pillow", "numpy",
                        "pydantic"],
                       code_paths=[HERE / "towers.py"],
                       metadata={"input": "rows of {caption: text} or {image: base64 PNG}, exactly one per row",
                                 "output": "one L2-normalised embedding per row in the shared caption-picture "
                                           "space (cosine = dot product)"},
                       input_example=request_example())
