"""Tokenize a training set once per dataset version and tokenizer; every run and every epoch reads the ids back.

sentence-transformers' data collator tokenizes every batch of every epoch (`model.preprocess`). On a GPU that
work, on one CPU thread, is what keeps the chip waiting; on a CPU it is a small share of a step. `cached_preprocess`
tokenizes each distinct text of the training set once, with the model's own `preprocess` (so the ids are the
ones the collator would make, truncation included), keeps them on disk, and gives the collator a drop-in that
only gathers and pads.

The cache is content-addressed, so nothing has to be invalidated by hand: its key is the sha256 of the
tokenizer's full definition (vocabulary, normaliser, special tokens, maximum length, lower-casing) and the
sha256 of the set of texts. A new dataset version whose texts differ, or another tokenizer, misses it; a version
that changed only the scores finds the same ids. Files: `<fingerprint>-<texts>.npz` (the ids, read with
`allow_pickle=False`) and `.json` (the texts, in the ids' order), written beside each other and renamed into place,
and a sha256 manifest written last and checked before use (a damaged or half-written entry is rebuilt).
Location: `PAPERLINE_TOKEN_CACHE` (a workspace sets `.paperline/cache/tokens`), else `~/.cache/paperline/tokens`.

Models this does not cover keep the collator's own path: a first module that is not a text `Transformer`, a
prompt or a task router, and any text the cache does not hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

CHUNK = 1024  # texts per `preprocess` call while building: bounded memory for the padded chunk


def default_dir() -> Path:
    configured = os.environ.get("PAPERLINE_TOKEN_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "paperline" / "tokens"


def tokenizer_fingerprint(model: Any) -> str | None:
    """sha256 of everything that decides the ids of a text for this model, or None when the model's first module
    is not a text Transformer with a tokenizer (then nothing is cached)."""
    first = model[0] if len(model) else None
    tokenizer = getattr(first, "tokenizer", None)
    if tokenizer is None or not hasattr(first, "max_seq_length"):
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    parts = [type(tokenizer).__name__, definition, str(first.max_seq_length),
             str(getattr(first, "do_lower_case", False)), str(tokenizer.padding_side), str(tokenizer.pad_token_id),
             json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def texts_digest(texts: list[str]) -> str:
    """sha256 over `texts` in their order (`load_or_build` passes them sorted and distinct: a set's digest)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()


def text_columns(dataset: Any) -> list[str]:
    """The columns of a `datasets.Dataset` that hold strings (the ones the collator tokenizes)."""
    return [name for name, feature in dataset.features.items() if getattr(feature, "dtype", None) == "string"]


class TokenTable:
    """Each text's ids (and token type ids, when the tokenizer makes them), unpadded."""

    def __init__(self, texts: list[str], offsets: Any, ids: Any, type_ids: Any | None, pad_id: int, pad_left: bool,
                 extra: dict[str, Any]):
        self.index = {text: i for i, text in enumerate(texts)}
        self.offsets, self.ids, self.type_ids = offsets, ids, type_ids
        self.pad_id, self.pad_left, self.extra = pad_id, pad_left, extra

    def __contains__(self, text: str) -> bool:
        return text in self.index

    def batch(self, texts: list[str]) -> dict[str, Any]:
        """What `model.preprocess(texts)` returns: padded input ids, attention mask (and token type ids)."""
        import torch

        rows = [self.index[text] for text in texts]
        spans = [(int(self.offsets[r]), int(self.offsets[r + 1])) for r in rows]
        width = max(end - start for start, end in spans)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        types = torch.zeros((len(rows), width), dtype=torch.long) if self.type_ids is not None else None
        for i, (start, end) in enumerate(spans):
            n = end - start
            cols = slice(width - n, width) if self.pad_left else slice(0, n)
            input_ids[i, cols] = torch.from_numpy(self.ids[start:end].astype("int64"))
            attention[i, cols] = 1
            if types is not None:
                types[i, cols] = torch.from_numpy(self.type_ids[start:end].astype("int64"))
        out = {"input_ids": input_ids, **({"token_type_ids": types} if types is not None else {}),
               "attention_mask": attention}
        return {**out, **self.extra}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        tmp = Path(handle.name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _tokenize(model: Any, texts: list[str]) -> tuple[Any, Any, Any | None, dict[str, Any]]:
    """Offsets, flat ids and flat token type ids of `texts`, made by the model's own `preprocess`."""
    import numpy as np

    offsets, ids, type_ids, extra = [0], [], [], {}
    for start in range(0, len(texts), CHUNK):
        out = model.preprocess(texts[start:start + CHUNK])
        mask = out["attention_mask"].bool()
        extra = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask", "token_type_ids")}
        for row in range(mask.shape[0]):
            ids.append(out["input_ids"][row][mask[row]].numpy().astype("int32"))
            if "token_type_ids" in out:
                type_ids.append(out["token_type_ids"][row][mask[row]].numpy().astype("int8"))
            offsets.append(offsets[-1] + int(mask[row].sum()))
    flat_types = np.concatenate(type_ids) if type_ids else None
    return np.asarray(offsets, dtype="int64"), np.concatenate(ids), flat_types, extra


def load_or_build(model: Any, texts: Iterable[str], cache_dir: Path | None = None) -> TokenTable | None:
    """The token table of `texts` for `model`'s tokenizer, from the cache or tokenized now (and stored); None
    when the model is not one the cache covers."""
    import numpy as np

    fingerprint = tokenizer_fingerprint(model)
    if fingerprint is None:
        return None
    texts = sorted(set(texts))
    folder = Path(cache_dir or default_dir())
    stem = folder / f"{fingerprint[:20]}-{texts_digest(texts)[:20]}"
    arrays, listing, manifest = (stem.with_suffix(suffix) for suffix in (".npz", ".json", ".sha256.json"))
    tokenizer = model[0].tokenizer
    pad_left = tokenizer.padding_side == "left"
    if manifest.exists():
        try:
            recorded = json.loads(manifest.read_text())
            if recorded == {"npz": _sha256(arrays), "json": _sha256(listing)}:
                stored = np.load(arrays, allow_pickle=False)
                extra = json.loads(listing.read_text())
                if extra["texts"] == texts:
                    # A fast tokenizer keeps its last padding and truncation settings and saves them into
                    # tokenizer.json with every checkpoint: leave it as building the entry would, so a rank that
                    # read the entry saves the same file as the rank that built it.
                    model.preprocess(texts[:1])
                    type_ids = stored["type_ids"] if "type_ids" in stored.files else None
                    return TokenTable(texts, stored["offsets"], stored["ids"], type_ids, tokenizer.pad_token_id,
                                      pad_left, extra["extra"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is rebuilt below
    offsets, ids, type_ids, extra = _tokenize(model, texts)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"offsets": offsets, "ids": ids, **({"type_ids": type_ids} if type_ids is not None else {})}

    def save_arrays(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **payload)

    _write_atomic(arrays, save_arrays)
    _write_atomic(listing, lambda tmp: tmp.write_text(json.dumps({"texts": texts, "extra": extra})))
    _write_atomic(manifest, lambda tmp: tmp.write_text(json.dumps({"npz": _sha256(arrays), "json": _sha256(listing)})))
    return TokenTable(texts, offsets, ids, type_ids, tokenizer.pad_token_id, pad_left, extra)


def cached_preprocess(model: Any, dataset: Any, original: Callable[..., dict], cache_dir: Path | None = None
                      ) -> Callable[..., dict] | None:
    """A drop-in for the collator's `preprocess_fn` that serves the dataset's texts from the token cache and
    anything else from `original`; None when the model is not one the cache covers."""
    texts = (text for column in text_columns(dataset) for text in dataset[column])
    table = load_or_build(model, texts, cache_dir)
    if table is None:
        return None

    def preprocess(inputs: list, prompt: str | None = None, task: str | None = None, **kwargs: Any) -> dict:
        if prompt or task or kwargs or not all(isinstance(x, str) and x in table for x in inputs):
            return original(inputs, prompt=prompt, task=task, **kwargs)
        return table.batch(inputs)

    return preprocess
