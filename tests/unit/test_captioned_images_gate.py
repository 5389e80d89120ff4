"""The `captioned_images` kind and its data gate, on a tiny picture set built in a temporary folder with Pillow.

Each bad input a picture set can bring (a truncated PNG, a missing file, a row without a picture, a picture copied
from test into train, a blank picture, a path that leaves the dataset folder, ...) must be exactly one gate line
naming the file, and `paperline data validate` must exit 3 on it. The real set passing is in
tests/flows/test_captioned_images_data.py (it needs the DVC data).
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from paperline.cli import main
from paperline.core.errors import BAD_DATA
from paperline.core.settings import Settings
from paperline.data.datasets import DataVersion, DatasetRef, read_split
from paperline.data.kinds import get_kind
from paperline.data.kinds.captioned_images import CaptionedImage, ImagePathError, inspect_image, resolve_image
from paperline.data.quality import gate_files, gate_splits, read_split_file
from paperline.project.dataset_readers import DatasetReaders, gate_read_datasets

KIND = "captioned_images"
ROWS = {"train": 4, "dev": 2, "test": 2}
COLUMNS = ("image", "caption", "keywords", "source")


def picture(seed: int, size: tuple[int, int] = (160, 160)) -> Image.Image:
    """A 160x160 RGB picture of random coloured blocks: distinct perceptual hashes for distinct seeds."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(blocks, "RGB").resize(size, Image.Resampling.NEAREST)


def build_set(root: Path) -> Path:
    """data/captioned_images with train/dev/test TSVs and one PNG per row; returns the dataset folder."""
    folder = root / "data" / KIND
    (folder / "images" / "synthetic").mkdir(parents=True)
    seed = 0
    for split, count in ROWS.items():
        rows = []
        for index in range(count):
            image = f"images/synthetic/{split}_{index}.png"
            picture(seed).save(folder / image)
            seed += 1
            rows.append([image, f"{split} picture {index}", "blocks, colours", "synthetic"])
        write_rows(folder, split, rows)
    return folder


def read_rows(folder: Path, split: str) -> list[list[str]]:
    with (folder / f"{split}.tsv").open(newline="") as f:
        return list(csv.reader(f, delimiter="\t"))[1:]


def write_rows(folder: Path, split: str, rows: list[list[str]]) -> None:
    with (folder / f"{split}.tsv").open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(COLUMNS)
        writer.writerows(rows)


def set_cell(folder: Path, split: str, row: int, column: str, value: str) -> None:
    rows = read_rows(folder, split)
    rows[row][COLUMNS.index(column)] = value
    write_rows(folder, split, rows)


def validate(root: Path, monkeypatch, capsys) -> tuple[int, list[str]]:
    """`paperline data validate` on root/data as a user runs it (no project card reads the set: the folder is
    gated as the kind it is named after), with the DVC version check left out; (exit code, stdout lines)."""
    import paperline.cli.data as cli_data
    import paperline.data.datasets as datasets

    version = DataVersion(md5="synthetic.dir", path=root / "data", nfiles=None, pulled=False)
    monkeypatch.setattr(datasets, "resolve_data_version", lambda _root: version)
    monkeypatch.setattr(cli_data, "workspace_settings", lambda: Settings.from_env(root))
    code = main(["data", "validate"])
    return code, capsys.readouterr().out.strip().splitlines()


def one_failure(root: Path, monkeypatch, capsys) -> str:
    code, lines = validate(root, monkeypatch, capsys)
    assert code == BAD_DATA and len(lines) == 1, lines
    return lines[0]


def row_shown(folder: Path, split: str, row: int, problem: str, digest: str | None) -> str:
    """A sample row as a gate line shows it: the file's columns, then the two the gate derived."""
    image, caption, keywords, source = read_rows(folder, split)[row]
    hashed = "null" if digest is None else f'"{digest}"'
    return (f'{{"image": "{image}", "caption": "{caption}", "keywords": "{keywords}", "source": "{source}", '
            f'"image_problem": "{problem}", "image_hash": {hashed}}}')


