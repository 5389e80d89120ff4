"""`captioned_images`: a picture and its caption; clip art, stamps and emoji (`data/captioned_images`).

The first kind whose rows name files that are not text: the split is a TSV like every other kind's, and its
`image` column holds the path of a PNG relative to the dataset folder (`images/<source>/<id>.png`). The gate opens
every picture once per split (`derive`, below) and writes what it found into two columns, so that the picture
rules are ordinary GX expectations on those columns and their failures flow through the same report, naming the
offending file in the sample row.

Columns (tab-separated, header line): `image` and `caption` are required text; `title`, `keywords` (joined by
", "), `source`, `category` and `license` are optional, since another picture set may not have them. A method
reads `CaptionedImage(image, caption, source, title, keywords, category, license)` rows, `keywords` split into a
tuple and the optional fields None where empty; `CaptionedImage.path(folder)` gives the picture's absolute path.

Columns the gate derives (never in the file): `image_problem`, '' for a usable picture or `<what>: <detail>`
for the first problem found, and `image_hash`, the picture's perceptual hash (none for a picture with a
problem, so that one bad picture is one failure, not also a duplicate).

Rules, beyond the text checks on image and caption:

- The path stays inside the dataset folder: not absolute and no `..` part (`outside`). The check is on the text,
  not on the resolved file, so that a DVC checkout that links files into its cache (symlinks) still passes, and a
  row cannot make the gate or a method read a file elsewhere on the machine.
- The file exists (`missing`), is one of Pillow's formats and decodes to the end (`undecodable`: a truncated
  download or a half-written copy), each side is 32..1024 px (`size`; checked from the header before decoding,
  so a decompression bomb is refused unread; the set is 160x160), and its mode is RGB (`mode`; the builder
  composites transparency on white, so an RGBA or palette file is a picture that skipped the pipeline).
- Not blank (`blank`): at least 0.5% of the pixels differ from the picture's commonest colour, the rule the
  dataset's builder dropped 158 blank renderings by; the least varied real picture has 0.73%.
- Caption length: at most 1,000 characters; the longest real caption is 475 (an Openclipart description), and a
  contrastive image-text model reads a few dozen tokens anyway; a longer one is a lost delimiter.
- Duplicates and leakage are by picture, not by caption: the perceptual hash (`imagehash.phash`, 16x16 = 256 bits,
  on grey levels) compared exactly. That catches every copy with the same pixels (a copied file, a re-saved one with
  other bytes, which DVC's md5 tells apart), and about half of resized or re-compressed copies (measured on 300 test
  pictures: 57% of 128-px bicubic copies, 51% of JPEG q90 copies hash the same; a radius of 2 bits would catch
  86-89%). The 64-bit default hash cannot tell clip art apart (4.97% of real train rows "repeat", Qatar's flag
  matches Bahrain's), and a Hamming radius of 2 bits on the 256-bit hash already puts 1.10% of test in train,
  look-alike pictures from the same collections; the exact 256-bit hash finds 149 repeats in train (2.00%, nearly
  all Openclipart's "gramastar" stars, which differ only in their number of points), 5 in dev (0.34%), none in test,
  and 6 dev (0.41%) and 3 test (0.47%) pictures whose hash is also in train (the same look-alikes, e.g. Tux Paint's
  cartoon spiders). The limits are 3% within a split (those stars pass, a doubled split does not) and 1% across
  splits (an evaluation on pictures the model trained on measures recall).
- The captions are noisy on purpose (titles that name a collection, "gramastar" for 1,375 stars): the gate does
  not judge caption quality, only blank, over-long and non-text captions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from paperline.core.errors import BAD_DATA, PaperlineError
from paperline.data.kinds import ColumnCheck, DataKind, RowKey

PROBLEM_COLUMN = "image_problem"
HASH_COLUMN = "image_hash"
MODE = "RGB"
MIN_SIDE, MAX_SIDE = 32, 1024  # pixels, each side
BLANK_FRACTION = 0.005  # a picture with fewer pixels than this differing from its commonest colour is blank
HASH_SIZE = 16  # imagehash.phash's side: 16x16 = 256 bits (the default 8 cannot tell clip art apart)
THUMBNAIL = 64  # pixels, the longest side of a picture in the gate's HTML report
KEYWORD_SEPARATOR = ", "

# What `image_problem` starts with, and the gate's phrase for it; one expectation each, so a report line says
# which rule a picture broke.
PROBLEMS = {
    "outside": "image path leaves the dataset folder",
    "missing": "image file does not exist",
    "undecodable": "image file does not decode",
    "size": f"image side outside {MIN_SIDE}..{MAX_SIDE} px",
    "mode": f"image mode is not {MODE}",
    "blank": "image is blank",
}


class ImagePathError(PaperlineError, ValueError):
    """A row's image path that leaves its dataset folder (absolute, or with a `..` part)."""

    exit_code = BAD_DATA


