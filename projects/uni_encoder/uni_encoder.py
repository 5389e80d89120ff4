"""Uni-Encoder response selection: one scorer, three attention layouts (Song et al., Findings of ACL 2023).

- `arrow` (Uni-Encoder): the context and all K candidates in ONE sequence. Every candidate's position ids
  continue from the end of the context (all candidates share the same positions), and an additive [B, 1, L, L]
  attention mask lets context tokens see the context only and each candidate's tokens see the context and
  themselves. Each candidate's tokens are mean-pooled and a linear head gives its logit. Candidates never see
  each other, so a candidate's score is the one it would get alone after that context (the method's invariant,
  tested), at the cost of one pass instead of K.
- `square` (cross-encoder): one pass per (context, candidate) pair with full attention, the same token layout,
  pooling and head: the quality reference Uni-Encoder aims to match.
- `diag` (bi-encoder): context and candidate encoded separately (mean pooling, as MiniLM was trained), the logit
  is a scaled cosine: cheapest, the candidates never meet the context inside the encoder.

Shipped with the MLflow pyfunc (code_paths), so it imports only torch, transformers and safetensors, never
paperline. Token layout as in the reference (dll-wu/Uni-Encoder, ubuntu/utils/dataset.py): `[CLS] turn [SEP]
turn [SEP] ...` for the context, cut from the left to its budget; `[CLS] candidate [SEP]` per candidate, token
type 1 for candidates.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

MODES = ("diag", "square", "arrow")
SETTINGS_FILE = "scorer.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"


@dataclass(frozen=True)
class Layout:
    mode: str = "arrow"
    max_context_tokens: int = 192  # [CLS] + the most recent context tokens
    max_candidate_tokens: int = 64  # [CLS] candidate [SEP]
    logit_scale: float = 20.0  # diag only: cosine x scale, as MultipleNegativesRankingLoss does

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")


# ---- tokens --------------------------------------------------------------------------------------------------


def context_ids(tokenizer, turns: list[str], max_tokens: int, cache: dict | None = None) -> list[int]:
    """`[CLS] t1 [SEP] t2 [SEP] ... tn [SEP]`, keeping the most recent `max_tokens - 1` tokens after [CLS]: the
    context is truncated from the left (the oldest turns go first), as in the reference."""
    flat: list[int] = []
    for turn in turns:
        flat += _turn_ids(tokenizer, turn, cache) + [tokenizer.sep_token_id]
    return [tokenizer.cls_token_id] + flat[-(max_tokens - 1):]


def candidate_ids(tokenizer, text: str, max_tokens: int, cache: dict | None = None) -> list[int]:
    """`[CLS] candidate [SEP]`, the candidate's first `max_tokens - 2` tokens."""
    return [tokenizer.cls_token_id] + _turn_ids(tokenizer, text, cache)[: max_tokens - 2] + [tokenizer.sep_token_id]


def _turn_ids(tokenizer, text: str, cache: dict | None) -> list[int]:
    if cache is not None and text in cache:
        return cache[text]
    # A pasted turn can be 30k characters: cut the text before tokenizing (no turn needs more than this).
    ids = tokenizer(text[:4000], add_special_tokens=False)["input_ids"]
    if cache is not None:
        cache[text] = ids
    return ids


# ---- batches -------------------------------------------------------------------------------------------------


def _pad(rows: list[list[int]], value: int):
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def arrow_batch(contexts: list[list[int]], candidates: list[list[list[int]]], pad_id: int) -> dict:
    """One sequence per example: context, then its K candidates. `segments` is 0 for context tokens, k + 1 for
    candidate k's tokens, -1 for padding; positions restart at the context's length for every candidate."""
    ids, positions, types, segments = [], [], [], []
    for ctx, cands in zip(contexts, candidates):
        row_ids, row_pos, row_types, row_seg = list(ctx), list(range(len(ctx))), [0] * len(ctx), [0] * len(ctx)
        for k, cand in enumerate(cands):
            row_ids += cand
            row_pos += range(len(ctx), len(ctx) + len(cand))
            row_types += [1] * len(cand)
            row_seg += [k + 1] * len(cand)
        ids.append(row_ids), positions.append(row_pos), types.append(row_types), segments.append(row_seg)
    return {"input_ids": _pad(ids, pad_id), "position_ids": _pad(positions, 0), "token_type_ids": _pad(types, 0),
            "segments": _pad(segments, -1), "k": len(candidates[0])}


def arrow_mask(segments, dtype):
    """The additive [B, 1, L, L] mask: query i may see key j when j is context (and i is not padding) or when
    i and j are tokens of the same candidate. Blocked entries get the dtype's minimum, not -inf, so a padding
    row (which sees nothing) gives a uniform softmax instead of NaN; padding outputs are never pooled."""
    import torch

    query, key = segments[:, :, None], segments[:, None, :]
    allowed = ((key == 0) & (query >= 0)) | ((query == key) & (query > 0))
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None, :, :]


def pair_batch(contexts: list[list[int]], candidates: list[list[list[int]]], pad_id: int) -> dict:
    """square: one sequence per (context, candidate) pair, same layout as arrow with K = 1; rows are
    example-major (example 0's K pairs, then example 1's)."""
    pairs_ctx = [ctx for ctx, cands in zip(contexts, candidates) for _ in cands]
    pairs_cand = [[cand] for cands in candidates for cand in cands]
    batch = arrow_batch(pairs_ctx, pairs_cand, pad_id)
    batch["k"] = len(candidates[0])
    return batch


