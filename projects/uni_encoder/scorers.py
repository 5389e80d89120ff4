"""Each arm's scorer at the common start, its tokenizer, and the pyfunc spec of the served arrow scorer.

Project plumbing around the paper's attention layouts (uni_encoder.py): every arm starts from the same MiniLM
weights with a head drawn from the seed, so the arms differ only in how the context and candidates attend.
"""

from __future__ import annotations

from pathlib import Path

from paperline.project.interface import PyfuncSpec
from paperline.project.sections import pyfunc_spec

from . import uni_encoder as uni

HERE = Path(__file__).resolve().parent
# One request: the context (turns separated by newlines), then the candidates; the answer is one score each.
REQUEST_EXAMPLE = [["Do you like hiking?\nYes, every weekend", "Where do you usually go?", "I love tacos",
                    "The stock market fell today"]]


def layout(cfg, arm: str):
    e = cfg.examples
    return uni.Layout(mode=arm, max_context_tokens=e.max_context_tokens, max_candidate_tokens=e.max_candidate_tokens,
                      logit_scale=cfg.train.logit_scale)


def start(cfg, arm: str):
    """The arm's scorer at the common start: MiniLM's weights, the head drawn from the seed."""
    import torch
    from transformers import AutoModel

    from paperline.ml.models import resolve_model_path

    torch.manual_seed(cfg.seed)
    encoder = AutoModel.from_pretrained(resolve_model_path(cfg.base_model))
    return uni.new_scorer(encoder, layout(cfg, arm))


def tokenizer_of(cfg):
    from transformers import AutoTokenizer

    from paperline.ml.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(cfg.base_model))


def threads(cfg) -> None:
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)


def serving_spec(scorer_folder: Path) -> PyfuncSpec:
    """The arrow scorer as a pyfunc: models from code (pyfunc_model.py), no pickles."""
    return pyfunc_spec(HERE / "pyfunc_model.py", {"scorer": Path(scorer_folder)},
                       ["torch", "transformers", "safetensors"], code_paths=[HERE / "uni_encoder.py"],
                       metadata={"input": "[context (turns separated by newlines), candidate_1, ..., candidate_K]",
                                 "output": "K scores per row, higher is a better reply"},
                       input_example=REQUEST_EXAMPLE)
