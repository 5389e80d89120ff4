"""The token_prepending project on a tiny random Llama: the TP hooks, early exit, prepare/evaluate, the pyfunc.

The model is a 4-layer, 64-wide `LlamaConfig` with random weights and a byte-level BPE tokenizer trained here
on a few sentences (SmolLM2's special tokens), so every test runs in seconds without the real LM.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
LAYERS = 4
CORPUS = [
    "A man is playing a guitar.", "A woman is slicing an onion.", "Two dogs run across the field.",
    'This sentence : "a cat sits" means in one word:"', "The stock market fell sharply today.",
]


@pytest.fixture(scope="module")
def project():
    from paperline.project.discovery import get_project

    return get_project(ROOT / "projects", "token_prepending")


@pytest.fixture(scope="module")
def method(project):
    return project.method()


@pytest.fixture(scope="module")
def hooks(method):
    return method.hooks


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>",
        pad_token="<|im_end|>",  # as SmolLM2: the pad token is the EOS, also our placeholder
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, model, tokenizer): a saved tiny random Llama, loaded the way the project loads a causal LM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from paperline.ml.causal_lm import load_causal_lm

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = _tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model, tok = load_causal_lm(str(folder))
    return folder, model, tok


SENTENCES = ["A man is playing a guitar", "Two dogs run.", 'She said "yes"?', "The market fell sharply today"]


def _batch(hooks, tokenizer, settings):
    index, enc, positions = next(hooks._batches(tokenizer, SENTENCES, settings, batch_size=len(SENTENCES)))
    return index, enc, positions


def test_card_and_every_config_validate(project):
    assert project.card.primary_metric.name == "stsb_test_spearman"
    assert not project.trains  # training-free: the flows call prepare
    assert hasattr(project.method(), "prepare")
    for name in project.configs:
        cfg = project.load_config(name)
        assert cfg.search.bands and cfg.embedding.prompt.count("{sentence}") == 1


def test_empty_band_is_a_clear_config_error(project):
    from paperline.core.config import ConfigError

    with pytest.raises(ConfigError, match="tp.exit"):
        project.load_config("default", ["tp.start=5", "tp.exit=3"])
    with pytest.raises(ConfigError, match="tp.position"):
        project.load_config("default", ["tp.position=middle"])


def test_normalize_and_templates(hooks):
    assert hooks.normalize_sentence('She said "yes"?') == "She said 'yes'."
    assert hooks.normalize_sentence("Two dogs run") == "Two dogs run."
    s = hooks.EmbedSettings(placeholder="eos")
    assert hooks.template(s, "<P>") == 'This sentence : "<P>{sentence}" means in one word:"'
    assert hooks.template(hooks.variant(s, position="before_quote"), "<P>") == (
        'This sentence : <P> "{sentence}" means in one word:"'  # the reference's `<PST> "*sent 0*"`
    )
    assert hooks.template(hooks.EmbedSettings(), "<P>") == hooks.PROMPTEOL  # no TP: no placeholder


def test_placeholder_found_after_left_padding(hooks, tiny):
    _, _, tokenizer = tiny
    index, enc, positions = _batch(hooks, tokenizer, hooks.EmbedSettings(placeholder="eos"))
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()  # left padding, rows of different lengths
    for row, pos in enumerate(positions.tolist()):
        assert ids[row, pos] == tokenizer.eos_token_id and mask[row, pos] == 1
        assert mask[row, :pos].sum() == len(tokenizer('This sentence : "', add_special_tokens=False)["input_ids"])


def test_tp_off_hooks_change_nothing(hooks, tiny):
    _, model, tokenizer = tiny
    settings = hooks.EmbedSettings(placeholder="eos", start=0, exit=LAYERS)
    _, enc, _ = _batch(hooks, tokenizer, settings)
    with torch.inference_mode():
        plain = model.base_model(**enc, output_hidden_states=True).hidden_states
        slots = hooks._Slots()  # positions None: every layer has a hook, none changes anything
        with hooks.token_prepending(model, 0, LAYERS, slots):
            hooked = model.base_model(**enc, output_hidden_states=True).hidden_states
        # Placeholder = the last token itself: the replacement writes each row's own value back.
        slots.positions = torch.full((enc["input_ids"].shape[0],), enc["input_ids"].shape[1] - 1)
        with hooks.token_prepending(model, 0, LAYERS, slots):
            self_copy = model.base_model(**enc, output_hidden_states=True).hidden_states
    assert len(plain) == LAYERS + 1
    assert all(torch.equal(a, b) for a, b in zip(plain, hooked))
    assert all(torch.equal(a, b) for a, b in zip(plain, self_copy))
    # And the project's PromptEOL path (no TP) is exactly the plain forward's last token at every layer.
    _, enc0, _ = _batch(hooks, tokenizer, hooks.EmbedSettings())
    with torch.inference_mode():
        ref = torch.stack([h[:, -1] for h in model.base_model(**enc0, output_hidden_states=True).hidden_states])
    got = hooks.encode_all_layers(model, tokenizer, SENTENCES, hooks.EmbedSettings(), batch_size=len(SENTENCES))
    index, _, _ = _batch(hooks, tokenizer, hooks.EmbedSettings())
    assert torch.equal(got[:, index], ref)


@pytest.mark.parametrize("start,exit", [(0, 2), (1, 3), (2, 4)])
def test_tp_on_placeholder_input_is_previous_layers_last_token(hooks, tiny, start, exit):
    _, model, tokenizer = tiny
    settings = hooks.EmbedSettings(placeholder="eos", start=start, exit=exit)
    _, enc, positions = _batch(hooks, tokenizer, settings)
    layers = hooks.decoder_layers(model)
    seen: dict[int, torch.Tensor] = {}
    slots = hooks._Slots()
    slots.positions = positions
    rows = torch.arange(len(positions))
    with torch.inference_mode(), hooks.token_prepending(model, start, exit, slots):
        # Registered after TP's hooks, so these record what each layer really receives.
        handles = [layer.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].clone()))
                   for i, layer in enumerate(layers)]
        try:
            hidden = model.base_model(**enc, output_hidden_states=True).hidden_states
        finally:
            for h in handles:
                h.remove()
        embeddings = model.get_input_embeddings()(enc["input_ids"])
    for i in range(LAYERS):
        # Hidden state i is layer i's input; for i = 0 transformers records the input layer 0 received (after
        # TP's pre-hook), so the unmodified reference there is the token embeddings.
        previous = embeddings if i == 0 else hidden[i]
        if start <= i < exit:
            assert torch.equal(seen[i][rows, positions], previous[rows, -1])
            others = seen[i].clone()
            others[rows, positions] = previous[rows, positions]
            assert torch.equal(others, previous)  # nothing but the placeholder changed
            assert not torch.equal(seen[i], previous)
        else:
            assert torch.equal(seen[i], previous)
    with torch.inference_mode():
        untouched = model.base_model(**enc, output_hidden_states=True).hidden_states
    assert not torch.equal(hidden[-1][:, -1], untouched[-1][:, -1])  # TP changes the sentence embedding


def test_early_exit_equals_that_layers_hidden_state(hooks, tiny):
    _, model, tokenizer = tiny
    settings = hooks.EmbedSettings(placeholder="eos", start=1, exit=3)
    every = hooks.encode_all_layers(model, tokenizer, SENTENCES, settings, batch_size=2)
    for layer in (0, 1, 3, LAYERS, -1):
        got = hooks.embed(model, tokenizer, SENTENCES, hooks.variant(settings, output_layer=layer), batch_size=2)
        assert torch.equal(got, every[layer])
    mean, last = hooks.encode_all_layers(model, tokenizer, SENTENCES, hooks.EmbedSettings(prompt=None, pooling="mean"),
                                         batch_size=3, poolings=("mean", "last"))
    assert mean.shape == last.shape == (LAYERS + 1, len(SENTENCES), 64) and not torch.equal(mean, last)


def _data():
    """A few hand-made pairs in every split (the flows pass the DVC-versioned STS-B)."""
    from paperline.data.kinds.scored_pairs import ScoredPair
    from paperline.project.interface import ProjectData

    rows = [ScoredPair(a, b, float(i % 5)) for i, (a, b) in enumerate(zip(SENTENCES * 3, CORPUS * 3))]
    return ProjectData.from_rows({"stsb": {"dev": rows, "test": rows}})


def test_prepare_and_evaluate_smoke(project, method, tiny, tmp_path):
    from paperline.project.interface import RunContext

    folder, _, _ = tiny
    cfg = project.load_config("smoke", [f"base_model={folder}", "search.bands=[[0, 2], [1, 3]]"])
    ctx = RunContext(workdir=tmp_path, progress=False)
    model = method.prepare(cfg, _data(), ctx)
    assert model.flavor == "pyfunc" and (model.path / "settings.json").is_file()
    chosen = json.loads((model.path / "settings.json").read_text())["embedding"]
    search = json.loads((model.path / "dev_search.json").read_text())
    best = max(search["rows"], key=lambda r: r["dev_spearman"])
    assert (chosen["start"], chosen["exit"], chosen["output_layer"]) == (best["start"], best["exit"], best["best_layer"])
    result = method.evaluate(model, cfg, _data(), ctx)
    m = result.metrics
    assert m["stsb_test_spearman"] == pytest.approx(result.tables["layer_curves"]["tp"][chosen["output_layer"]], abs=1e-3)
    for variant in ("mean", "last", "prompteol", "tp"):
        assert {f"stsb_test_spearman_{variant}_{k}" for k in ("best", "best_layer", "last")} <= set(m)
    assert len(result.tables["layer_curves"]["layer"]) == LAYERS + 1
    assert m["stsb_test_spearman_tp_minus_prompteol_ci_low"] <= m["stsb_test_spearman_tp_minus_prompteol_ci_high"]
    assert result.tables["tp_dev_search"]["start"] == [0, 1]
    assert f"[{chosen['start']}, {chosen['exit']})" in model.notes["tp_setting"]
    assert set(model.serving.artifacts) == {"lm", "settings"} and model.serving.code_paths
    assert any(r.startswith("torch==") for r in model.serving.pip_requirements)
    assert result.artifacts["layer_curves.png"].stat().st_size > 1000


def test_model_dependent_settings_are_one_line_config_errors(project, method, tiny, tmp_path):
    from paperline.core.config import ConfigError
    from paperline.project.interface import RunContext

    folder, _, _ = tiny
    ctx = RunContext(workdir=tmp_path, progress=False)
    for overrides, match in [(["search.bands=[[0, 9]]"], "beyond"), (["search.bands=[[0, 2]]", "tp.placeholder=not one token"], "single token")]:
        cfg = project.load_config("smoke", [f"base_model={folder}", *overrides])
        with pytest.raises(ConfigError, match=match):
            method.prepare(cfg, _data(), ctx)


def test_pyfunc_round_trip_with_real_mlflow(method, hooks, tiny, tmp_path):
    import mlflow
    import numpy as np

    folder, model, tokenizer = tiny
    settings = hooks.EmbedSettings(placeholder="eos", start=1, exit=3, output_layer=3)
    settings_path = tmp_path / "settings.json"
    settings_path.write_text(json.dumps({"embedding": settings.to_json(), "batch_size": 2}))
    kwargs = method.serving_spec(folder, settings_path, model.config.hidden_size).log_model_kwargs()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    # The artifacts go under tmp_path too (the default would be ./mlruns in the working directory).
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("tp", artifact_location=str(tmp_path / "artifacts")))
    try:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", **kwargs)
        loaded = mlflow.pyfunc.load_model(info.model_uri)
        out = loaded.predict(SENTENCES[:3])
    finally:
        mlflow.set_tracking_uri(None)
    assert isinstance(out, np.ndarray) and out.shape == (3, 64) and out.dtype == np.float32
    direct = hooks.embed(model, tokenizer, SENTENCES[:3], settings, batch_size=2).numpy()
    np.testing.assert_allclose(out, direct, rtol=1e-5, atol=1e-6)
