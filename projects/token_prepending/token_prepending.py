"""Token Prepending (TP) and prompt-based last-token sentence embeddings from a decoder-only LM, with hooks.

Fu et al., "Token Prepending: A Training-Free Approach for Eliciting Better Sentence Embeddings from LLMs",
ACL 2025 (arXiv 2412.11556). Under causal attention a token never sees the tokens after it, so the early
tokens of a sentence are encoded without the sentence's end. TP puts a placeholder token before the sentence
and, at the input of each decoder layer in a band [start, exit), overwrites the placeholder's hidden state
with the previous layer's last-token hidden state (the running sentence embedding); every later token then
attends to a summary of the whole sentence. No weights change.

Jiang et al., "Scaling Sentence Embeddings with Large Language Models" (PromptEOL, arXiv 2307.16645): the
sentence embedding is the last token's hidden state under the prompt `This sentence : "<s>" means in one
word:"`. TP is applied on top of that prompt.

Implemented with a forward pre-hook on each decoder layer of the band (no copy of the modeling code), and
the output layer ("early exit", the paper's intermediate-layer read-out) with a forward hook that stops the
pass once the wanted layer has run. Self-contained (torch and transformers only): the MLflow pyfunc ships
this file as code, so a serving environment needs no paperline install.

Layer numbering follows transformers' `hidden_states`: 0 is the token embeddings, k (1..L-1) the output of
decoder layer k (1-based), L the final layer after the model's last norm; the band [start, exit) counts decoder
layers from 0 as the reference implementation does (start=1: the first replacement is at the input of the
second layer, i.e. with hidden state 1).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

PROMPTEOL = 'This sentence : "{sentence}" means in one word:"'
POSITIONS = ("before_sentence", "before_quote")


@dataclass(frozen=True)
class EmbedSettings:
    """How one variant turns sentences into vectors; JSON-serialisable (the pyfunc's settings artifact)."""

    prompt: str | None = PROMPTEOL  # template with {sentence}; None: the bare sentence
    pooling: str = "last"  # last: last token (PromptEOL); mean: average over the tokens (bare sentences)
    normalize: bool = True  # the reference's clean-up inside the quotes (see normalize_sentence)
    placeholder: str | None = None  # TP's placeholder token text, "eos" for the tokenizer's EOS; None: no TP
    position: str = "before_sentence"  # before_sentence: `: "<p>sentence"`; before_quote: `: <p> "sentence"`
    start: int = 1  # TP band [start, exit) of decoder layers (0-based) whose input gets the replacement
    exit: int = 7
    output_layer: int = -1  # hidden state read out (0..L, or negative from the end); -1: the final one
    max_sentence_tokens: int = 256  # longer sentences are cut (keeps the prompt's end, which pooling reads)

    @property
    def tp(self) -> bool:
        return self.placeholder is not None and self.exit > self.start

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> EmbedSettings:
        return cls(**data)


def normalize_sentence(s: str) -> str:
    """The reference's clean-up (from PromptEOL's code): a final period, and no double quote that would close
    the prompt's quotation early."""
    s = s.strip()
    if s and s[-1] not in ".?\"'":
        s += "."
    s = s.replace('"', "'")
    if s.endswith("?"):
        s = s[:-1] + "."
    return s


def template(settings: EmbedSettings, placeholder_text: str | None) -> str:
    """The prompt with the placeholder inserted where `position` says; `{sentence}` is left to fill."""
    prompt = settings.prompt or "{sentence}"
    if "{sentence}" not in prompt:
        raise ValueError(f"prompt {prompt!r} has no {{sentence}} slot")
    if not settings.tp or placeholder_text is None:
        return prompt
    at = prompt.index("{sentence}")
    if settings.position == "before_sentence":
        return prompt[:at] + placeholder_text + prompt[at:]
    if settings.position == "before_quote":
        quote = prompt.rfind('"', 0, at)
        if quote < 0:
            raise ValueError(f"position before_quote needs a quote before {{sentence}} in {prompt!r}")
        return prompt[:quote] + placeholder_text + " " + prompt[quote:]
    raise ValueError(f"unknown placeholder position {settings.position!r}; choose one of {', '.join(POSITIONS)}")


def placeholder_token(tokenizer, settings: EmbedSettings) -> tuple[str, int] | None:
    """(text, id) of the placeholder; it must be one token of the vocabulary (a special token splits cleanly)."""
    if not settings.tp:
        return None
    text = tokenizer.eos_token if settings.placeholder == "eos" else settings.placeholder
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if text is None or len(ids) != 1:
        raise ValueError(f"TP placeholder {settings.placeholder!r} is not a single token of this tokenizer")
    return text, ids[0]


def decoder_layers(model):
    """The decoder layers (`base_model.layers` for Llama, Qwen2, Mistral, Gemma)."""
    import torch

    base = getattr(model, "base_model", model)
    if isinstance(getattr(base, "layers", None), torch.nn.ModuleList):
        return base.layers
    count = model.config.num_hidden_layers
    for module in base.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")


class _Slots:
    """The placeholder position of each row of the current batch, read by the hooks."""

    positions = None


@contextmanager
def token_prepending(model, start: int, exit: int, slots: _Slots):
    """Install TP on decoder layers [start, exit): before each, the placeholder's input := the last token's.

    Fu et al. 2025 (arXiv 2412.11556). The replacement is out of place, so the hidden states that
    transformers records (output_hidden_states) stay the layers' true outputs. Positions come from `slots`
    per batch; `slots.positions = None` makes the hooks no-ops.
    """
    import torch

    def prepend(module, args, kwargs):
        if slots.positions is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        # The last position is the sentence's last token for every row: the tokenizer pads on the left.
        hidden = hidden.index_put((rows, slots.positions), hidden[:, -1, :])
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    layers = decoder_layers(model)
    if not 0 <= start < exit <= len(layers):
        raise ValueError(f"TP band [{start}, {exit}) must lie within the model's {len(layers)} decoder layers")
    handles = [layers[i].register_forward_pre_hook(prepend, with_kwargs=True) for i in range(start, exit)]
    try:
        yield slots
    finally:
        for handle in handles:
            handle.remove()


class _EarlyExit(Exception):
    def __init__(self, hidden):
        self.hidden = hidden


@contextmanager
def early_exit(model, output_layer: int):
    """Stop the forward pass after decoder layer `output_layer` (1-based) and hand back its output."""

    def stop(module, args, output):
        raise _EarlyExit(output[0] if isinstance(output, tuple) else output)

    handle = decoder_layers(model)[output_layer - 1].register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def _cut(tokenizer, sentences: list[str], limit: int) -> list[str]:
    ids = tokenizer(sentences, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(i[:limit]) if len(i) > limit else s for s, i in zip(sentences, ids)]


def _batches(tokenizer, sentences: list[str], settings: EmbedSettings, batch_size: int):
    """(indices, encoded batch, placeholder positions or None) in order of length, to pad little."""

    sentences = _cut(tokenizer, sentences, settings.max_sentence_tokens)
    if settings.prompt is not None and settings.normalize:
        sentences = [normalize_sentence(s) for s in sentences]
    placeholder = placeholder_token(tokenizer, settings)
    fill = template(settings, placeholder[0] if placeholder else None)
    texts = [fill.replace("{sentence}", s) for s in sentences]
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    for begin in range(0, len(order), batch_size):
        index = order[begin : begin + batch_size]
        enc = tokenizer([texts[i] for i in index], return_tensors="pt", padding=True, add_special_tokens=True)
        positions = None
        if placeholder is not None:
            # First real (not padding) occurrence: the pad token may be the same token as the placeholder.
            hit = (enc["input_ids"] == placeholder[1]) & enc["attention_mask"].bool()
            if not hit.any(dim=1).all():
                raise ValueError("a prompt lost its TP placeholder during tokenization")
            positions = hit.int().argmax(dim=1)
        yield index, enc, positions


def _pool(hidden, mask, pooling: str):
    if pooling == "last":
        return hidden[:, -1, :]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def _num_layers(model) -> int:
    return len(decoder_layers(model))


def encode_all_layers(model, tokenizer, sentences: list[str], settings: EmbedSettings, batch_size: int = 32,
                      poolings: tuple[str, ...] | None = None):
    """Embeddings at EVERY hidden state from one forward pass per batch: a float32 tensor [L+1, N, H].

    `output_hidden_states` returns every layer's output of the same pass, so a per-layer curve costs one
    encode, not L (TP's band still needs its own pass: it changes what the later layers compute). With
    `poolings`, a tuple of such tensors, one per pooling, all from the same pass.
    """
    import torch

    base = getattr(model, "base_model", model)  # the decoder without the LM head: no logits are computed
    device = next(model.parameters()).device
    names = poolings or (settings.pooling,)
    out: list | None = None
    slots = _Slots()
    with torch.inference_mode(), _maybe_tp(model, settings, slots):
        for index, enc, positions in _batches(tokenizer, sentences, settings, batch_size):
            enc = {k: v.to(device) for k, v in enc.items()}
            slots.positions = None if positions is None else positions.to(device)
            hidden = base(**enc, output_hidden_states=True, use_cache=False).hidden_states
            rows = torch.as_tensor(index)
            for n, name in enumerate(names):
                pooled = torch.stack([_pool(h, enc["attention_mask"], name) for h in hidden]).float().cpu()
                if out is None:
                    out = [torch.empty(pooled.shape[0], len(sentences), pooled.shape[2]) for _ in names]
                out[n][:, rows] = pooled
    if out is None:
        raise ValueError("no sentences to encode")
    return tuple(out) if poolings else out[0]


def embed(model, tokenizer, sentences: list[str], settings: EmbedSettings, batch_size: int = 32):
    """Embeddings [N, H] at `settings.output_layer`; the layers above it are never run (early exit)."""
    import torch

    base = getattr(model, "base_model", model)
    device = next(model.parameters()).device
    total = _num_layers(model)
    layer = settings.output_layer % (total + 1)
    out = None
    slots = _Slots()
    with torch.inference_mode(), _maybe_tp(model, settings, slots):
        for index, enc, positions in _batches(tokenizer, sentences, settings, batch_size):
            enc = {k: v.to(device) for k, v in enc.items()}
            slots.positions = None if positions is None else positions.to(device)
            hidden = _run_to(base, enc, layer, total)
            pooled = _pool(hidden, enc["attention_mask"], settings.pooling).float().cpu()
            if out is None:
                out = torch.empty(len(sentences), pooled.shape[1])
            out[torch.as_tensor(index)] = pooled
    if out is None:
        return torch.empty(0, model.config.hidden_size)
    return out


def _run_to(base, enc: dict, layer: int, total: int):
    if layer == total:
        return base(**enc, use_cache=False).last_hidden_state
    if layer == 0:
        return base.get_input_embeddings()(enc["input_ids"])
    try:
        with early_exit(base, layer):
            base(**enc, use_cache=False)
    except _EarlyExit as stop:
        return stop.hidden
    raise RuntimeError(f"the forward pass did not reach decoder layer {layer}")


@contextmanager
def _maybe_tp(model, settings: EmbedSettings, slots: _Slots):
    if not settings.tp:
        yield slots
        return
    with token_prepending(model, settings.start, settings.exit, slots):
        yield slots


def variant(settings: EmbedSettings, **changes) -> EmbedSettings:
    return replace(settings, **changes)
