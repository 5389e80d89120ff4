"""Token Prepending: training-free sentence embeddings from a decoder-only LM (PromptEOL + TP), as a pyfunc model.

- Fu et al., "Token Prepending: A Training-Free Approach for Eliciting Better Sentence Embeddings from LLMs",
  ACL 2025 (arXiv 2412.11556): a placeholder before the sentence takes, at the input of each layer of a band,
  the previous layer's last-token state; the embedding is read at an intermediate layer (early exit).
- Jiang et al., "Scaling Sentence Embeddings with Large Language Models" (PromptEOL, arXiv 2307.16645): the
  last token's state under `This sentence : "<s>" means in one word:"`.

A `TrainingFreeMethod` (paperline.project.interface): `prepare` (no training: the dev search over TP's band,
placeholder position and output layer, and the pyfunc model), `evaluate` (STS-B test Spearman of every variant
at every layer, the line plot, and the dev-chosen TP setting on test). The hooks live in token_prepending.py,
which the pyfunc model also ships; this file only maps config to them.

References:
    - Fu et al., "Token Prepending", ACL 2025, arXiv 2412.11556
    - Jiang et al., "Scaling Sentence Embeddings with Large Language Models" (PromptEOL), arXiv 2307.16645

Inputs (data kinds):
    `scored_pairs` (STS-B dev for the search, test for the report; no train split).

Example:
    paperline run token_prepending --config smoke
    .venv/bin/python projects/token_prepending/method.py threads=1     # without Prefect or MLflow
"""

from __future__ import annotations

import json
import time
from typing import Literal

from pydantic import Field, model_validator

if __name__ == "__main__":  # prepare + evaluate without Prefect or MLflow (paperline.project.local_run)
    from paperline.project.local_run import main_file

    main_file(__file__)

from paperline.core.config import ProjectConfig, StrictModel
from paperline.project.interface import Evaluation, ProjectData, RunContext, TrainedModel
from paperline.project.metrics import spearman_name

from . import curves
from . import token_prepending as hooks
from .loading import load_checked, serving_spec

Position = Literal["before_sentence", "before_quote"]


# ---- config ------------------------------------------------------------------------------------------------


class Embedding(StrictModel):
    prompt: str = hooks.PROMPTEOL  # PromptEOL's template; {sentence} is the slot
    normalize: bool = True  # the reference's clean-up of each sentence inside the quotes
    batch_size: int = Field(32, ge=1)  # sorted by length, so a batch pads little
    max_sentence_tokens: int = Field(256, ge=1)


class TP(StrictModel):
    """The TP setting used when the search is off (and the paper's LLaMA-2 setting: band [1, 7))."""

    placeholder: str = "eos"  # a single token; eos = the tokenizer's EOS, never inside an STS sentence
    position: Position = "before_sentence"
    start: int = Field(1, ge=0)
    exit: int = Field(7, ge=1)
    output_layer: int = -1  # hidden state read out: 0..L, or negative from the end (-1 = the last)

    @model_validator(mode="after")
    def _band(self):
        if self.exit <= self.start:
            raise ValueError(f"tp.exit ({self.exit}) must be above tp.start ({self.start})")
        return self


class Search(StrictModel):
    """The dev-only search over placeholder position x band; each band's output layer comes from its curve."""

    enabled: bool = True
    dataset: str = "stsb"
    split: str = "dev"
    max_rows: int | None = Field(None, ge=2)  # dev pairs used; fewer rows, less CPU time
    positions: list[Position] = ["before_sentence"]
    bands: list[tuple[int, int]] = [(1, 7)]
    min_layer: int = Field(1, ge=0)  # lowest hidden state an embedding may be read from

    @model_validator(mode="after")
    def _bands(self):
        bad = [b for b in self.bands if not 0 <= b[0] < b[1]]
        if bad:
            raise ValueError(f"search.bands {bad}: each band is [start, exit) with 0 <= start < exit")
        return self


class Evaluate(StrictModel):
    dataset: str = "stsb"
    split: str = "test"
    max_rows: int | None = Field(None, ge=2)
    baselines: list[Literal["mean", "last", "prompteol"]] = ["mean", "last", "prompteol"]
    bootstrap_rounds: int = Field(1000, ge=10)  # resamples for the interval of TP - PromptEOL


