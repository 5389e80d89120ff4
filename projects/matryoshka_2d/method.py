"""2D Matryoshka Sentence Embeddings: one encoder usable at any (first K layers, first D dimensions) budget.

Li, Li, Li, Xie & Li, "2D Matryoshka Sentence Embeddings" (arXiv 2402.14776, 2024; renamed "ESE: Espresso
Sentence Embeddings"). Reference implementation: SeanLee97/AnglE at 74e5ba2 (`AngleTDMSETrainer`).

Objectives (config `train.objective`):
- `st`: sentence-transformers' `Matryoshka2dLoss` over `CoSENTLoss` (dims 384/256/128/64/32);
- `paper`: the reference commit's objective, `paper_loss.TwoDMatryoshkaPaperLoss`;
- `ese`: ESE's all-layer schedule (arXiv 2402.14776v2): `Matryoshka2dLoss` over every layer and every
  dimension each step, prior layer i weighted 1 / (1 + ln(1 + i)) (`layer_weighting="log"`).

`train` also trains the baseline the paper compares against (the `sbert_sts` recipe: CoSENT on the last layer)
on the same rows, seed and steps, so `evaluate` reports both grids from one run.

References:
    - Li et al., "2D Matryoshka Sentence Embeddings" / "ESE: Espresso Sentence Embeddings", arXiv 2402.14776
    - reference implementation: github.com/SeanLee97/AnglE at 74e5ba2 (`AngleTDMSETrainer`)

Inputs (data kinds):
    `scored_pairs` (STS-B train to fit; the evaluation split for the layer x dims grid).

Example:
    paperline run matryoshka_2d --config smoke
    python projects/matryoshka_2d/method.py --config default train.objective=paper   # outside the flow
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

if __name__ == "__main__":  # outside the flow: train + evaluate, print the grids (paperline.project.local_run)
    from paperline.project.local_run import main_file

    main_file(__file__)

from paperline.core.config import ProjectConfig, StrictModel
from paperline.project.interface import Evaluation, ProjectData, RunContext, TrainedModel
from paperline.project.metrics import spearman_name, with_prefix
from paperline.project.sections import FitSection, scored_pairs_dataset

from . import grids
from .grids import Evaluate


class PaperLossSettings(StrictModel):
    cosent_weight: float = Field(1.0, ge=0)  # CoSENT on every term, as the reference's cosine-ranking part
    angle_weight: float = Field(0.0, ge=0)  # AnglE's angle term; 0.02 is the reference CLI's usual weight
    kl_temperature: float = Field(1.0, gt=0)
    kl_weight: float = Field(1.0, ge=0)
    mse_weight: float = Field(0.0, ge=0)  # MSE between layer i and the last layer, next to the KL
    layer_weight: float = Field(1.0, ge=0)  # weight of layer i's two similarity terms


class Train(FitSection):
    objective: Literal["st", "paper", "ese"] = "st"
    dims: list[int] = Field(default_factory=lambda: [384, 256, 128, 64, 32], min_length=1)  # st / ese
    paper: PaperLossSettings = PaperLossSettings()
    baseline: bool = True  # also train the CoSENT baseline on the same rows, seed and steps
    baseline_dir: str | None = None  # reuse (or create) the baseline here, e.g. shared by several objectives


class Config(ProjectConfig):
    train: Train = Train()
    evaluate: Evaluate = Evaluate()

    def metric_names(self) -> set[str]:
        """The full model's cell on the grid's split; the baseline's, when one is trained."""
        name = spearman_name(self.evaluate.dataset, self.evaluate.split)
        return {name, f"baseline_{name}"} if self.train.baseline else {name}


def make_loss(objective: str, model, cfg: Config):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss, Matryoshka2dLoss

    if objective == "cosent":
        return CoSENTLoss(model)
    if objective == "st":
        return Matryoshka2dLoss(model, CoSENTLoss(model), matryoshka_dims=cfg.train.dims)
    if objective == "ese":
        # every prior layer and every dimension each step; ESE's 1 / (1 + ln(1 + i)) layer weights
        return Matryoshka2dLoss(
            model, CoSENTLoss(model), matryoshka_dims=cfg.train.dims,
            n_layers_per_step=-1, n_dims_per_step=-1, layer_weighting="log",
        )
    if objective == "paper":
        from .paper_loss import TwoDMatryoshkaPaperLoss  # imports torch: only when this objective is chosen

        p = cfg.train.paper
        return TwoDMatryoshkaPaperLoss(
            model, cosent_weight=p.cosent_weight, angle_weight=p.angle_weight,
            kl_temperature=p.kl_temperature, kl_weight=p.kl_weight, mse_weight=p.mse_weight,
            layer_weight=p.layer_weight,
        )
    raise ValueError(f"unknown objective '{objective}'; choose st, paper, ese")


