"""MultiCSR stages 1 and 2: an LM writes an entailment and a contradiction for each premise, rates both pairs,
and the rows are curated by thresholds on those ratings.

Stage 1 follows the reference's `flan_generate_scoring.py` (Circle-Ming/MultiCSR): the LM writes an entailment
and a contradiction of each premise, then rates the similarity of each (premise, sentence) pair in [0, 5]. The
reference prompts Flan-T5-XL; here SmolLM2-135M-Instruct through its chat template (see PROMPTS and chat_rater
for where and why the wording and the rating differ). A rating outside [0, 5] is written as -1 (kept in the
file, so the unfiltered arm sees every generated row; curation drops it).

The output is a TSV (`premise`, `entailment`, `contradiction`, `entailment_score`, `contradiction_score`, the
`nli_generated` data kind) appended row by row and flushed: a killed generation resumes by skipping the
premises already in the file (a last line cut short by the kill is dropped first), so no finished row is redone.

Stage 2 is the reference's `flan_filter.py` rule (its default `filter_type` 15): keep a row when the entailment's
rating is >= `positive_min`, the contradiction's <= `negative_max` and the two differ; a row whose ratings are
the other way round (the "contradiction" rated as the similar one) is kept with the two swapped, as the
reference does (its generation script orders every row by the two ratings). `min_margin` (ours) asks the
ratings to differ by at least that much: SmolLM2's ratings all fall near 2.3-3.0, where the reference's absolute
thresholds keep almost nothing, so the default config curates by the LM's preference between the two sentences
instead (see the card's deviations).
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HEADER = ("premise", "entailment", "contradiction", "entailment_score", "contradiction_score")
NO_SCORE = -1.0

# The reference's own alternative prompts (listed in its flan_generate_scoring.py), worded for a chat model: its
# default few-shot prompts made SmolLM2-135M copy an example sentence instead of rewriting the premise.
PROMPTS = {
    "entailment": "Paraphrase this sentence using different words, keeping its meaning. Answer with the new "
                  "sentence only.\nSentence: {}",
    "contradiction": "Change one or two details of this sentence so that it expresses an opposing meaning, keeping "
                     "its context and structure. Answer with the new sentence only.\nSentence: {}",
}
RATING_PROMPT = ("How similar in meaning are these two sentences, on a scale from 0 (unrelated) to 5 (the same "
                 "meaning)?\n(a) {}\n(b) {}")


def generation_prompt(premise: str, relation: str) -> str:
    """The prompt asking for the `relation` ("entailment" or "contradiction") of `premise`."""
    return PROMPTS[relation].format(premise.strip())


def clean_sentence(text: str) -> str:
    """The first line of an answer, without quotes or a leading label: the sentence the prompt asked for."""
    first = next((line.strip() for line in text.strip().splitlines() if line.strip()), "")
    first = re.sub(r"^(new sentence|sentence|answer|output|paraphrase)\s*:\s*", "", first, flags=re.IGNORECASE)
    return first.strip().strip("'\"`").strip()


# ---- the LM: two callables (write sentences, rate pairs), so tests pass fakes --------------------------------

Write = Callable[[Sequence[str], int], list[str]]
Rate = Callable[[Sequence[tuple[str, str]]], list[float]]


def _chat(tokenizer, prompt: str) -> str:
    """The prompt in the LM's chat template; a base LM without one (Gemma 3 270M's GGUF) gets it as plain text
    followed by a new line, to be continued."""
    if not getattr(tokenizer, "chat_template", None):
        return f"{prompt}\n"
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def chat_writer(model, tokenizer, seed: int = 0, temperature: float = 0.7) -> Write:
    """Sampled answers of a chat LM to a batch of prompts (left padding, new tokens only). Greedy decoding made
    SmolLM2-135M return the premise unchanged for most prompts; sampling is seeded per batch, so a rerun of the
    same premises writes the same rows."""
    import torch

    def write(prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        batch = tokenizer([_chat(tokenizer, p) for p in prompts], return_tensors="pt", padding=True)
        torch.manual_seed(seed + sum(map(len, prompts)))  # depends on the batch's content, not on its position
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                 temperature=temperature or None, top_p=0.9 if temperature > 0 else None,
                                 pad_token_id=tokenizer.pad_token_id)
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

    return write


def chat_rater(model, tokenizer) -> Rate:
    """The LM's rating of each pair: the expected digit under its next-token distribution over "0".."5" after
    "Score: ". The reference parses Flan-T5's generated number; SmolLM2-135M rarely answers with a number at all,
    and the expectation is defined for every pair (one forward pass, no decoding)."""
    import torch

    digits = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(6)]

    def rate(pairs: Sequence[tuple[str, str]]) -> list[float]:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        texts = [_chat(tokenizer, RATING_PROMPT.format(a, b)) + "Score: " for a, b in pairs]
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            probs = model(**batch).logits[:, -1, digits].float().softmax(-1)
        return (probs @ torch.arange(6, dtype=torch.float32)).tolist()

    return rate


# ---- stage 1: generate, append, resume -----------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationReport:
    rows: int  # rows in the file at the end
    generated: int  # rows written by this call (the rest were there from an earlier, interrupted call)
    seconds: float

    def premises_per_minute(self) -> float:
        return 60.0 * self.generated / self.seconds if self.seconds > 0 and self.generated else 0.0


def done_premises(path: Path) -> set[str]:
    """Premises already in the file; a trailing line a kill cut short (no newline) is removed first."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return set()
    raw = path.read_bytes()
    if not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(cut)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader, None)
        return {row[0] for row in reader if len(row) == len(HEADER)}


