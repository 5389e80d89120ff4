"""The triplets every arm trains on: SNLI's own for the premises, the LM's in a folder keyed by what they depend
on, and the cycling that gives every arm the same number of steps.

Project plumbing around the paper's stages (generation.py writes and curates, guided_loss.py trains): which
premises, which LM writes and how (the `Generate` config section), where a generation lives so that a killed one
resumes, its speed recorded beside it, and the rows a training job reads.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from pathlib import Path

from pydantic import Field

from paperline.core.config import StrictModel
from paperline.core.errors import PaperlineError

from . import generation as gen

HERE = Path(__file__).resolve().parent


class Generate(StrictModel):
    lm: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    premises: int = Field(200, ge=2)  # distinct SNLI premises that have an entailment and a contradiction
    batch_size: int = Field(4, ge=1)
    max_new_tokens: int = Field(40, ge=4)
    temperature: float = Field(0.7, ge=0)
    threads: int | None = Field(None, ge=1)  # torch threads for the LM (None: torch's default)


class GeneratedDataError(PaperlineError):
    """Curation left too few generated triplets to train on (the gate over them is the platform's)."""


def human_triplets(rows, premises: int, seed: int) -> list:
    """SNLI's own (premise, entailment, contradiction): one per premise that has both, the first `premises` of
    them after a seeded shuffle. These premises are the ones the LM is asked about."""
    by_premise: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        by_premise[row.premise.strip()].setdefault(row.label, row.hypothesis)
    both = sorted(p for p, labels in by_premise.items() if {"entailment", "contradiction"} <= labels.keys())
    random.Random(seed).shuffle(both)
    return [gen.Triplet(p, by_premise[p]["entailment"], by_premise[p]["contradiction"]) for p in both[:premises]]


def premise_triplets(cfg, data) -> list:
    """The human triplets of the configured premises, from SNLI dev and test (the premises the LM is asked about)."""
    return human_triplets([row for split in ("dev", "test") for row in data.read("snli", split)],
                          cfg.generate.premises, cfg.seed)


def generation_key(cfg, premises: list[str]) -> str:
    """What the generated file depends on: the generation settings, the seed, the premises and the code that
    prompts, parses and writes (generation.py). Training settings are not in it, so changing them reuses the file."""
    text = json.dumps({"generate": cfg.generate.model_dump(exclude={"threads"}), "seed": cfg.seed,
                       "premises": premises, "code": (HERE / "generation.py").read_text()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def generation_dir(root: Path, cfg, premises: list[str]) -> Path:
    """The generation's own folder under `root` (the project's generation folder, shared by its runs): a killed
    generation resumes there, and a run that changes only training settings finds the finished file."""
    return Path(root) / generation_key(cfg, premises)[:16]


def generate_file(cfg, premises: list[str], path: Path, progress: bool):
    """Stage 1 with the configured LM (resuming into `path`); returns the GenerationReport."""
    import torch

    from paperline.ml.causal_lm import load_causal_lm

    if gen.done_premises(path) >= set(premises):
        return gen.GenerationReport(rows=len(gen.done_premises(path)), generated=0, seconds=0.0)
    if cfg.generate.threads:
        torch.set_num_threads(cfg.generate.threads)
    model, tokenizer = load_causal_lm(cfg.generate.lm)
    return gen.generate_triplets(premises, path, gen.chat_writer(model, tokenizer, cfg.seed, cfg.generate.temperature),
                                 gen.chat_rater(model, tokenizer), batch_size=cfg.generate.batch_size,
                                 max_new_tokens=cfg.generate.max_new_tokens, progress=progress)


def write_speed(path: Path, report) -> None:
    """The speed of the pass that wrote rows, in generation.json beside the file (a pass that wrote none keeps
    the earlier record)."""
    if report.generated:
        path.with_name("generation.json").write_text(json.dumps(
            {"generated": report.generated, "seconds": report.seconds, "per_minute": report.premises_per_minute()}))


def read_speed(path: Path) -> dict:
    """What `write_speed` recorded beside the generated file at `path`; {} when no pass wrote rows."""
    speed_file = Path(path).with_name("generation.json")
    return json.loads(speed_file.read_text()) if speed_file.is_file() else {}


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
