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

Run outside the flow (prints the grids):  python projects/matryoshka_2d/method.py --config default [key=value ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from paperline.config import ProjectConfig, StrictModel
from paperline.projects import Evaluation, ProjectData, RunContext, TrainedModel, project_module


class PaperLossSettings(StrictModel):
    cosent_weight: float = Field(1.0, ge=0)  # CoSENT on every term, as the reference's cosine-ranking part
    angle_weight: float = Field(0.0, ge=0)  # AnglE's angle term; 0.02 is the reference CLI's usual weight
    kl_temperature: float = Field(1.0, gt=0)
    kl_weight: float = Field(1.0, ge=0)
    mse_weight: float = Field(0.0, ge=0)  # MSE between layer i and the last layer, next to the KL
    layer_weight: float = Field(1.0, ge=0)  # weight of layer i's two similarity terms


class Train(StrictModel):
    objective: Literal["st", "paper", "ese"] = "st"
    dims: list[int] = Field(default_factory=lambda: [384, 256, 128, 64, 32], min_length=1)  # st / ese
    paper: PaperLossSettings = PaperLossSettings()
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=2)
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_rows: int | None = Field(None, ge=2)  # cap on training rows, for smoke runs
    max_steps: int = -1  # > 0 caps the optimizer steps, for smoke runs
    checkpoint_every: int = Field(100, ge=1)
    device: str = "auto"
    baseline: bool = True  # also train the CoSENT baseline on the same rows, seed and steps
    baseline_dir: str | None = None  # reuse (or create) the baseline here, e.g. shared by several objectives


class Evaluate(StrictModel):
    dataset: str = "stsb"
    split: str = "test"  # the grid's split; the primary metric is the full model's cell on it
    layers: list[int] | None = None  # None: every layer of the model
    dims: list[int] = Field(default_factory=lambda: [32, 64, 128, 256, 384], min_length=1)
    max_rows: int | None = Field(None, ge=2)
    batch_size: int = Field(64, ge=1)


class Config(ProjectConfig):
    train: Train = Train()
    evaluate: Evaluate = Evaluate()


def _paper_loss_module():
    """The sibling `paper_loss.py` (projects are folders, not packages)."""
    return project_module(Path(__file__).with_name("paper_loss.py"))


def training_rows(cfg: Config, data: ProjectData):
    from datasets import Dataset

    rows = data.read(cfg.evaluate.dataset, "train")
    dataset = Dataset.from_dict(
        {
            "sentence1": [r.sentence1 for r in rows],
            "sentence2": [r.sentence2 for r in rows],
            "score": [r.score / 5.0 for r in rows],  # CoSENT ranks by score; [0, 1] as in sbert_sts
        }
    )
    if cfg.train.max_rows:
        dataset = dataset.select(range(min(cfg.train.max_rows, len(dataset))))
    return dataset


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
        p = cfg.train.paper
        return _paper_loss_module().TwoDMatryoshkaPaperLoss(
            model, cosent_weight=p.cosent_weight, angle_weight=p.angle_weight,
            kl_temperature=p.kl_temperature, kl_weight=p.kl_weight, mse_weight=p.mse_weight,
            layer_weight=p.layer_weight,
        )
    raise ValueError(f"unknown objective '{objective}'; choose st, paper, ese")


def _train_one(objective: str, cfg: Config, data: ProjectData, ctx: RunContext, folder: Path) -> tuple[Path, dict]:
    """Train one model into `folder/model`; a finished folder is reused, a killed job resumes its checkpoints."""
    from paperline.models import load_sentence_transformer
    from paperline.training import TrainSettings, fit, seed_everything

    done = folder / "model"
    if (done / "config.json").is_file():
        return done, {"reused": str(done)}
    seed_everything(cfg.seed)  # the paper loss seeds its layer/dim sampler from the global seed
    model = load_sentence_transformer(cfg.base_model)
    t = cfg.train
    result = fit(
        model,
        training_rows(cfg, data),
        make_loss(objective, model, cfg),
        TrainSettings(
            output_dir=folder / "checkpoints", epochs=t.epochs, batch_size=t.batch_size,
            learning_rate=t.learning_rate, warmup_ratio=t.warmup_ratio, seed=cfg.seed,
            checkpoint_every=t.checkpoint_every, max_steps=t.max_steps, device=t.device, progress=ctx.progress,
        ),
    )
    model.save(str(done))
    return done, {k: v for k, v in vars(result).items() if isinstance(v, (int, float, str))}


