"""Character-level noise: typos, letter swaps and look-alike characters, seeded and deterministic.

Pixel-Linguist (Xiao et al., "Pixel Sentence Representation Learning", arXiv 2402.08183), after PIXEL (Rust et al.,
"Language Modelling with Pixels", ICLR 2023, arXiv 2207.06991), claims that a sentence encoder reading rendered
pixels is more robust than a subword model to orthographic noise: a typo, two swapped letters or a visually similar
character ("0" for "o", Cyrillic "а" for Latin "a") changes a few pixels of the picture, but splits a word into
unrelated subword tokens. The `pixel_linguist` project measures the claim by scoring STS-B test with this noise
applied to both sentences, for the pixel model and for MiniLM on the same noisy text.

The three kinds, each applied to the characters it can change (its *eligible* characters), so that `rate` is the
expected fraction of those characters that end up different:

- `typos`: an ASCII letter replaced by a neighbour on a QWERTY keyboard (case kept): the usual typing slip.
- `swaps`: two adjacent, different letters inside a word transposed ("form" -> "from"); spaces, punctuation and
  the word count stay. Each swap changes two letters, so swaps are drawn at half the rate.
- `lookalikes`: a character replaced by one that looks alike: digits ("o"->"0", "l"->"1"), accented letters
  ("e"->"é", "a"->"à") and homoglyphs from Cyrillic and Greek ("a"->"а" U+0430, "o"->"ο" U+03BF), the last
  drawing the same pixels in DejaVu Sans while being different code points to a tokenizer.

`noisy(text, kind, rate, seed)` is a pure function of its arguments: the generator is seeded by sha256(kind, rate,
seed, text), so a sentence gets the same noise in every run, process and order of evaluation (Python's `random`
seeded from bytes, stable across versions and independent of PYTHONHASHSEED).
"""

from __future__ import annotations

import hashlib
import random

from paperline.core.errors import UsageError

KINDS = ("typos", "swaps", "lookalikes")

_QWERTY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    """Each lower-case letter -> the letters next to it on a QWERTY keyboard (same row and the rows above and
    below, offset as on a real keyboard: each row starts about half a key to the right of the one above)."""
    position = {char: (row, col + 0.5 * row) for row, keys in enumerate(_QWERTY_ROWS) for col, char in enumerate(keys)}
    neighbours = {}
    for char, (row, x) in position.items():
        near = [other for other, (r, ox) in position.items()
                if other != char and abs(r - row) <= 1 and abs(ox - x) <= (1.0 if r == row else 0.5)]
        neighbours[char] = "".join(sorted(near))
    return neighbours


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()

# character -> characters that look like it (digits, accented Latin letters, Cyrillic and Greek homoglyphs)
LOOKALIKES: dict[str, str] = {
    "a": "àáâäа",  # last: Cyrillic а U+0430
    "c": "çс",  # Cyrillic с U+0441
    "e": "éèêëе",  # Cyrillic е U+0435
    "i": "1íìïі",  # Ukrainian і U+0456
    "l": "1|",
    "o": "0òóöοо",  # Greek ο U+03BF, Cyrillic о U+043E
    "p": "р",  # Cyrillic р U+0440
    "s": "5ѕ",  # Cyrillic ѕ U+0455
    "u": "ùúüυ",  # Greek υ U+03C5
    "x": "х",  # Cyrillic х U+0445
    "y": "ýу",  # Cyrillic у U+0443
    "n": "ñ",
    "A": "ÀÁ4А",  # Cyrillic А U+0410
    "B": "8В",  # Cyrillic В U+0412
    "C": "ÇС",  # Cyrillic С U+0421
    "E": "ÉÈ3Е",  # Cyrillic Е U+0415
    "H": "Н",  # Cyrillic Н U+041D
    "I": "1l|І",  # Ukrainian І U+0406
    "K": "К",  # Cyrillic К U+041A
    "M": "М",  # Cyrillic М U+041C
    "O": "0ÖО",  # Cyrillic О U+041E
    "P": "Р",  # Cyrillic Р U+0420
    "S": "5Ѕ",  # Cyrillic Ѕ U+0405
    "T": "7Т",  # Cyrillic Т U+0422
    "X": "Х",  # Cyrillic Х U+0425
    "Z": "2",
}


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise UsageError(f"noise rate {rate} is outside [0, 1]; give the fraction of characters to change")