# ---- the scorer ----------------------------------------------------------------------------------------------


def _torch_module():
    import torch

    class Scorer(torch.nn.Module):
        """A BERT encoder and, for arrow and square, a linear head on each candidate's mean-pooled tokens."""

        def __init__(self, encoder, layout: Layout):
            super().__init__()
            self.encoder = encoder
            self.layout = layout
            self.head = torch.nn.Linear(encoder.config.hidden_size, 1) if layout.mode != "diag" else None

        def candidate_states(self, batch: dict):
            """[B, K, H]: each candidate's mean-pooled last hidden states (arrow: one pass, masked)."""
            device = self.encoder.device
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
            segments = batch["segments"]
            if self.layout.mode == "arrow":
                mask = arrow_mask(segments, self.encoder.dtype).to(device)
            else:  # square: a plain padding mask, full attention within each pair
                mask = (segments >= 0).long()
            hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=mask,
                                  token_type_ids=batch["token_type_ids"],
                                  position_ids=batch["position_ids"]).last_hidden_state
            k = batch["k"]
            if self.layout.mode == "arrow":
                slots = torch.arange(1, k + 1, device=device)
                member = (segments[:, None, :] == slots[None, :, None]).to(hidden.dtype)  # [B, K, L]
                return member @ hidden / member.sum(-1, keepdim=True)
            member = (segments == 1).to(hidden.dtype)  # [B*K, L]
            pooled = (member[:, :, None] * hidden).sum(1) / member.sum(1, keepdim=True)
            return pooled.view(-1, k, pooled.shape[-1])

        def embed(self, rows: list[list[int]], pad_id: int):
            """diag: mean-pooled embeddings of separately encoded sequences."""
            device = self.encoder.device
            ids, mask = _pad(rows, pad_id).to(device), _pad([[1] * len(r) for r in rows], 0).to(device)
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            return (mask[:, :, None] * hidden).sum(1) / mask.sum(1, keepdim=True)

        def forward(self, contexts: list[list[int]], candidates: list[list[list[int]]], pad_id: int):
            """[B, K] logits."""
            if self.layout.mode == "diag":
                k = len(candidates[0])
                ctx = torch.nn.functional.normalize(self.embed(contexts, pad_id), dim=-1)
                cand = self.embed([c for cands in candidates for c in cands], pad_id)
                cand = torch.nn.functional.normalize(cand, dim=-1).view(len(contexts), k, -1)
                return self.layout.logit_scale * (cand @ ctx[:, :, None]).squeeze(-1)
            build = arrow_batch if self.layout.mode == "arrow" else pair_batch
            pooled = self.candidate_states(build(contexts, candidates, pad_id))
            return self.head(pooled).squeeze(-1)

    return Scorer


def new_scorer(encoder, layout: Layout):
    return _torch_module()(encoder, layout)


def tokenize_example(tokenizer, layout: Layout, turns: list[str], candidates: list[str], cache: dict | None = None):
    return (context_ids(tokenizer, turns, layout.max_context_tokens, cache),
            [candidate_ids(tokenizer, c, layout.max_candidate_tokens, cache) for c in candidates])


def score(scorer, tokenizer, examples: list[tuple[list[str], list[str]]], batch_size: int = 8) -> list[list[float]]:
    """Scores of each example's candidates, `examples` = [(context turns, candidates)]; any K per example."""
    import torch

    cache: dict = {}
    out: list[list[float]] = []
    scorer.eval()
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start: start + batch_size]
            # examples of one batch must have the same K: group consecutive ones by K
            for group in _same_k(chunk):
                tokens = [tokenize_example(tokenizer, scorer.layout, turns, cands, cache) for turns, cands in group]
                logits = scorer([t[0] for t in tokens], [t[1] for t in tokens], tokenizer.pad_token_id)
                out += logits.float().tolist()
    return out


def _same_k(chunk):
    groups: list[list] = []
    for example in chunk:
        if groups and len(groups[-1][0][1]) == len(example[1]):
            groups[-1].append(example)
        else:
            groups.append([example])
    return groups


# ---- files ---------------------------------------------------------------------------------------------------


def save(scorer, tokenizer, folder: Path) -> Path:
    """encoder/ (save_pretrained + tokenizer), head.safetensors, scorer.json: loads with `load` without paperline."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scorer.encoder.save_pretrained(folder / ENCODER_DIR)
    tokenizer.save_pretrained(folder / ENCODER_DIR)
    if scorer.head is not None:
        save_file({k: v.contiguous() for k, v in scorer.head.state_dict().items()}, str(folder / HEAD_FILE))
    (folder / SETTINGS_FILE).write_text(json.dumps(asdict(scorer.layout), indent=1))
    return folder


def load(folder: Path, device: str = "cpu"):
    """(scorer, tokenizer) from a folder written by `save`."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    folder = Path(folder)
    layout = Layout(**json.loads((folder / SETTINGS_FILE).read_text()))
    encoder = AutoModel.from_pretrained(str(folder / ENCODER_DIR))
    scorer = new_scorer(encoder, layout)
    if scorer.head is not None:
        scorer.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    return scorer.to(device).eval(), AutoTokenizer.from_pretrained(str(folder / ENCODER_DIR))