def _train_one(objective: str, cfg: Config, data: ProjectData, ctx: RunContext, folder: Path):
    """Train one model into `folder/model`; a finished folder is reused, a killed job resumes its checkpoints.
    Returns the folder and the training result (None when it was reused)."""
    from paperline.ml.models import load_sentence_transformer
    from paperline.ml.training import fit, seed_everything

    done = folder / "model"
    if (done / "config.json").is_file():
        return done, None
    seed_everything(cfg.seed)  # the paper loss seeds its layer/dim sampler from the global seed
    model = load_sentence_transformer(cfg.base_model)
    rows = scored_pairs_dataset(data.read(cfg.evaluate.dataset, "train"), cfg.train.max_rows)  # CoSENT: score / 5
    result = fit(model, rows, make_loss(objective, model, cfg), cfg.train.settings(folder / "checkpoints", cfg.seed,
                                                                                   ctx.progress))
    model.save(str(done))
    return done, result


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Train the 2D Matryoshka model and, on the same rows, seed and steps, the CoSENT baseline."""
    path, result = _train_one(cfg.train.objective, cfg, data, ctx, ctx.workdir / cfg.train.objective)
    metrics = with_prefix(result.metrics(), "train") if result else {}
    notes = {"objective": cfg.train.objective, **(result.notes() if result else {"reused": str(path)})}
    outputs = {}
    if cfg.train.baseline:
        folder = Path(cfg.train.baseline_dir) if cfg.train.baseline_dir else ctx.workdir / "baseline"
        outputs["baseline"], base_result = _train_one("cosent", cfg, data, ctx, folder)
        notes["baseline_source"] = (
            "trained in this run: CoSENT on the last layer, same rows, seed and steps" if base_result else
            f"reused {outputs['baseline']} (trained earlier with this config's data, seed and steps)")
        metrics.update(with_prefix(base_result.metrics() if base_result else {}, "baseline"))
    return TrainedModel(path=path, metrics=metrics, notes=notes, outputs=outputs)


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """The layer x dimension grid (STS-B test Spearman x100) of the model and of the baseline, with a heatmap."""
    from paperline.ml.layer_grid import grid_metrics, grid_table, plot_grids

    e = cfg.evaluate
    pairs = data.read(e.dataset, e.split, e.max_rows)
    check = data.read(e.dataset, e.check_split, e.max_rows) if e.backend != "torch" else []
    prefix, tags = spearman_name(e.dataset, e.split), {}
    encoder, grid, onnx = grids.scored_grid(model.path, pairs, check, e, tags, "model")
    n, full = max(c[0] for c in grid), encoder.get_embedding_dimension()
    # the primary metric is the untruncated model, whatever dims the grid lists
    metrics = {**grid_metrics(grid, prefix), prefix: grids.full_cell(encoder, pairs, e.batch_size, n, full, grid, onnx)}
    grids_by_name, baseline_grid = {cfg.train.objective: grid}, None
    if "baseline" in model.outputs:
        base, baseline_grid, base_onnx = grids.scored_grid(model.output("baseline"), pairs, check, e, tags, "baseline")
        metrics.update(grid_metrics(baseline_grid, f"baseline_{prefix}"))
        metrics[f"baseline_{prefix}"] = grids.full_cell(base, pairs, e.batch_size, n, full, baseline_grid, base_onnx)
        grids_by_name["baseline"] = baseline_grid
    heatmap = plot_grids(grid, baseline_grid, ctx.workdir / "evaluation" / "layer_dim_grid.png",
                         title=f"STS-B {e.split} Spearman x100 by layers x dims", names=(cfg.train.objective, "baseline"))
    return Evaluation(metrics=metrics, artifacts={"layer_dim_grid.png": heatmap},
                      tables={"layer_dim_grid": grid_table(grids_by_name)}, tags=tags)