def train(cfg: Config, data: ProjectData, ctx: RunContext) -> TrainedModel:
    """Train the 2D Matryoshka model and, on the same rows, seed and steps, the CoSENT baseline."""
    path, result = _train_one(cfg.train.objective, cfg, data, ctx, ctx.workdir / cfg.train.objective)
    info: dict = {"objective": cfg.train.objective, **{f"train_{k}": v for k, v in result.items()}}
    if cfg.train.baseline:
        folder = Path(cfg.train.baseline_dir) if cfg.train.baseline_dir else ctx.workdir / "baseline"
        existed = (folder / "model" / "config.json").is_file()
        base_path, base_result = _train_one("cosent", cfg, data, ctx, folder)
        info["baseline_path"] = str(base_path)
        info["baseline_source"] = (
            f"reused {base_path} (trained earlier with this config's data, seed and steps)" if existed
            else "trained in this run: CoSENT on the last layer, same rows, seed and steps"
        )
        info.update({f"baseline_{k}": v for k, v in base_result.items() if k != "reused"})
    return TrainedModel(path=path, flavor="sentence_transformers", info=info)


def evaluate(model: TrainedModel, cfg: Config, data: ProjectData, ctx: RunContext) -> Evaluation:
    """The layer x dimension grid (STS-B test Spearman x100) of the model and of the baseline, with a heatmap."""
    from sentence_transformers import SentenceTransformer

    from paperline.layer_grid import grid_metrics, grid_spearman, grid_table, plot_grids

    e = cfg.evaluate
    pairs = data.read(e.dataset, e.split)
    pairs = pairs[: e.max_rows] if e.max_rows else pairs
    prefix = f"{e.dataset}_{e.split}_spearman"
    encoder = SentenceTransformer(str(model.path))
    grid = grid_spearman(encoder, pairs, layers=e.layers, dims=e.dims, batch_size=e.batch_size)
    n, full = max(c[0] for c in grid), encoder.get_embedding_dimension()
    metrics = grid_metrics(grid, prefix)
    # the primary metric is the untruncated model, whatever dims the grid lists
    metrics[prefix] = grid[(n, full)] if (n, full) in grid else _full_cell(encoder, pairs, e.batch_size, n, full)
    grids = {cfg.train.objective: grid}
    baseline_grid = None
    if model.info.get("baseline_path"):
        base = SentenceTransformer(str(model.info["baseline_path"]))
        baseline_grid = grid_spearman(base, pairs, layers=e.layers, dims=e.dims, batch_size=e.batch_size)
        metrics.update(grid_metrics(baseline_grid, f"baseline_{prefix}"))
        metrics[f"baseline_{prefix}"] = _full_cell(base, pairs, e.batch_size, n, full, baseline_grid)
        grids["baseline"] = baseline_grid
    out = ctx.workdir / "evaluation"
    heatmap = plot_grids(
        grid, baseline_grid, out / "layer_dim_grid.png",
        title=f"STS-B {e.split} Spearman x100 by layers x dims", names=(cfg.train.objective, "baseline"),
    )
    return Evaluation(metrics=metrics, artifacts={"layer_dim_grid.png": heatmap},
                      tables={"layer_dim_grid": grid_table(grids)})


def _full_cell(encoder, pairs, batch_size, n, full, grid=None) -> float:
    from paperline.layer_grid import grid_spearman

    if grid is not None and (n, full) in grid:
        return grid[(n, full)]
    return grid_spearman(encoder, pairs, layers=[n], dims=[full], batch_size=batch_size)[(n, full)]


def main(argv: list[str] | None = None) -> None:
    """Train and evaluate outside the flow: `--config NAME`, `--workdir DIR`, then `key=value` overrides."""
    import argparse

    from paperline.config import load_config
    from paperline.data import dataset_ref, read_pointer, DataVersion
    from paperline.layer_grid import format_grid

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent
    root = here.parent.parent
    cfg = load_config(here / "configs" / f"{args.config}.yaml", Config, args.overrides)
    pointer = read_pointer(root)
    version = DataVersion(md5=pointer["md5"], path=root / pointer.get("path", "data"), nfiles=None, pulled=False)
    data = ProjectData({name: dataset_ref(version, name, use.kind) for name, use in cfg.data.items()})
    workdir = Path(args.workdir or f"/tmp/matryoshka_2d-{args.config}-{cfg.train.objective}")
    ctx = RunContext(workdir=workdir, progress=False)
    trained = train(cfg, data, ctx)
    result = evaluate(trained, cfg, data, ctx)
    table = result.tables["layer_dim_grid"]
    for name in [c for c in table if c not in ("layers", "dims")]:
        print(f"\n{name}:")
        print(format_grid({(layer, d): v for layer, d, v in zip(table["layers"], table["dims"], table[name])}))
    print({k: v for k, v in trained.info.items()})
    print("artifacts:", {k: str(v) for k, v in result.artifacts.items()})


if __name__ == "__main__":
    main()
