"""The sentence renderer of the pixel-based encoder (paperline.ml.text_render): same text, same bytes; different
texts, different pictures; a clear truncation rule; any Unicode without a crash; the caches hit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from paperline.core.errors import PaperlineError
from paperline.ml import text_render
from paperline.ml.text_render import ELLIPSIS, RenderSettings, TextRenderer, find_font

SENTENCE = "A man is playing a large flute."


@pytest.fixture(scope="module")
def renderer():
    return TextRenderer()


def test_same_text_gives_identical_bytes_across_renderers_and_processes(renderer):
    first = renderer.render(SENTENCE)
    assert first.mode == "RGB" and first.size == (160, 160)
    fresh = TextRenderer(cache_size=0).render(SENTENCE)
    assert first.tobytes() == fresh.tobytes()
    code = textwrap.dedent(f"""
        import hashlib
        from paperline.ml.text_render import render
        print(hashlib.sha256(render({SENTENCE!r}).tobytes()).hexdigest())
    """)
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    import hashlib

    assert other.stdout.strip() == hashlib.sha256(first.tobytes()).hexdigest()


def test_render_batch_is_uint8_rgb_and_matches_render(renderer):
    texts = [SENTENCE, "Two dogs run.", ""]
    batch = renderer.render_batch(texts)
    assert batch.shape == (3, 160, 160, 3) and batch.dtype == np.uint8
    assert (batch[..., 0] == batch[..., 1]).all() and (batch[..., 1] == batch[..., 2]).all()  # grey text
    np.testing.assert_array_equal(batch[0], np.asarray(renderer.render(SENTENCE)))
    assert (batch[2] == 255).all()  # empty text: a white picture
    assert batch[0].min() == 0 and (batch[0] < 128).mean() > 0.01  # black ink on white
    assert renderer.render_batch([]).shape == (0, 160, 160, 3)
    module_level = text_render.render_batch([SENTENCE])
    np.testing.assert_array_equal(module_level[0], batch[0])


def test_different_texts_give_different_pictures(renderer):
    pictures = [renderer.render(t).tobytes() for t in (SENTENCE, "A man is playing a large flute!",
                                                         "A man is playing a large flutе.")]  # Cyrillic е
    assert pictures[0] != pictures[1]
    # a homoglyph draws the same glyph shape in DejaVu Sans: the picture changes little or not at all
    a, b = (np.frombuffer(p, np.uint8) for p in (pictures[0], pictures[2]))
    assert (a != b).mean() < 0.01


def test_whitespace_and_unicode_normal_forms_do_not_change_the_picture(renderer):
    assert renderer.render("café  au\tlait\n").tobytes() == renderer.render("cafe\u0301 au lait").tobytes()
    assert renderer.key("café au lait") == renderer.key(" cafe\u0301  au lait ")


def test_long_text_is_truncated_with_an_ellipsis_on_the_last_line(renderer):
    words = " ".join(f"word{i}" for i in range(200))
    lines, truncated = renderer.layout(words)
    assert truncated and len(lines) == renderer.settings.max_lines == 9
    assert lines[-1].endswith(ELLIPSIS)
    assert all(renderer.font.getlength(line) <= renderer.settings.line_width for line in lines)
    assert " ".join(lines).startswith("word0 word1 word2")  # the beginning is kept
    short_lines, short_truncated = renderer.layout(SENTENCE)
    assert not short_truncated and " ".join(short_lines) == SENTENCE
    # a word wider than a line is broken between characters, not dropped or overflowing
    long_word = "x" * 60
    lines, truncated = renderer.layout(long_word)
    assert not truncated and "".join(lines) == long_word and len(lines) > 1
    assert renderer.layout("y" * 2000)[1]


def test_non_ascii_accents_and_emoji_render_without_crashing(renderer):
    for text in ("Ærøskøbing naïve café — “quoted” façade", "😀 emoji fallback 🎉👍🏽", "中文 العربية हिन्दी",
                 "\u200b zero width \x00 control", "\U0010ffff"):
        picture = renderer.render(text)
        assert picture.size == (160, 160)
        assert renderer.render(text).tobytes() == picture.tobytes()  # deterministic too
    accented = np.asarray(renderer.render("naïve café"))
    plain = np.asarray(renderer.render("naive cafe"))
    assert (accented != plain).any()


def test_the_memory_cache_hits_and_evicts_least_recently_used():
    renderer = TextRenderer(cache_size=2)
    first = renderer.gray("one")
    assert (renderer.hits, renderer.misses) == (0, 1)
    assert renderer.gray("one") is first and renderer.hits == 1
    renderer.gray("two")
    renderer.gray("one")  # "one" is now the most recent
    renderer.gray("three")  # evicts "two"
    misses = renderer.misses
    renderer.gray("one")
    assert renderer.misses == misses
    renderer.gray("two")
    assert renderer.misses == misses + 1
    assert not first.flags.writeable  # a cached picture cannot be changed by a caller


def test_the_disk_cache_is_keyed_by_text_and_settings_and_read_back(tmp_path):
    writer = TextRenderer(cache_dir=tmp_path)
    expected = writer.render_batch([SENTENCE, "Two dogs run."])
    files = sorted(tmp_path.rglob("*.png"))
    assert len(files) == 2 and {f.stem for f in files} == {writer.key(SENTENCE), writer.key("Two dogs run.")}
    reader = TextRenderer(cache_dir=tmp_path)
    np.testing.assert_array_equal(reader.render_batch([SENTENCE, "Two dogs run."]), expected)
    assert reader.disk_hits == 2 and reader.misses == 2  # missed in memory, found on disk
    bigger = TextRenderer(RenderSettings(font_size=14), cache_dir=tmp_path)
    assert bigger.key(SENTENCE) != writer.key(SENTENCE)  # other settings, other pictures
    files[0].write_bytes(b"not a png")  # a damaged entry is drawn again, not an error
    again = TextRenderer(cache_dir=tmp_path).render_batch([SENTENCE, "Two dogs run."])
    np.testing.assert_array_equal(again, expected)


def test_a_missing_font_names_the_debian_package():
    with pytest.raises(PaperlineError, match="fonts-dejavu-core"):
        find_font("NoSuchFont-Paperline.ttf")
    assert find_font("DejaVuSans.ttf").name == "DejaVuSans.ttf"
    assert find_font(str(find_font("DejaVuSans.ttf"))) == find_font("DejaVuSans.ttf")  # a path is used as is
