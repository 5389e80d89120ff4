"""Sentences rendered to pixels, deterministically and cached: the input of a pixel-based sentence encoder.

Pixel-based language models read text as an image instead of a sequence of subword ids: PIXEL (Rust et al.,
"Language Modelling with Pixels", ICLR 2023, arXiv 2207.06991) renders text with a font into a strip of 16x16
patches, and Pixel-Linguist (Xiao et al., "Pixel Sentence Representation Learning", arXiv 2402.08183) trains such
an encoder for sentence similarity and shows it robust to typos and visually similar characters, since a near-miss
spelling stays a near-miss picture (`paperline.ml.char_noise` makes that noise). The `pixel_linguist` project
feeds these images to EfficientNet-Lite0 (`paperline.ml.image_encoder`).

The layout, and why:

- 160x160 RGB, black text on white, left-aligned from the top, DejaVu Sans 13 px, 16 px per line, a 4 px margin:
  9 lines of at most 152 px (about 25 characters). A square with wrapped lines, not PIXEL's 16 px high strip,
  because the encoder is a CNN pretrained on square photos that pools a 5x5 grid of 32-pixel cells at 160x160: a
  16x8000 strip would leave it a 1-pixel-high feature map. 160 rather than the native 224 cuts the encoder's
  cost on a CPU to a third (9 ms against 26-30 ms an image, features of a batch of 32, 1 thread) and is the size
  of the data set's images, so both image projects share one input size. 13 px (PIXEL's lines are 16 px high too)
  keeps lower-case letters about 7 px high, 3-4 px after the stem's stride 2, while 9 lines still hold all but
  the longest STS-B sentences (below); a smaller font would fit more text into pixels the network can resolve
  less well.
- Wrapping: the text is NFC-normalised (a composed and a decomposed "é" give one picture), split on whitespace
  (runs of spaces, tabs and newlines become one space), and filled greedily word by word by rendered width; a word
  wider than a line is broken between characters.
- Truncation: what does not fit in 9 lines is cut; the 9th line then ends with "…" (characters are dropped from
  its end until the ellipsis fits), so a truncated picture says so. `layout(text)` returns the lines and whether
  the text was truncated. On STS-B test 0.4 % of the sentences are truncated (12 of 2,758).
- Determinism: Pillow's BASIC layout engine (no HarfBuzz/raqm, whose presence varies between machines; no complex
  shaping, which English STS data does not need), a fixed font file, grey-level antialiasing drawn in mode "L" and
  copied to three channels. The same text gives identical bytes; the cache key also holds the font file's sha256
  and Pillow's version, so an upgrade never serves a stale picture. Characters the font lacks (many emoji, CJK)
  render as DejaVu's replacement box: deterministic, no crash.
- Caches: an in-memory LRU of the grey pictures (25.6 kB each; 4,096 by default, ~105 MB), and optionally a
  folder of PNGs (about 1.2 kB each) named by sha256(normalised text, fingerprint). Reading a PNG back is about
  twice as fast as drawing it (below) and the folder is shared between processes and runs; either way the
  renderer is not the bottleneck: EfficientNet-Lite0 encodes about 90 pictures a second on one CPU thread.

Speed (one process on 2 shared CPU cores, Pillow 13.0, the first 1,000 sentences of STS-B test;
`python -m paperline.ml.text_render data/stsb/test.tsv`, two runs agreeing within 2 %):

    render_batch, nothing cached:              3,822 renders/s
    render_batch, from the in-memory LRU:     38,048 renders/s
    render_batch, from the PNG folder:         8,710 renders/s

The font must be installed: Debian's `fonts-dejavu-core` (`/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf`).
Nothing is read at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from paperline.core.errors import PaperlineError

FONT_PACKAGE = "fonts-dejavu-core"
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
ELLIPSIS = "…"


class FontMissingError(PaperlineError):
    """The renderer's font is not installed; the message names the Debian package."""