class Config(ProjectConfig):
    model_cache: str | None = None  # folder for converted models; default <repo>/.paperline/models
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None leaves torch's default
    embedding: Embedding = Embedding()
    tp: TP = TP()
    search: Search = Search()
    evaluate: Evaluate = Evaluate()

    def metric_names(self) -> set[str]:
        """TP's dev-chosen setting on the evaluation split and, next to it, PromptEOL at its dev-chosen layer."""
        name = spearman_name(self.evaluate.dataset, self.evaluate.split)
        with_prompteol = self.search.enabled and "prompteol" in self.evaluate.baselines
        return {name, f"{name}_prompteol_devlayer"} if with_prompteol else {name}


# ---- helpers -----------------------------------------------------------------------------------------------


def _settings(cfg: Config, **tp) -> object:
    """EmbedSettings for a variant: prompteol (no tp), tp (with band/position/layer), or a bare-sentence pooling."""
    e = cfg.embedding
    base = hooks.EmbedSettings(prompt=e.prompt, normalize=e.normalize, max_sentence_tokens=e.max_sentence_tokens)
    return hooks.variant(base, **tp)


def _bare(cfg: Config, pooling: str):
    return hooks.variant(_settings(cfg), prompt=None, pooling=pooling, normalize=False)


def _curve(model, tokenizer, split, settings, cfg: Config, cosines: dict | None = None, name: str = "") -> list[float]:
    """Spearman at every layer from one encode; `cosines[name]` keeps the per-pair cosines for the bootstrap."""
    embeddings = hooks.encode_all_layers(model, tokenizer, split.sentences, settings, cfg.embedding.batch_size)
    cosine = curves.pair_cosines(embeddings, split)
    if cosines is not None:
        cosines[name] = cosine
    return curves.layer_spearman(embeddings, split, cosine)


# ---- the interface -------------------------------------------------------------------------------------------


