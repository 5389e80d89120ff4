"""Character-level noise for the robustness claim of pixel-based encoders (paperline.ml.char_noise): seeded and
deterministic, identity at rate 0, and the rate it is asked for is the rate measured on STS-B sentences."""

from __future__ import annotations

import random

import pytest

from paperline.core.errors import UsageError
from paperline.data.datasets import read_frame
from paperline.ml import char_noise
from paperline.ml.char_noise import KEYBOARD_NEIGHBOURS, KINDS, LOOKALIKES, changed_fraction, noisy

SENTENCE = "A woman is slicing an onion, and the man plays a flute."


@pytest.fixture(scope="module")
def stsb_sentences(pulled_data):
    frame = read_frame(pulled_data.path / "stsb" / "test.tsv", "scored_pairs")
    return list(frame.sentence1) + list(frame.sentence2)


@pytest.mark.parametrize("kind", KINDS)
def test_noise_is_deterministic_per_text_and_seed(kind):
    once = noisy(SENTENCE, kind, 0.3, seed=7)
    assert once == noisy(SENTENCE, kind, 0.3, seed=7)
    noisy("something else entirely", kind, 0.3, seed=7)  # what ran before does not matter
    assert once == noisy(SENTENCE, kind, 0.3, seed=7)
    assert once != SENTENCE
    outcomes = {noisy(SENTENCE, kind, 0.3, seed=s) for s in range(10)}
    assert len(outcomes) > 5  # other seeds, other noise
    function = getattr(char_noise, kind)
    assert function(SENTENCE, 0.3, random.Random(1)) == function(SENTENCE, 0.3, random.Random(1))


@pytest.mark.parametrize("kind", KINDS)
def test_rate_zero_is_the_identity(kind):
    for seed in range(5):
        assert noisy(SENTENCE, kind, 0.0, seed) == SENTENCE
    assert noisy("", kind, 0.5, 0) == ""


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rate", [0.05, 0.2])
def test_measured_fraction_of_changed_characters_is_near_the_rate(stsb_sentences, kind, rate):
    changed = eligible = 0
    for i, sentence in enumerate(stsb_sentences):
        out = noisy(sentence, kind, rate, seed=i)
        assert len(out) == len(sentence)  # all three kinds replace, none inserts or deletes
        c, e = changed_fraction(sentence, out, kind)
        changed, eligible = changed + c, eligible + e
    assert eligible > 50_000
    # 2,758 sentences (~118k letters): measured within 2.5 % of the rate for every kind at 0.05 to 0.3 (sampling
    # error about 1-2 %); swaps can run short where a sentence has fewer swappable pairs than swaps drawn.
    assert changed / eligible == pytest.approx(rate, rel=0.1), f"{kind} at {rate}: {changed / eligible:.4f}"


def test_swaps_keep_spaces_punctuation_and_the_word_count(stsb_sentences):
    for i, sentence in enumerate(stsb_sentences[:500]):
        out = noisy(sentence, "swaps", 0.3, seed=i)
        assert len(out.split()) == len(sentence.split())
        assert [j for j, c in enumerate(out) if not c.isalpha()] == [j for j, c in enumerate(sentence)
                                                                      if not c.isalpha()]
        assert sorted(out) == sorted(sentence)  # a permutation of the same letters
        for a, b in zip(sentence.split(), out.split()):
            assert sorted(a) == sorted(b)  # letters never move between words


def test_typos_are_keyboard_neighbours_of_the_same_case():
    out = noisy("The Quick brown fox", "typos", 1.0, seed=3)
    for a, b in zip("The Quick brown fox", out):
        if a == " ":
            assert b == " "
            continue
        assert b in KEYBOARD_NEIGHBOURS[a.lower()].upper() if a.isupper() else b in KEYBOARD_NEIGHBOURS[a]
    assert "s" in KEYBOARD_NEIGHBOURS["a"] and "q" in KEYBOARD_NEIGHBOURS["a"] and "p" not in KEYBOARD_NEIGHBOURS["a"]
    assert all(a in KEYBOARD_NEIGHBOURS[b] for a, ns in KEYBOARD_NEIGHBOURS.items() for b in ns)  # symmetric


def test_lookalikes_include_digits_accents_and_homoglyphs():
    outs = {noisy("oleaaaa", "lookalikes", 1.0, seed=s) for s in range(200)}
    seen = set("".join(outs))
    assert {"0", "1", "é", "à", "\u0430"} <= seen  # o->0, l->1, e->é, a->à, a->Cyrillic а
    for original, options in LOOKALIKES.items():
        assert original not in options
    assert noisy("1234 !?", "lookalikes", 1.0, seed=0) == "1234 !?"  # nothing eligible, nothing changed


def test_bad_kind_or_rate_is_one_clear_error():
    with pytest.raises(UsageError, match="use one of typos, swaps, lookalikes"):
        noisy(SENTENCE, "deletions", 0.1)
    with pytest.raises(UsageError, match=r"outside \[0, 1\]"):
        noisy(SENTENCE, "typos", 1.5)