@dataclass(frozen=True)
class CaptionedImage:
    image: str  # the picture's path relative to the dataset folder, as in the file
    caption: str
    source: str | None = None
    title: str | None = None
    keywords: tuple[str, ...] = ()
    category: str | None = None
    license: str | None = None

    def path(self, folder: Path) -> Path:
        """The picture's absolute path under the dataset folder `folder` (`DatasetRef.path`)."""
        return resolve_image(folder, self.image)


def resolve_image(folder: Path, image: str) -> Path:
    """`image` (relative to the dataset folder) as an absolute path under `folder`; a path that would leave the
    folder is one `ImagePathError` line. Symlinks are not followed: see the module's rules."""
    problem = path_problem(image)
    if problem:
        raise ImagePathError(f"image path '{image}' {problem.partition(': ')[2]}; image paths are relative to "
                             f"the dataset folder {folder} and stay inside it")
    return Path(folder).absolute() / PurePosixPath(image)


def path_problem(image: str) -> str | None:
    """`outside: ...` for a path that leaves the dataset folder, None for one that stays inside it."""
    posix = PurePosixPath(image.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(image).drive:
        return "outside: is absolute"
    if ".." in posix.parts:
        return "outside: has a '..' part"
    return None


# ---- what the gate derives from the files ----------------------------------------------------------------


def derive(frame, folder: Path):
    """`frame` with `image_problem` and `image_hash` for each row, from the picture its `image` names.

    Pictures are opened on a bounded thread pool: Pillow's decoders and resizing release the GIL, and the
    9,554 pictures of the real set take about 5 s on two busy cores (bench/image_gate.py)."""
    if "image" not in frame.columns:
        return frame  # the gate reports the missing column once
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="image-gate") as pool:
        found = list(pool.map(lambda image: inspect_image(Path(folder), image), frame["image"]))
    return frame.assign(**{PROBLEM_COLUMN: [problem for problem, _ in found],
                           HASH_COLUMN: [digest for _, digest in found]})


def inspect_image(folder: Path, image) -> tuple[str, str | None]:
    """(problem, perceptual hash) of one row's picture: ('', hash) when usable, ('<what>: <detail>', None) when
    not. A blank or missing cell is ('', None): the text checks report it, once."""
    if not isinstance(image, str) or not image.strip():
        return "", None
    problem = path_problem(image)
    if problem:
        return problem, None
    path = Path(folder) / PurePosixPath(image)
    if not path.is_file():
        return "missing: no such file", None
    picture, problem = _decoded(path)
    if picture is None:
        return problem, None
    blank = _blank_problem(picture)
    return (blank, None) if blank else ("", _hash(picture))


