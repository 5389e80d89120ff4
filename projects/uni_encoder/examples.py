"""Response-selection examples from `dialogues` turns: context = the turns before one turn, positive = that turn,
K - 1 negatives = turns of OTHER conversations of the same split, all drawn with a fixed seed.

A held-out split's candidate sets are written once as a TSV (paperline.data.derived), one row per candidate, and
read back from that file for evaluation, so what is scored is exactly what the run records by sha256.
The config sections that say how many are drawn and how they are scored (`Examples`, `Evaluate`) live here too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from paperline.core.config import StrictModel
from paperline.data import derived

CANDIDATES_HEADER = ["split", "example", "conversation", "turn", "candidate", "label", "source_conversation",
                     "source_turn", "text"]


class Examples(StrictModel):
    candidates: int = Field(10, ge=2)  # K: the positive and K - 1 negatives
    max_context_turns: int = Field(20, ge=1)  # turns read before the token budget cuts from the left
    max_context_tokens: int = Field(128, ge=8)
    max_candidate_tokens: int = Field(48, ge=4)
    dev_contexts: int | None = Field(100, ge=1)  # held-out examples per split (None: every turn >= 1)
    test_contexts: int | None = Field(200, ge=1)

    @model_validator(mode="after")
    def _positions(self):
        if self.max_context_tokens + self.max_candidate_tokens > 512:
            raise ValueError("examples.max_context_tokens + examples.max_candidate_tokens must be <= 512, "
                             "BERT's position embeddings (candidates' positions continue after the context)")
        return self


class Evaluate(StrictModel):
    splits: list[Literal["dev", "test"]] = Field(default_factory=lambda: ["dev", "test"])
    batch_size: int = Field(8, ge=1)  # contexts per forward pass, the same for every arm
    baseline: bool = True  # also score the untrained MiniLM as a bi-encoder (zero-shot)


@dataclass(frozen=True)
class Example:
    conversation: str
    turn: int  # the positive is this turn; the context is turns 0 .. turn - 1
    candidates: tuple[tuple[str, int], ...]  # (conversation, turn) of each candidate
    label: int  # index of the positive among the candidates


def conversations(rows) -> dict[str, list[str]]:
    """conversation id -> its turns' texts, in turn order (the data gate checked the order)."""
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row.conversation, []).append(row.text)
    return out


def sample_examples(convs: dict[str, list[str]], count: int | None, k: int, seed: int) -> list[Example]:
    """`count` examples (all, when None) at distinct (conversation, turn >= 1) positions; each positive sits at
    a seeded random index among its K candidates. Negatives come from other conversations and differ in text
    from the positive (chit-chat repeats "lol" and "yes" across conversations)."""
    rng = random.Random(seed)
    positions = [(c, t) for c, turns in convs.items() for t in range(1, len(turns))]
    chosen = rng.sample(positions, count) if count is not None and count < len(positions) else positions
    pool = [(c, t) for c, turns in convs.items() for t in range(len(turns))]
    if len(convs) < 2:
        raise ValueError("negatives come from other conversations: a split needs at least two")
    examples = []
    for conv, turn in chosen:
        positive = convs[conv][turn]
        negatives: list[tuple[str, int]] = []
        seen = {positive.strip().lower()}
        for _ in range(100 * k):
            c, t = pool[rng.randrange(len(pool))]
            text = convs[c][t].strip().lower()
            if c != conv and text not in seen:
                negatives.append((c, t))
                seen.add(text)
                if len(negatives) == k - 1:
                    break
        if len(negatives) < k - 1:
            raise ValueError(f"could not draw {k - 1} distinct negatives for {conv} turn {turn}")
        label = rng.randrange(k)
        negatives.insert(label, (conv, turn))
        examples.append(Example(conv, turn, tuple(negatives), label))
    return examples


def texts(convs: dict[str, list[str]], example: Example, max_context_turns: int) -> tuple[list[str], list[str]]:
    """(context turns, candidate texts); the context keeps at most the last `max_context_turns` turns (the token
    budget then cuts it further from the left)."""
    first = max(0, example.turn - max_context_turns)
    return convs[example.conversation][first: example.turn], [convs[c][t] for c, t in example.candidates]


def write_candidate_sets(path: Path, sets: dict[str, tuple[dict[str, list[str]], list[Example]]]) -> str:
    """One row per candidate of every held-out example; returns the file's sha256."""
    rows = []
    for split, (convs, examples) in sets.items():
        for i, ex in enumerate(examples):
            for j, (c, t) in enumerate(ex.candidates):
                rows.append((split, i, ex.conversation, ex.turn, j, int(j == ex.label), c, t, convs[c][t]))
    return derived.write_tsv(path, CANDIDATES_HEADER, rows)


def read_candidate_sets(path: Path) -> dict[str, list[Example]]:
    """split -> its examples, back from the file `write_candidate_sets` wrote."""
    grouped: dict[tuple[str, int], list[dict]] = {}
    for row in derived.read_tsv(path):
        grouped.setdefault((row["split"], int(row["example"])), []).append(row)
    out: dict[str, list[Example]] = {}
    for (split, _), rows in grouped.items():
        rows.sort(key=lambda r: int(r["candidate"]))
        label = next(int(r["candidate"]) for r in rows if r["label"] == "1")
        out.setdefault(split, []).append(Example(rows[0]["conversation"], int(rows[0]["turn"]),
                                                 tuple((r["source_conversation"], int(r["source_turn"])) for r in rows),
                                                 label))
    return out


def ranking_metrics(scores: list[list[float]], labels: list[int]) -> dict[str, float]:
    """R10@1, R10@2 and MRR (x100). A tie with the positive counts against it (rank = 1 + candidates scoring >=
    the positive, itself excluded), so a constant scorer gets no credit."""
    ranks = []
    for row, label in zip(scores, labels):
        ranks.append(1 + sum(1 for j, s in enumerate(row) if j != label and s >= row[label]))
    n = len(ranks)
    return {"r10_at_1": 100.0 * sum(r == 1 for r in ranks) / n, "r10_at_2": 100.0 * sum(r <= 2 for r in ranks) / n,
            "mrr": 100.0 * sum(1.0 / r for r in ranks) / n}


def write_held_out(path: Path, cfg, read) -> str:
    """The dev/test candidate sets of `cfg.evaluate.splits` (`read(split)` gives a split's turns), sampled with
    seeds of their own, written to `path`; returns the file's sha256, their version."""
    e, held_out = cfg.examples, {}
    for i, split in enumerate(cfg.evaluate.splits):
        convs = conversations(read(split))
        count = e.dev_contexts if split == "dev" else e.test_contexts
        held_out[split] = (convs, sample_examples(convs, count, e.candidates, cfg.seed + 1 + i))
    return write_candidate_sets(path, held_out)


def held_out_requests(path: Path, cfg, read) -> dict[str, tuple[list, list[int]]]:
    """Split -> (each candidate set's (context, candidates) texts, the positive's index), from the file at `path`."""
    sets, requests = read_candidate_sets(path), {}
    for split in cfg.evaluate.splits:
        convs = conversations(read(split))
        requests[split] = ([texts(convs, ex, cfg.examples.max_context_turns) for ex in sets[split]],
                           [ex.label for ex in sets[split]])
    return requests