@pytest.fixture
def tiny(tmp_path) -> Path:
    return build_set(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# A clean set


def test_a_clean_set_passes_and_reads_as_typed_rows(tiny, monkeypatch, capsys):
    code, lines = validate(tiny.parents[1], monkeypatch, capsys)
    assert code == 0, lines
    # 18 per split (row count, 2 columns, 4 text checks on each of image and caption, 6 picture rules,
    # duplicates) + 2 leakage checks.
    assert lines == ["captioned_images: passed: 56 expectations on splits dev (2 rows), test (2 rows), "
                     "train (4 rows)"]
    rows = read_split(DatasetRef(KIND, KIND, tiny, "-"), "train")
    assert rows[0] == CaptionedImage("images/synthetic/train_0.png", "train picture 0", source="synthetic",
                                     keywords=("blocks", "colours"))
    assert rows[0].path(tiny) == tiny.absolute() / "images" / "synthetic" / "train_0.png"
    assert get_kind(KIND).corpus_text == "caption"


def test_the_image_path_helper_refuses_paths_that_leave_the_dataset_folder(tiny):
    assert resolve_image(tiny, "images/synthetic/dev_1.png").is_file()
    for escaping in ("../outside.png", "images/../../outside.png", "/etc/passwd", "C:\\pictures\\a.png"):
        with pytest.raises(ImagePathError, match=r"^image path '.*' (is absolute|has a '\.\.' part); image paths "
                                                 r"are relative to the dataset folder .* and stay inside it$"):
            resolve_image(tiny, escaping)


def test_the_gate_needs_the_dataset_folder_of_a_kind_that_reads_files(tiny):
    frame, _ = read_split_file(tiny / "dev.tsv", KIND, "dev")
    with pytest.raises(ValueError, match="data kind 'captioned_images' reads the files its rows name: pass the "
                                         r"dataset folder \(folder=\)"):
        gate_splits(KIND, KIND, {"dev": frame})


def test_a_key_on_a_derived_column_needs_the_column_declared():
    from paperline.data.kinds import DataKind, KindDefinitionError, RowKey

    common = dict(name="clips", columns=("audio", "text"), text_columns=("text",), row_type=dict, rows=list)
    with pytest.raises(KindDefinitionError, match="key names audio_hash, which are not among its columns audio, text"):
        DataKind(**common, key=RowKey("audio", ("audio_hash",)))
    with pytest.raises(KindDefinitionError, match="derived_columns without a derive function"):
        DataKind(**common, key=RowKey("audio", ("audio_hash",)), derived_columns=("audio_hash",))
    kind = DataKind(**common, key=RowKey("audio", ("audio_hash",)), derived_columns=("audio_hash",),
                    derive=lambda frame, folder: frame)
    assert kind.key.describe() == "audio_hash"


def test_the_kind_file_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, paperline.data.kinds.captioned_images\n"
            "heavy = [m for m in ('PIL', 'imagehash', 'pandas', 'numpy', 'great_expectations') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------------------
# Each bad input: one gate line naming the file, exit 3


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def blank(path: Path) -> None:
    Image.new("RGB", (160, 160), "white").save(path)


def with_alpha(path: Path) -> None:
    picture(99).convert("RGBA").save(path)


def tiny_picture(path: Path) -> None:
    picture(99, (16, 16)).save(path)


BAD_PICTURES = [
    (truncated, "image file does not decode",
     "undecodable: image file is truncated (40 bytes not processed)"),
    (blank, "image is blank", "blank: 0.00% of the pixels differ from the commonest colour, under 0.5%"),
    (with_alpha, "image mode is not RGB", "mode: RGBA"),
    (tiny_picture, "image side outside 32..1024 px", "size: 16x16 px"),
]


@pytest.mark.parametrize(("damage", "phrase", "problem"), BAD_PICTURES, ids=[b[0].__name__ for b in BAD_PICTURES])
def test_a_bad_picture_is_one_line_naming_the_file(tiny, monkeypatch, capsys, damage, phrase, problem):
    damage(tiny / "images" / "synthetic" / "train_1.png")
    line = one_failure(tiny.parents[1], monkeypatch, capsys)
    if damage is truncated:  # how many bytes Pillow had left depends on where the cut falls in its buffer
        problem = re.search(r'"image_problem": "(undecodable: [^"]*)"', line)[1]
        assert problem.startswith("undecodable: image file is truncated")
    assert line == (f"captioned_images/train: expect_column_values_to_not_match_regex(image_problem): {phrase} in "
                    f"1 of 4 rows (25.00%); e.g. {row_shown(tiny, 'train', 1, problem, None)}")


def test_a_missing_file_is_one_line_naming_it(tiny, monkeypatch, capsys):
    (tiny / "images" / "synthetic" / "dev_0.png").unlink()
    assert one_failure(tiny.parents[1], monkeypatch, capsys) == (
        "captioned_images/dev: expect_column_values_to_not_match_regex(image_problem): image file does not exist "
        f"in 1 of 2 rows (50.00%); e.g. {row_shown(tiny, 'dev', 0, 'missing: no such file', None)}")


def test_a_caption_only_row_is_one_line(tiny, monkeypatch, capsys):
    set_cell(tiny, "test", 1, "image", "")
    assert one_failure(tiny.parents[1], monkeypatch, capsys) == (
        "captioned_images/test: expect_column_values_to_match_regex(image): image is empty or whitespace-only in 1 "
        f"of 2 rows (50.00%); e.g. {row_shown(tiny, 'test', 1, '', None)}")


def test_a_blank_caption_is_one_line(tiny, monkeypatch, capsys):
    set_cell(tiny, "train", 2, "caption", "   ")
    line = one_failure(tiny.parents[1], monkeypatch, capsys)
    assert line.startswith("captioned_images/train: expect_column_values_to_match_regex(caption): caption is empty "
                           'or whitespace-only in 1 of 4 rows (25.00%); e.g. {"image": "images/synthetic/train_2.png"')


@pytest.mark.parametrize("escaping", ["../../outside.png", "/tmp/outside.png"])
def test_a_path_leaving_the_dataset_folder_is_one_line_and_never_opened(tiny, monkeypatch, capsys, escaping):
    picture(99).save(tiny.parents[1] / "outside.png")  # exists, and would decode: the path alone is refused
    set_cell(tiny, "train", 3, "image", escaping)
    problem = "outside: is absolute" if escaping.startswith("/") else "outside: has a '..' part"
    assert one_failure(tiny.parents[1], monkeypatch, capsys) == (
        "captioned_images/train: expect_column_values_to_not_match_regex(image_problem): image path leaves the "
        f"dataset folder in 1 of 4 rows (25.00%); e.g. {row_shown(tiny, 'train', 3, problem, None)}")


def test_a_picture_copied_from_test_into_train_is_one_leakage_line(tiny, monkeypatch, capsys):
    shutil.copy(tiny / "images" / "synthetic" / "test_0.png", tiny / "images" / "synthetic" / "train_copy.png")
    write_rows(tiny, "train", [*read_rows(tiny, "train"), ["images/synthetic/train_copy.png", "a copy", "", "x"]])
    digest = inspect_image(tiny, "images/synthetic/test_0.png")[1]
    assert one_failure(tiny.parents[1], monkeypatch, capsys) == (
        "captioned_images/train+test: expect_column_values_to_be_in_set(image_in_train): picture (perceptual hash) "
        "shared with train in 1 of 2 rows (50.00%); at most 1.00% allowed; "
        f"e.g. {row_shown(tiny, 'test', 0, '', digest)}")


def test_the_same_picture_twice_in_a_split_is_one_duplicate_line(tiny, monkeypatch, capsys):
    shutil.copy(tiny / "images" / "synthetic" / "train_0.png", tiny / "images" / "synthetic" / "train_1.png")
    line = one_failure(tiny.parents[1], monkeypatch, capsys)
    assert line.startswith("captioned_images/train: expect_column_proportion_of_unique_values_to_be_between"
                           "(image_key): picture (perceptual hash) repeats an earlier row in 1 of 4 rows (25.00%); "
                           'at most 3.00% allowed; e.g. {"image": "images/synthetic/train_0.png"')


def test_a_resaved_copy_is_the_same_picture(tiny):
    """Other bytes, same pixels: the perceptual hash finds the copy that a file hash (DVC's md5) would not."""
    original, copy = tiny / "images" / "synthetic" / "test_1.png", tiny / "images" / "synthetic" / "dev_1.png"
    with Image.open(original) as picture:
        picture.save(copy, compress_level=1)
    assert copy.read_bytes() != original.read_bytes()
    assert inspect_image(tiny, "images/synthetic/dev_1.png") == inspect_image(tiny, "images/synthetic/test_1.png")


# ---------------------------------------------------------------------------------------------------------------
# The report shows the pictures


def test_the_html_report_shows_the_offending_pictures_and_samples_on_a_pass(tiny):
    reader = DatasetReaders().with_kind_folders([KIND])
    version = DataVersion(md5="synthetic.dir", path=tiny.parent, nfiles=None, pulled=False)
    passed = gate_read_datasets(version, reader)
    assert passed.passed
    (result,) = passed.results
    assert [(p["split"], p["label"]) for p in result.pictures] == [
        ("dev", "images/synthetic/dev_0.png"), ("dev", "images/synthetic/dev_1.png"),
        ("test", "images/synthetic/test_0.png"), ("test", "images/synthetic/test_1.png"),
        ("train", "images/synthetic/train_0.png"), ("train", "images/synthetic/train_1.png")]
    page = passed.to_html()
    assert page.count('<img class="thumb" src="data:image/png;base64,') == 6 and "http" not in page
    assert len(page) < 60_000  # thumbnails, not the pictures
    assert "## Sample pictures" in passed.to_markdown()

    blank(tiny / "images" / "synthetic" / "train_1.png")
    (tiny / "images" / "synthetic" / "train_2.png").unlink()
    failed = gate_read_datasets(version, reader)
    (result,) = failed.results
    assert [f.pictures[0] is not None for f in result.failures] == [False, True]  # missing: nothing to show
    assert result.pictures == []  # a failed report shows the offending rows, not samples
    assert failed.to_html().count('<img class="thumb"') == 1  # the blank picture, beside its row


def test_a_generated_picture_file_is_gated_beside_its_folder(tiny):
    """gate_files (a method's generated data) finds pictures relative to the TSV's own folder."""
    outcome = gate_files([("generated", KIND, tiny / "dev.tsv", "dev")])
    assert outcome.passed, outcome.summary_lines()
    frame, _ = read_split_file(tiny / "dev.tsv", KIND, "dev")
    assert "image_problem" not in frame.columns  # the reader does not open pictures; only the gate does
