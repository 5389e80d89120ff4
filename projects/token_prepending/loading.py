"""Loading the LM a config names, checked against it, and the pyfunc spec that serves its embeddings.

Project plumbing, not the paper (whose hooks are token_prepending.py): the config's settings that only the model
can validate (bands deeper than its layers, an output layer outside it, a placeholder that is not one token) stop
the run with one line before any pass.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from paperline.project.interface import PyfuncSpec
from paperline.project.sections import SENTENCES_EXAMPLE, pyfunc_spec

from . import token_prepending as hooks

HERE = Path(__file__).resolve().parent


def load_checked(cfg, embed_settings: Callable[..., object]):
    """(causal LM, tokenizer, its local folder) of `cfg.base_model` (converted once into `model_cache`), after
    checking the settings only the model can validate; `embed_settings(cfg, **tp)` builds a variant's settings."""
    import torch

    from paperline.ml.causal_lm import load_causal_lm, materialize

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cache = Path(cfg.model_cache) if cfg.model_cache else None
    folder = materialize(cfg.base_model, cache)
    model, tokenizer = load_causal_lm(folder)
    _check(cfg, model, tokenizer, embed_settings)
    return model, tokenizer, folder


def _check(cfg, model, tokenizer, embed_settings) -> None:
    """Settings that only the model can validate, as one clear line before any pass."""
    from paperline.core.config import ConfigError

    layers = len(hooks.decoder_layers(model))
    bands = list(cfg.search.bands) if cfg.search.enabled else [(cfg.tp.start, cfg.tp.exit)]
    too_deep = [b for b in bands if b[1] > layers]
    if too_deep:
        raise ConfigError(f"TP bands {too_deep} end beyond {cfg.base_model}'s {layers} decoder layers; "
                          f"keep exit <= {layers}")
    if not -(layers + 1) <= cfg.tp.output_layer <= layers:
        raise ConfigError(f"tp.output_layer {cfg.tp.output_layer} is outside 0..{layers} (or -1..-{layers + 1})")
    try:
        hooks.placeholder_token(tokenizer, embed_settings(cfg, placeholder=cfg.tp.placeholder))
    except ValueError:
        raise ConfigError(f"tp.placeholder {cfg.tp.placeholder!r} is not a single token of {cfg.base_model}'s "
                          "tokenizer; use eos or a special token of that tokenizer") from None


def serving_spec(model_folder: str | Path, settings_path: Path, hidden_size: int) -> PyfuncSpec:
    """The pyfunc that serves TP embeddings: models from code, no pickles."""
    # The input schema (a list of strings) comes from predict's type hint; the output is a float32 matrix.
    return pyfunc_spec(HERE / "pyfunc_model.py", {"lm": Path(model_folder), "settings": settings_path},
                       ["torch", "transformers", "numpy"], code_paths=[HERE / "token_prepending.py"],
                       metadata={"embedding_dim": hidden_size, "output": f"float32 array [n, {hidden_size}]"},
                       input_example=SENTENCES_EXAMPLE)
