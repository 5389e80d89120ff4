"""The pixel student: a sentence rendered to a picture, EfficientNet-Lite0, a linear projection to the teacher's space.

Pixel-Linguist (Xiao et al., "Pixel Sentence Representation Learning", arXiv 2402.08183) reads a sentence as an
image and trains a vision encoder to embed it; here the picture is `paperline.ml.text_render`'s 160x160 rendering
and the encoder `paperline.ml.image_encoder`'s EfficientNet-Lite0 (ImageNet weights), whose pooled 1280-d head
goes through one linear layer to the 384 dimensions of all-MiniLM-L6-v2, the teacher it is distilled onto.

A saved student is one folder: `student.safetensors` (encoder and projection; the ImageNet classifier is dropped),
`student.json` (its shape, the render settings and the renderer's fingerprint) and a copy of the font file, so the
served model draws with the bytes it was trained on. This file is shipped with the MLflow pyfunc (code_paths) and
imports paperline's renderer and network (`mlflow models serve --env-manager local`, as paperline serves every
model); `load_student` warns when this machine's renderer would draw other pixels (another Pillow, say).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS, CONFIG = "student.safetensors", "student.json"
# Running statistics of the trained BatchNorm layers: PyTorch's 0.1, not TensorFlow's 0.01 of the ImageNet weights.
# The weights move fast in a few hundred fine-tuning steps and at 0.01 the statistics lag behind them: 200
# distillation steps scored STS-B dev Spearman (first 400 pairs) 16.6 at lr 5e-4 and 22.2 at 1.5e-3 with 0.01,
# 22.0 and 23.9 with 0.1, the training losses being the same.
BN_MOMENTUM = 0.1


class PixelStudent(nn.Module):
    """EfficientNet-Lite0 features (B, 1280) -> Linear -> (B, dim); `forward` takes (B, 3, H, W) in [-1, 1].

    The stem and the first `frozen_blocks` MBConv blocks keep their ImageNet weights and BatchNorm statistics
    (`train()` leaves them in eval mode): they see 80x80 and 40x40 maps, half the cost of a training step, and
    edge and stroke detectors need no retraining for black text on white.
    """

    def __init__(self, encoder: nn.Module, dim: int, frozen_blocks: int = 0, bn_momentum: float = BN_MOMENTUM):
        super().__init__()
        encoder.classifier = nn.Identity()  # the ImageNet head: not part of the sentence encoder
        self.encoder = encoder
        self.projection = nn.Linear(encoder.head.out_channels, dim)
        self.dim, self.frozen_blocks = dim, frozen_blocks
        frozen = {id(m) for module in self.frozen_modules() for m in module.modules()}
        for module in self.frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d) and id(module) not in frozen:
                module.momentum = bn_momentum

    def frozen_modules(self) -> list[nn.Module]:
        e = self.encoder
        return [e.stem, e.stem_bn, *e.blocks[: self.frozen_blocks]] if self.frozen_blocks else []

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()  # frozen BatchNorm keeps its running statistics
        return self

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.frozen_blocks == 0):
            x = nn.functional.relu6(e.stem_bn(e.stem(pixels)))
            for block in e.blocks[: self.frozen_blocks]:
                x = block(x)
        for block in e.blocks[self.frozen_blocks:]:
            x = block(x)
        pooled = nn.functional.relu6(e.head_bn(e.head(x))).mean(dim=(2, 3))
        return self.projection(pooled)


def new_student(dim: int, frozen_blocks: int, seed: int, pretrained: bool = True) -> PixelStudent:
    """ImageNet EfficientNet-Lite0 and a projection drawn from `seed`."""
    from paperline.ml.image_encoder import load_efficientnet_lite0

    encoder = load_efficientnet_lite0(pretrained=pretrained)
    torch.manual_seed(seed)
    return PixelStudent(encoder, dim, frozen_blocks)


def default_renderer(cache_size: int = 4096):
    from paperline.ml.text_render import TextRenderer

    return TextRenderer(cache_size=cache_size)


@torch.inference_mode()
def encode(student: PixelStudent, renderer, sentences: list[str], batch_size: int = 64) -> np.ndarray:
    """(N, dim) float32 L2-normalised embeddings of `sentences`, each rendered by `renderer`."""
    from paperline.ml.image_encoder import pixels_to_tensor

    student.eval()
    device = next(student.parameters()).device
    out = []
    for start in range(0, len(sentences), batch_size):
        pixels = pixels_to_tensor(renderer.render_batch(sentences[start:start + batch_size])).to(device)
        out.append(nn.functional.normalize(student(pixels).float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, student.dim), np.float32)


def save_student(student: PixelStudent, renderer, folder: Path) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}, str(folder / WEIGHTS))
    shutil.copyfile(renderer.font_path, folder / renderer.font_path.name)
    config = {"dim": student.dim, "frozen_blocks": student.frozen_blocks, "render": asdict(renderer.settings),
              "font_file": renderer.font_path.name, "renderer_fingerprint": renderer.fingerprint}
    (folder / CONFIG).write_text(json.dumps(config, indent=1))
    return folder


def load_renderer(folder: Path, cache_size: int = 4096):
    """The TextRenderer of a saved student: its settings, drawing with the font file saved beside it."""
    from paperline.ml.text_render import RenderSettings, TextRenderer

    config = json.loads((Path(folder) / CONFIG).read_text())
    settings = RenderSettings(**{**config["render"], "font": str(Path(folder) / config["font_file"])})
    renderer = TextRenderer(settings, cache_size=cache_size)
    if renderer.fingerprint != config["renderer_fingerprint"]:
        warnings.warn(f"the renderer here differs from the one this student was trained with (saved "
                      f"{config['renderer_fingerprint']}, here {renderer.fingerprint}): its pictures may differ",
                      stacklevel=2)
    return renderer


def load_student(folder: Path, device: str | None = None, cache_size: int = 4096):
    """(PixelStudent in eval mode, TextRenderer drawing with the saved font and settings) from `save_student`."""
    from safetensors.torch import load_file

    from paperline.ml.image_encoder import EfficientNetLite0

    config = json.loads((Path(folder) / CONFIG).read_text())
    student = PixelStudent(EfficientNetLite0(), config["dim"], config["frozen_blocks"])
    student.load_state_dict(load_file(str(Path(folder) / WEIGHTS)), strict=True)
    return student.to(device or "cpu").eval(), load_renderer(folder, cache_size)