def generate_triplets(premises: Sequence[str], path: Path, write: Write, rate: Rate, batch_size: int = 4,
                      max_new_tokens: int = 40, progress: bool = True) -> GenerationReport:
    """Write one row per premise to `path`, skipping premises already there; flushed after every batch."""
    from paperline.ml.progress import bar

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = done_premises(path)
    wanted = list(dict.fromkeys(p.strip() for p in premises if p.strip()))
    todo = [p for p in wanted if p not in done]
    began, written = time.perf_counter(), 0
    new_file = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="", encoding="utf-8") as f, \
            bar(len(wanted), "generating triplets", unit="premise", initial=len(wanted) - len(todo),
                enabled=progress) as shown:
        writer = csv.writer(f, delimiter="\t")
        if new_file:
            writer.writerow(HEADER)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            answers = write([generation_prompt(p, r) for p in chunk for r in ("entailment", "contradiction")],
                            max_new_tokens)
            # an empty answer becomes the premise itself: a useless but well-formed row, which curation judges
            pairs = [(clean_sentence(answers[2 * i]) or p, clean_sentence(answers[2 * i + 1]) or p)
                     for i, p in enumerate(chunk)]
            ratings = rate([(p, s) for p, (e, c) in zip(chunk, pairs) for s in (e, c)])
            for i, (premise, (entailment, contradiction)) in enumerate(zip(chunk, pairs)):
                writer.writerow([premise, entailment, contradiction, f"{_score(ratings[2 * i]):.3f}",
                                 f"{_score(ratings[2 * i + 1]):.3f}"])
            f.flush()
            written += len(chunk)
            shown.update(len(chunk))
    return GenerationReport(rows=len(done_premises(path)), generated=written, seconds=time.perf_counter() - began)


def _score(value: float) -> float:
    return float(value) if 0.0 <= float(value) <= 5.0 else NO_SCORE


# ---- stage 2: self-curation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Triplet:
    anchor: str
    positive: str
    negative: str


def curate(rows, positive_min: float = 3.0, negative_max: float = 3.0, require_gap: bool = True,
           min_margin: float = 0.0) -> list[Triplet]:
    """The reference's threshold rule over `GeneratedTriplet` rows (see the module docstring); `min_margin` also
    asks the two ratings to differ by at least that much (0: the reference's rule)."""
    kept = []
    for row in rows:
        e, c = row.entailment_score, row.contradiction_score
        if e < 0 or c < 0:
            continue
        high, low = max(e, c), min(e, c)
        if high < positive_min or low > negative_max or (require_gap and e == c) or high - low < min_margin:
            continue
        # the better-rated sentence is the positive, as the reference orders each row when it writes it
        kept.append(Triplet(row.premise, row.entailment, row.contradiction) if e >= c
                    else Triplet(row.premise, row.contradiction, row.entailment))
    return kept


def uncurated(rows) -> list[Triplet]:
    return [Triplet(row.premise, row.entailment, row.contradiction) for row in rows]