@dataclass(frozen=True)
class RenderSettings:
    """How a sentence becomes a picture; every field is part of the cache key."""

    width: int = 160
    height: int = 160
    font: str = "DejaVuSans.ttf"  # a file name searched in FONT_DIRS, or a path
    font_size: int = 13
    line_height: int = 16
    margin: int = 4

    @property
    def max_lines(self) -> int:
        return max(1, (self.height - 2 * self.margin) // self.line_height)

    @property
    def line_width(self) -> int:
        return self.width - 2 * self.margin


@lru_cache(maxsize=None)
def find_font(name: str = "DejaVuSans.ttf") -> Path:
    """The font file: `name` itself if it is an existing path, else the first `name` under the usual font folders
    (Debian's `/usr/share/fonts/truetype/dejavu/` first). A FontMissingError naming fonts-dejavu-core if none."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    debian = Path("/usr/share/fonts/truetype/dejavu") / name
    if debian.is_file():
        return debian
    for folder in FONT_DIRS:
        root = Path(folder).expanduser()
        if root.is_dir():
            for found in sorted(root.rglob(name)):
                if found.is_file():
                    return found
    raise FontMissingError(f"font {name} not found under {', '.join(FONT_DIRS)}; install the Debian package "
                           f"{FONT_PACKAGE} (`apt-get install {FONT_PACKAGE}`) or set the renderer's font to a path")


@lru_cache(maxsize=None)
def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def normalize(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, stripped: what is rendered and what the cache is keyed by."""
    return " ".join(unicodedata.normalize("NFC", text).split())


class TextRenderer:
    """Renders sentences to fixed-size pictures (see the module docstring for the layout) with an LRU cache and an
    optional on-disk cache of PNGs under `cache_dir`."""

    def __init__(self, settings: RenderSettings | None = None, cache_size: int = 4096,
                 cache_dir: str | Path | None = None):
        from PIL import ImageFont

        self.settings = settings or RenderSettings()
        self.font_path = find_font(self.settings.font)
        self.font = ImageFont.truetype(str(self.font_path), self.settings.font_size,
                                       layout_engine=ImageFont.Layout.BASIC)
        self.cache_size = cache_size
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.disk_hits = 0
        import PIL

        self.fingerprint = json.dumps({**asdict(self.settings), "font": self.font_path.name,
                                       "font_sha256": _file_sha256(self.font_path), "pillow": PIL.__version__,
                                       "layout": "basic", "version": 1}, sort_keys=True)

    # ---- layout ---------------------------------------------------------------------------------------------

    def _fits(self, line: str) -> bool:
        return self.font.getlength(line) <= self.settings.line_width

    def _break_word(self, word: str) -> list[str]:
        """A word wider than a line, cut between characters into pieces that fit (at least one character each)."""
        pieces, current = [], ""
        for char in word:
            if current and not self._fits(current + char):
                pieces.append(current)
                current = char
            else:
                current += char
        return pieces + [current] if current else pieces

    def layout(self, text: str) -> tuple[list[str], bool]:
        """The lines drawn for `text` and whether it was truncated (the last line then ends with "…")."""
        max_lines = self.settings.max_lines
        lines: list[str] = []
        current = ""
        truncated = False
        for word in normalize(text).split(" "):
            if not word:
                continue
            candidate = f"{current} {word}" if current else word
            if self._fits(candidate):
                current = candidate
                continue
            pieces = [word] if self._fits(word) else self._break_word(word)
            if current:
                lines.append(current)
            lines.extend(pieces[:-1])
            current = pieces[-1]
            if len(lines) >= max_lines:
                truncated = True
                break
        if not truncated and current:
            lines.append(current)
        if len(lines) > max_lines or truncated:
            truncated = True
            lines = lines[:max_lines]
            last = lines[-1]
            while last and not self._fits(last + ELLIPSIS):
                last = last[:-1]
            lines[-1] = last.rstrip() + ELLIPSIS
        return lines, truncated

    # ---- drawing and caching --------------------------------------------------------------------------------

    def _draw(self, text: str) -> np.ndarray:
        from PIL import Image, ImageDraw

        s = self.settings
        image = Image.new("L", (s.width, s.height), 255)
        draw = ImageDraw.Draw(image)
        draw.fontmode = "L"  # grey-level antialiasing, the same on every machine
        for i, line in enumerate(self.layout(text)[0]):
            draw.text((s.margin, s.margin + i * s.line_height), line, fill=0, font=self.font)
        array = np.asarray(image, dtype=np.uint8).copy()
        array.flags.writeable = False
        return array

    def key(self, text: str) -> str:
        """sha256 of the normalised text and the renderer's fingerprint (settings, font file, Pillow version)."""
        payload = json.dumps([normalize(text), self.fingerprint], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _disk_path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / key[:2] / f"{key}.png"

    def _from_disk(self, key: str) -> np.ndarray | None:
        from PIL import Image

        path = self._disk_path(key)
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("L"), dtype=np.uint8).copy()
        except (FileNotFoundError, OSError):
            return None  # absent, or half written by a killed process: render again
        if array.shape != (self.settings.height, self.settings.width):
            return None
        array.flags.writeable = False
        return array

    def _to_disk(self, key: str, array: np.ndarray) -> None:
        from PIL import Image

        path = self._disk_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        Image.fromarray(array, mode="L").save(tmp, format="PNG")
        os.replace(tmp, path)  # atomic: a reader sees the whole picture or none

    def gray(self, text: str) -> np.ndarray:
        """(H, W) uint8 read-only picture of `text` (255 white, 0 black), from the caches when there."""
        memo = normalize(text)
        with self._lock:
            cached = self._cache.get(memo)
            if cached is not None:
                self._cache.move_to_end(memo)
                self.hits += 1
                return cached
        array = None
        if self.cache_dir is not None:
            key = self.key(memo)
            array = self._from_disk(key)
            if array is not None:
                self.disk_hits += 1
            else:
                array = self._draw(memo)
                self._to_disk(key, array)
        else:
            array = self._draw(memo)
        with self._lock:
            self.misses += 1
            if self.cache_size > 0:
                self._cache[memo] = array
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return array

    def render(self, text: str) -> Any:
        """The picture of `text` as a PIL RGB image (black text on white)."""
        from PIL import Image

        return Image.fromarray(self.gray(text), mode="L").convert("RGB")

    def render_batch(self, texts: Sequence[str]) -> np.ndarray:
        """(B, H, W, 3) uint8 pictures of `texts` (what `image_encoder.pixels_to_tensor` takes)."""
        s = self.settings
        out = np.empty((len(texts), s.height, s.width, 3), dtype=np.uint8)
        if len(texts):
            grays = np.stack([self.gray(text) for text in texts])
            for channel in range(3):  # 3 plain copies: twice as fast as one broadcast into the last axis
                out[..., channel] = grays
        return out

    def cache_clear(self) -> None:
        """Empty the in-memory cache (the disk cache stays) and reset the counters."""
        with self._lock:
            self._cache.clear()
            self.hits = self.misses = self.disk_hits = 0


@lru_cache(maxsize=1)
def default_renderer() -> TextRenderer:
    """The renderer with default settings, made on first use (no font is read at import time)."""
    return TextRenderer()


def render(text: str) -> Any:
    """`text` as a 160x160 PIL RGB image with the default settings (see the module docstring)."""
    return default_renderer().render(text)


def render_batch(texts: Sequence[str]) -> np.ndarray:
    """(B, 160, 160, 3) uint8 pictures of `texts` with the default settings."""
    return default_renderer().render_batch(texts)


def _benchmark(tsv: str, n: int = 1000) -> None:  # python -m paperline.ml.text_render data/stsb/test.tsv
    import csv
    import tempfile
    import time

    with open(tsv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    sentences = [row[column] for row in rows for column in ("sentence1", "sentence2")]
    batch = sentences[:n]
    with tempfile.TemporaryDirectory() as folder:
        renderer = TextRenderer(cache_size=len(sentences) + 1)
        t0 = time.perf_counter()
        renderer.render_batch(batch)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        renderer.render_batch(batch)
        warm = time.perf_counter() - t0
        TextRenderer(cache_dir=folder).render_batch(batch)  # fill the folder
        disk_renderer = TextRenderer(cache_dir=folder)
        t0 = time.perf_counter()
        disk_renderer.render_batch(batch)
        disk = time.perf_counter() - t0
        assert disk_renderer.disk_hits == len(set(map(normalize, batch)))
    truncated = sum(renderer.layout(s)[1] for s in sentences)
    print(f"render_batch, nothing cached:         {len(batch) / cold:10,.0f} renders/s")
    print(f"render_batch, from the in-memory LRU: {len(batch) / warm:10,.0f} renders/s")
    print(f"render_batch, from the PNG folder:    {len(batch) / disk:10,.0f} renders/s")
    print(f"truncated: {truncated} of {len(sentences)} sentences ({100 * truncated / len(sentences):.1f} %)")


if __name__ == "__main__":
    import sys

    _benchmark(sys.argv[1] if len(sys.argv) > 1 else "data/stsb/test.tsv")