def _decoded(path: Path):
    """(the decoded picture, '') or (None, problem); size and mode are read from the header before decoding."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            width, height = picture.size
            if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
                return None, f"size: {width}x{height} px"
            if picture.mode != MODE:
                return None, f"mode: {picture.mode}"
            picture.load()  # the pixels stay in memory after the file is closed
            return picture, ""
    # Pillow raises many types for a broken file (OSError, SyntaxError, EOFError, ValueError, struct and zlib
    # errors, DecompressionBombError); to the gate they all mean the file does not decode.
    except Exception as error:  # noqa: BLE001
        return None, f"undecodable: {_one_line(error)}"


def _blank_problem(picture) -> str | None:
    pixels = picture.width * picture.height
    # A blank picture has at most (BLANK_FRACTION * pixels) pixels besides its commonest colour, so at most one
    # more colour than that: Pillow stops counting (and returns None) past it, which spares the count on the
    # many-coloured pictures that make up nearly all of a real set.
    colors = picture.getcolors(maxcolors=int(BLANK_FRACTION * pixels) + 1)
    if colors is None:
        return None
    varied = 1.0 - max(count for count, _ in colors) / pixels
    if varied < BLANK_FRACTION:
        return f"blank: {varied:.2%} of the pixels differ from the commonest colour, under {BLANK_FRACTION:.1%}"
    return None


def _hash(picture) -> str:
    import imagehash
    import numpy as np

    # The hex of the hash's bits, as str(ImageHash) writes it, without its bit-by-bit string building.
    return np.packbits(imagehash.phash(picture, hash_size=HASH_SIZE).hash).tobytes().hex()


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]


def _workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def expectations(E, split: str, frame) -> list[ColumnCheck]:
    if PROBLEM_COLUMN not in frame.columns:
        return []
    return [ColumnCheck(PROBLEM_COLUMN, E.ExpectColumnValuesToNotMatchRegex(column=PROBLEM_COLUMN, regex=f"^{what}:"),
                        phrase) for what, phrase in PROBLEMS.items()]


def preview(row: dict, folder: Path) -> str | None:
    """A thumbnail of the row's picture as a `data:` URI for the HTML report; None when it cannot be shown."""
    import base64
    import io

    image = row.get("image")
    if not isinstance(image, str) or path_problem(image) or not image.strip():
        return None
    from PIL import Image

    try:
        with Image.open(Path(folder) / PurePosixPath(image)) as picture:
            if max(picture.size) > MAX_SIDE:  # never decode a huge file for a thumbnail
                return None
            picture.thumbnail((THUMBNAIL, THUMBNAIL))
            buffer = io.BytesIO()
            picture.convert("RGB").save(buffer, "PNG", optimize=True)
    except Exception:  # noqa: BLE001  (missing or broken: the report says so in words)
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ---- typed rows --------------------------------------------------------------------------------------------


def rows(frame) -> list[CaptionedImage]:
    size = len(frame)

    def column(name: str):
        return frame[name] if name in frame.columns else [None] * size

    return [
        CaptionedImage(image, caption, _text(source), _text(title), _keywords(keywords), _text(category),
                       _text(license_))
        for image, caption, source, title, keywords, category, license_ in zip(
            frame["image"], frame["caption"], column("source"), column("title"), column("keywords"),
            column("category"), column("license"))
    ]


def _text(value) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _keywords(value) -> tuple[str, ...]:
    if not isinstance(value, str):
        return ()
    return tuple(part.strip() for part in value.split(KEYWORD_SEPARATOR) if part.strip())


KIND = DataKind(
    name="captioned_images",
    columns=("image", "caption"),
    text_columns=("image", "caption"),
    row_type=CaptionedImage,
    rows=rows,
    key=RowKey("image", (HASH_COLUMN,), label="picture (perceptual hash)"),
    derive=derive,
    derived_columns=(PROBLEM_COLUMN, HASH_COLUMN),
    expectations=expectations,
    preview=preview,
    max_duplicate_fraction=0.03,
    max_leakage_fraction=0.01,
    max_text_length=1_000,
    corpus_text="caption",
    corpus_label="image",
)