def prepare(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Choose TP's placeholder position, band and output layer on STS-B dev (the knobs of Fu et al. 2025,
    arXiv 2412.11556; the reference's dev mode scores STS-B dev), and build the pyfunc model with that
    setting. No weight changes: training-free."""
    model, tokenizer, folder = load_checked(cfg, _settings)
    out = ctx.workdir / "token_prepending"
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    if cfg.search.enabled:
        dev = curves.Split.of(data.read(cfg.search.dataset, cfg.search.split, cfg.search.max_rows))
        search = curves.SearchResult()
        for position in cfg.search.positions:
            for start, exit in cfg.search.bands:
                tp = dict(placeholder=cfg.tp.placeholder, position=position, start=start, exit=exit)
                values = _curve(model, tokenizer, dev, _settings(cfg, **tp), cfg)
                search.add(position, start, exit, values, cfg.search.min_layer)
        prompteol = _curve(model, tokenizer, dev, _settings(cfg), cfg)
        best = search.chosen()
        position, start, exit, layer = best["position"], best["start"], best["exit"], best["best_layer"]
        prompteol_best = curves.Best.of(prompteol, cfg.search.min_layer)
        search.save(
            out / "dev_search.json",
            {"prompteol_dev_curve": prompteol, "prompteol_dev_layer": prompteol_best.layer,
             "dev_pairs": len(dev.gold), "seconds": time.perf_counter() - began},
        )
    else:
        position, start, exit, layer = cfg.tp.position, cfg.tp.start, cfg.tp.exit, cfg.tp.output_layer
    chosen = _settings(cfg, placeholder=cfg.tp.placeholder, position=position, start=start, exit=exit,
                       output_layer=layer)
    settings_path = out / "settings.json"
    settings_path.write_text(
        json.dumps({"embedding": chosen.to_json(), "batch_size": cfg.embedding.batch_size, "base_model": cfg.base_model},
                   indent=1)
    )
    # The chosen setting as notes (evaluate reports it with the scores); seconds as a metric.
    return TrainedModel(path=out, flavor="pyfunc", serving=serving_spec(folder, settings_path, model.config.hidden_size),
                        metrics={"prepare_seconds": round(time.perf_counter() - began, 1)},
                        notes={"tp_setting": f"{position} [{start}, {exit}) layer {layer}"},
                        outputs={"settings": settings_path, "dev_search": out / "dev_search.json"})


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """STS-B test Spearman x100 of every variant at every layer (one pass each), the plot, and the primary metric:
    the dev-chosen TP setting on test, next to PromptEOL at its own dev-chosen layer: the comparison Fu et al.
    2025 (arXiv 2412.11556) report for PromptEOL with and without TP on 7B-13B models."""
    lm, tokenizer, _ = load_checked(cfg, _settings)
    began = time.perf_counter()
    chosen = hooks.EmbedSettings.from_json(json.loads(model.output("settings").read_text())["embedding"])
    test = curves.Split.of(data.read(cfg.evaluate.dataset, cfg.evaluate.split, cfg.evaluate.max_rows))
    prefix = spearman_name(cfg.evaluate.dataset, cfg.evaluate.split)

    layer_curves: dict[str, list[float]] = {}
    cosines: dict = {}
    if {"mean", "last"} & set(cfg.evaluate.baselines):
        # Both bare-sentence poolings read the same forward pass: one encode, two poolings.
        embeddings = hooks.encode_all_layers(lm, tokenizer, test.sentences, _bare(cfg, "mean"),
                                             cfg.embedding.batch_size, poolings=("mean", "last"))
        mean, last = embeddings
        if "mean" in cfg.evaluate.baselines:
            layer_curves["mean"] = curves.layer_spearman(mean, test)
        if "last" in cfg.evaluate.baselines:
            layer_curves["last"] = curves.layer_spearman(last, test)
    if "prompteol" in cfg.evaluate.baselines:
        layer_curves["prompteol"] = _curve(lm, tokenizer, test, _settings(cfg), cfg, cosines, "prompteol")
    layer_curves["tp"] = _curve(lm, tokenizer, test, chosen, cfg, cosines, "tp")

    total = len(layer_curves["tp"]) - 1
    chosen_layer = chosen.output_layer % (total + 1)
    metrics = {prefix: layer_curves["tp"][chosen_layer], "tp_output_layer": float(chosen_layer),
               "tp_start": float(chosen.start), "tp_exit": float(chosen.exit)}
    marks = {"tp": chosen_layer}
    metrics.update(curves.best_metrics(layer_curves, prefix, cfg.search.min_layer))
    tables: dict[str, dict[str, list]] = {"layer_curves": curves.curves_table(layer_curves)}
    dev_file = model.output("dev_search")
    if dev_file.is_file():  # the search ran (search.enabled)
        search, extra = curves.SearchResult.load(dev_file)
        tables["tp_dev_search"] = search.table()
        metrics[f"{cfg.search.dataset}_{cfg.search.split}_spearman_tp"] = search.chosen()["dev_spearman"]
        if "prompteol" in layer_curves:
            # PromptEOL read at ITS dev-chosen layer: the honest baseline for the dev-tuned TP number.
            dev_layer = extra["prompteol_dev_layer"]
            metrics[f"{prefix}_prompteol_devlayer"] = layer_curves["prompteol"][dev_layer]
            metrics["prompteol_dev_layer"] = float(dev_layer)
            marks["prompteol"] = dev_layer
            # Is the gap bigger than what resampling the test pairs moves? (paired bootstrap, 95% interval)
            gap, low, high = curves.paired_bootstrap(
                test.gold, cosines["tp"][chosen_layer].numpy(), cosines["prompteol"][dev_layer].numpy(),
                rounds=cfg.evaluate.bootstrap_rounds, seed=cfg.seed)
            metrics.update({f"{prefix}_tp_minus_prompteol": gap, f"{prefix}_tp_minus_prompteol_ci_low": low,
                            f"{prefix}_tp_minus_prompteol_ci_high": high})
    metrics["evaluate_seconds"] = round(time.perf_counter() - began, 1)
    title = (f"{cfg.evaluate.dataset.upper()} {cfg.evaluate.split}: {cfg.base_model.split('/')[-1]}; "
             f"TP {chosen.position} [{chosen.start}, {chosen.exit})")
    plot = curves.plot_curves(layer_curves, ctx.workdir / "layer_curves.png", title, marks)
    return Evaluation(metrics=metrics, artifacts={"layer_curves.png": plot}, tables=tables)

