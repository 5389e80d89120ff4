"""What the student learns from and is scored on: the distillation sentences, the teacher's embeddings of them
(computed once per run folder and kept), the NLI entailment pairs, and the noisy copies of the scored pairs.

Project plumbing, not the paper: every list here is a pure function of the rows and the seed, so a resumed job and
a rerun see the same sentences in the same order.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np

from paperline.data import derived
from paperline.data.kinds.nli_pairs import NliPair
from paperline.data.kinds.scored_pairs import ScoredPair
from paperline.ml.char_noise import noisy


def held_out_sentences(splits: dict[str, list[ScoredPair]]) -> set[str]:
    """Every sentence of the scored splits: never trained on, not even as a distillation input."""
    return {s for rows in splits.values() for r in rows for s in (r.sentence1, r.sentence2)}


def distill_sentences(sts_rows: list[ScoredPair], nli_rows: list[NliPair], held_out: set[str], seed: int,
                      max_sentences: int | None = None) -> list[str]:
    """STS-B train sentences and SNLI premises and hypotheses, deduplicated, without the held-out ones,
    shuffled by `seed` (then the first `max_sentences`)."""
    seen: dict[str, None] = {}
    for text in [s for r in sts_rows for s in (r.sentence1, r.sentence2)] + \
                [s for r in nli_rows for s in (r.premise, r.hypothesis)]:
        if text.strip() and text not in held_out:
            seen.setdefault(text, None)
    sentences = sorted(seen)
    random.Random(seed).shuffle(sentences)
    return sentences[:max_sentences] if max_sentences else sentences


def entailment_pairs(nli_rows: list[NliPair], held_out: set[str], seed: int,
                     max_pairs: int | None = None) -> list[tuple[str, str]]:
    """(premise, entailed hypothesis) pairs, deduplicated, none touching a held-out sentence, shuffled by `seed`."""
    pairs = sorted({(r.premise, r.hypothesis) for r in nli_rows if r.label == "entailment"
                    and r.premise not in held_out and r.hypothesis not in held_out})
    random.Random(seed).shuffle(pairs)
    return pairs[:max_pairs] if max_pairs else pairs


def digest(sentences: list[str]) -> str:
    return hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()


def teacher_embeddings(base_model: str, sentences: list[str], folder: Path, batch_size: int = 64,
                       progress: bool = True) -> tuple[np.ndarray, Path]:
    """(N, dim) float32 embeddings of `sentences` by the teacher, and the TSV that lists them in order.

    Kept in `folder` (teacher_embeddings.npy and teacher_sentences.tsv, named by the list's sha256): a resumed job
    or a second stage reads them back instead of encoding again.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = digest(sentences)[:16]
    vectors, listing = folder / f"teacher_embeddings-{key}.npy", folder / f"teacher_sentences-{key}.tsv"
    if vectors.is_file() and listing.is_file():
        saved = np.load(vectors, allow_pickle=False)
        if saved.shape[0] == len(sentences):
            return saved, listing
    from paperline.ml.models import load_sentence_transformer

    teacher = load_sentence_transformer(base_model)
    embeddings = teacher.encode(sentences, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                show_progress_bar=progress).astype(np.float32)
    derived.write_tsv(listing, ["sentence"], ([s] for s in sentences))
    partial = vectors.with_name(f".{vectors.name}.partial.npy")
    np.save(partial, embeddings, allow_pickle=False)
    partial.replace(vectors)  # written last and whole: its presence means the listing is complete too
    return embeddings, listing


def noisy_rows(rows: list[ScoredPair], kind: str, rate: float, seed: int) -> list[ScoredPair]:
    """The same pairs and gold scores with both sentences under `kind` noise (`paperline.ml.char_noise`): the
    same noisy text for every model, every run."""
    return [ScoredPair(noisy(r.sentence1, kind, rate, seed), noisy(r.sentence2, kind, rate, seed), r.score)
            for r in rows]