def _substitute(text: str, rate: float, rng: random.Random, options: dict[str, str]) -> str:
    """Each character that has options is replaced, with probability `rate`, by one of them drawn uniformly."""
    _check_rate(rate)
    chars = list(text)
    for i, char in enumerate(chars):
        choices = options.get(char)
        if choices and rng.random() < rate:
            chars[i] = rng.choice(choices)
    return "".join(chars)


_TYPO_OPTIONS = {**KEYBOARD_NEIGHBOURS, **{c.upper(): n.upper() for c, n in KEYBOARD_NEIGHBOURS.items()}}


def typos(text: str, rate: float, rng: random.Random) -> str:
    """Each ASCII letter, with probability `rate`, replaced by a QWERTY neighbour of the same case."""
    return _substitute(text, rate, rng, _TYPO_OPTIONS)


def lookalikes(text: str, rate: float, rng: random.Random) -> str:
    """Each character of `LOOKALIKES`, with probability `rate`, replaced by a visually similar one."""
    return _substitute(text, rate, rng, LOOKALIKES)


def swaps(text: str, rate: float, rng: random.Random) -> str:
    """Adjacent, different letters inside words transposed, about `rate` of the letters changed in all.

    The number of swaps is Binomial(letters, rate / 2) (each swap changes two letters), placed at random among the
    pairs of adjacent different letters, never two swaps sharing a letter; a short text with few such pairs gets
    fewer. Spaces, punctuation and word boundaries stay where they were.
    """
    _check_rate(rate)
    chars = list(text)
    letters = sum(c.isalpha() for c in chars)
    wanted = sum(rng.random() < rate / 2 for _ in range(letters))
    if wanted == 0:
        return text
    pairs = [i for i in range(len(chars) - 1)
             if chars[i].isalpha() and chars[i + 1].isalpha() and chars[i] != chars[i + 1]]
    rng.shuffle(pairs)
    used: set[int] = set()
    done = 0
    for i in pairs:
        if done == wanted:
            break
        if i in used or i + 1 in used:
            continue
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
        used.update((i, i + 1))
        done += 1
    return "".join(chars)


_FUNCTIONS = {"typos": typos, "swaps": swaps, "lookalikes": lookalikes}


def noisy(text: str, kind: str, rate: float, seed: int = 0) -> str:
    """`text` with noise of `kind` ("typos", "swaps" or "lookalikes") at `rate`; the same for the same
    (text, kind, rate, seed), whatever else ran before."""
    function = _FUNCTIONS.get(kind)
    if function is None:
        raise UsageError(f"unknown noise kind {kind!r}; use one of {', '.join(KINDS)}")
    digest = hashlib.sha256(f"{kind}\x00{rate!r}\x00{seed}\x00{text}".encode("utf-8")).digest()
    return function(text, rate, random.Random(digest))


def changed_fraction(original: str, noisy_text: str, kind: str) -> tuple[int, int]:
    """(characters changed, characters eligible for `kind`) between `original` and its noisy version (same length,
    as all three kinds keep it): summed over a corpus, their ratio is the measured rate."""
    if len(original) != len(noisy_text):
        raise ValueError("the noisy text must have the original's length")
    if kind == "typos":
        eligible = sum(c in _TYPO_OPTIONS for c in original)
    elif kind == "lookalikes":
        eligible = sum(c in LOOKALIKES for c in original)
    elif kind == "swaps":
        eligible = sum(c.isalpha() for c in original)
    else:
        raise UsageError(f"unknown noise kind {kind!r}; use one of {', '.join(KINDS)}")
    return sum(a != b for a, b in zip(original, noisy_text)), eligible
