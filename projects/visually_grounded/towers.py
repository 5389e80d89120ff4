"""The two towers of a visually grounded sentence encoder and the space they share.

Text tower: all-MiniLM-L6-v2 (mean pooling, L2-normalised) and a linear map `text_proj` into the shared space,
initialised to the identity when the space has MiniLM's 384 dimensions, so that before any training the shared
space IS MiniLM's space and its STS score is MiniLM's. Image tower: EfficientNet-Lite0 with its ImageNet weights
(`paperline.ml.image_encoder`), its pooled 1280-d head and a linear map `image_proj` into the same space. Both
outputs are L2-normalised: a caption and a picture are compared by a dot product. `logit_scale` is CLIP's learned
temperature (Radford et al. 2021, openai/CLIP `model.py`: initialised to log(1/0.07), clamped at log 100).

The image tower is split at `frozen_blocks`: the stem and the first `frozen_blocks` MBConv blocks keep their
ImageNet weights and BatchNorm statistics, so their output (112 x 10 x 10 for a 160 x 160 picture at the default
11) can be computed once per picture and cached while the rest trains (`image_prefix` / `image_suffix`). Every
BatchNorm stays in eval mode (its running statistics frozen, its affine weights trained): batches of 64 clip-art
pictures are no estimate of ImageNet's statistics.

A saved encoder is one folder: `text/` (the SentenceTransformer, as `SentenceTransformer(path)` loads it),
`grounded.safetensors` (the projections, the temperature and the whole image network without its ImageNet
classifier) and `grounded.json` (shape and settings). This file ships with the MLflow pyfunc (code_paths) and
imports paperline's EfficientNet-Lite0 definition, as `mlflow models serve --env-manager local` serves it.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS, CONFIG, TEXT = "grounded.safetensors", "grounded.json", "text"
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: a temperature never below 0.01
MAX_SERVED_SIDE = 4096  # pixels; a larger request picture is refused before it is decoded


class GroundedEncoder(nn.Module):
    """Text tower + (optional) image tower -> one L2-normalised space of `dim` dimensions."""

    def __init__(self, text, image: nn.Module | None, dim: int, frozen_blocks: int = 11, temperature: float = 0.07,
                 image_size: int = 160):
        super().__init__()
        self.text = text
        text_dim = text.get_embedding_dimension()
        self.text_proj = nn.Linear(text_dim, dim, bias=False)
        with torch.no_grad():
            if dim == text_dim:
                self.text_proj.weight.copy_(torch.eye(dim))  # the shared space starts as MiniLM's own
            else:
                nn.init.orthogonal_(self.text_proj.weight)
        self.image = image
        if image is not None:
            image.classifier = nn.Identity()  # the ImageNet head is not part of the encoder
            self.image_proj = nn.Linear(image.head.out_channels, dim, bias=False)
            nn.init.normal_(self.image_proj.weight, std=image.head.out_channels ** -0.5)  # CLIP's projection init
        else:
            self.image_proj = None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.dim, self.frozen_blocks, self.image_size = dim, frozen_blocks, image_size

    # ---- the image tower, in two parts ----------------------------------------------------------------------

    def prefix_modules(self) -> list[nn.Module]:
        e = self.image
        return [e.stem, e.stem_bn, *e.blocks[: self.frozen_blocks]]

    def suffix_modules(self) -> list[nn.Module]:
        e = self.image
        return [*e.blocks[self.frozen_blocks:], e.head, e.head_bn]

    def image_prefix(self, pixels: torch.Tensor) -> torch.Tensor:
        return image_prefix(self.image, self.frozen_blocks, pixels)

    def image_suffix(self, maps: torch.Tensor) -> torch.Tensor:
        return image_suffix(self.image, self.frozen_blocks, maps)

    def project_images(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(pooled), dim=-1)

    def project_texts(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(pooled), dim=-1)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.image is not None:
            self.image.eval()  # BatchNorm statistics stay ImageNet's (see the module docstring)
        return self

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    # ---- the text tower ---------------------------------------------------------------------------------------

    def text_features(self, texts: list[str], max_tokens: int) -> torch.Tensor:
        """MiniLM's pooled, normalised sentence embedding (B, 384), with gradients (training)."""
        model = self.text
        keep = model.max_seq_length
        model.max_seq_length = max_tokens
        try:
            features = _tokenize(model, texts)
        finally:
            model.max_seq_length = keep
        device = self.logit_scale.device
        features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        return model(features)["sentence_embedding"]

    # ---- inference --------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_texts(self, texts: list[str], batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """(MiniLM's own embedding, the shared-space embedding) of each text, both L2-normalised float32."""
        if not texts:
            return np.zeros((0, self.text.get_embedding_dimension()), np.float32), np.zeros((0, self.dim), np.float32)
        pooled = self.text.encode(list(texts), batch_size=batch_size, convert_to_tensor=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        pooled = pooled.to(self.logit_scale.device).float()
        return pooled.cpu().numpy(), self.project_texts(pooled).cpu().numpy()

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """(B, 3, H, W) pictures in [-1, 1] -> (B, dim) shared-space embeddings, float32."""
        if self.image is None:
            raise ValueError("this encoder has no image tower")
        device = self.logit_scale.device
        out = [self.project_images(self.image_suffix(self.image_prefix(pixels[i:i + batch_size].to(device))))
               .float().cpu().numpy() for i in range(0, len(pixels), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_images(self, images: list, batch_size: int = 64) -> np.ndarray:
        """PIL images -> (B, dim): resized to the trained size (shorter side, centre crop), as in training."""
        from paperline.ml.image_encoder import images_to_tensor

        out = [self.encode_pixels(images_to_tensor(images[i:i + batch_size], self.image_size), batch_size)
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def image_prefix(net: nn.Module, frozen_blocks: int, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> the frozen part's feature map (stem + the first `frozen_blocks` blocks); never
    trained, so computed without gradients."""
    with torch.no_grad():
        x = F.relu6(net.stem_bn(net.stem(pixels)))
        for block in net.blocks[:frozen_blocks]:
            x = block(x)
    return x


def image_suffix(net: nn.Module, frozen_blocks: int, maps: torch.Tensor) -> torch.Tensor:
    """The frozen part's feature map -> the pooled (B, 1280) features (the trained part in the grounded arms)."""
    x = maps
    for block in net.blocks[frozen_blocks:]:
        x = block(x)
    return F.relu6(net.head_bn(net.head(x))).mean(dim=(2, 3))


def _tokenize(model, texts: list[str]) -> dict:
    # sentence-transformers 6 renamed `tokenize` to `preprocess`; either gives the model's input dict
    return (model.preprocess if hasattr(model, "preprocess") else model.tokenize)(texts)


# ---- building, saving, loading ------------------------------------------------------------------------------


def new_encoder(base_model: str, dim: int, with_images: bool, frozen_blocks: int, temperature: float,
                image_size: int, seed: int, device: str = "cpu") -> GroundedEncoder:
    """MiniLM (and EfficientNet-Lite0 with ImageNet weights) and projections drawn from `seed`."""
    from paperline.ml.models import load_sentence_transformer

    text = load_sentence_transformer(base_model, device=device)
    image = None
    if with_images:
        from paperline.ml.image_encoder import load_efficientnet_lite0

        image = load_efficientnet_lite0(pretrained=True)
    torch.manual_seed(seed)
    return GroundedEncoder(text, image, dim, frozen_blocks, temperature, image_size).to(device)


def own_state(model: GroundedEncoder) -> dict[str, torch.Tensor]:
    """Everything but the text transformer (saved by sentence-transformers in `text/`)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("text.")}


def save(model: GroundedEncoder, folder: Path) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.text.save(str(folder / TEXT))
    save_file(own_state(model), str(folder / WEIGHTS))
    (folder / CONFIG).write_text(json.dumps({"dim": model.dim, "frozen_blocks": model.frozen_blocks,
                                             "image_size": model.image_size, "images": model.image is not None},
                                            indent=2))
    return folder


def load(folder: Path, device: str = "cpu") -> GroundedEncoder:
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    folder = Path(folder)
    config = json.loads((folder / CONFIG).read_text())
    text = SentenceTransformer(str(folder / TEXT), device=device)
    image = None
    if config["images"]:
        from paperline.ml.image_encoder import EfficientNetLite0

        image = EfficientNetLite0()
    model = GroundedEncoder(text, image, config["dim"], config["frozen_blocks"], image_size=config["image_size"])
    missing, unexpected = model.load_state_dict(load_file(str(folder / WEIGHTS)), strict=False)
    wrong = [k for k in missing if not k.startswith("text.")] + list(unexpected)
    if wrong:
        raise ValueError(f"{folder / WEIGHTS} does not fit the encoder: {', '.join(wrong[:5])}")
    return model.to(device).eval()


# ---- what a request holds ------------------------------------------------------------------------------------


def decode_image(text: str):
    """A base64 PNG (or any format Pillow reads; a `data:image/...;base64,` prefix is allowed) -> an RGB PIL image;
    a ValueError naming the problem otherwise."""
    from PIL import Image

    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"image is not base64 ({error})") from None
    try:
        with Image.open(io.BytesIO(raw)) as picture:
            if max(picture.size) > MAX_SERVED_SIDE:
                raise ValueError(f"image is {picture.size[0]}x{picture.size[1]} px; at most {MAX_SERVED_SIDE} a side")
            return picture.convert("RGB")
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001  Pillow raises many types for a broken file
        raise ValueError(f"image does not decode ({type(error).__name__}: {error})") from None


def encode_requests(model: GroundedEncoder, rows: list[tuple[str | None, str | None]],
                    batch_size: int = 64) -> np.ndarray:
    """One shared-space embedding per (caption, image) row, where each row gives exactly one of the two."""
    texts, pictures = [], []
    for i, (caption, image) in enumerate(rows):
        has_caption, has_image = bool(caption and caption.strip()), bool(image and image.strip())
        if has_caption == has_image:
            raise ValueError(f"row {i}: give exactly one of `caption` (text) or `image` (a base64 PNG), "
                             f"got {'both' if has_caption else 'neither'}")
        if has_caption:
            texts.append((i, caption))
        else:
            pictures.append((i, decode_image(image.strip())))
    out = np.zeros((len(rows), model.dim), np.float32)
    if texts:
        out[[i for i, _ in texts]] = model.encode_texts([t for _, t in texts], batch_size)[1]
    if pictures:
        out[[i for i, _ in pictures]] = model.encode_images([p for _, p in pictures], batch_size)
    return out
