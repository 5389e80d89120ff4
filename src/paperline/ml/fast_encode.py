"""Fast CPU encoding: a sentence-transformers model exported to ONNX Runtime, optimised, optionally int8.

Why not sentence-transformers' own `backend="onnx"`: it goes through `optimum-onnx`, whose newest release
(0.1.0) requires transformers < 4.58 and fails to import with the transformers 5 paperline runs on; OpenVINO's
`optimum-intel` 2.2 requires transformers < 5.6 and huggingface-hub < 1.22. So the export here is the same
recipe with the pieces underneath: `torch.onnx.export` of the transformer (eager attention, which ONNX
Runtime's BERT fusions recognise), ONNX Runtime's transformer optimizer (what Optimum calls O2: attention,
embedding, skip-layer-norm and bias-GELU fusions, no GELU approximation, so the numbers stay the PyTorch ones
to ~1e-5), and for `int8` its dynamic int8 quantisation, per channel, of the MatMul weights (the feed-forward
and attention-output projections); `int8-all` quantises the fused attention's QKV projection too (Optimum's
`avx512_vnni` dynamic config does), faster but it cost 0.2-0.3 STS-B Spearman on MiniLM, where `int8` kept it
within 0.05 (docs/benchmarks.md (d)). Pooling and normalisation run in numpy, so encoding needs onnxruntime and
a tokenizer, not torch.

Only models that are a transformer, a `Pooling` (mean, cls or max) and optionally a `Normalize` are exported;
anything else raises `NotExportable`, and callers fall back to PyTorch. Exports are cached under
`<workspace>/.paperline/onnx/<sha256 of the model folder's files>-<variant>[-layers]` (`PAPERLINE_ONNX_CACHE`
moves it), so every evaluation of the same model reuses one export. No MLflow, Prefect, DVC or GX here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from paperline.core.errors import PaperlineError

if TYPE_CHECKING:
    import numpy as np

VARIANTS = ("optimized", "int8", "int8-all")
FORMAT = 1  # bump when the export recipe changes: old cache entries then miss
META = "paperline_onnx.json"
_SAMPLES = ["A man is playing a guitar.", "hello", "An unusually long sentence " * 200]


class NotExportable(PaperlineError):
    """A model this ONNX path cannot reproduce (an extra module, another pooling): use PyTorch for it."""


def folder_digest(folder: str | Path) -> str:
    """sha256 over every file's relative path and bytes: the same weights and config give the same key."""
    folder = Path(folder)
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
    return sha.hexdigest()


def default_cache_dir() -> Path:
    if os.environ.get("PAPERLINE_ONNX_CACHE"):
        return Path(os.environ["PAPERLINE_ONNX_CACHE"]).expanduser()
    from paperline.ml.models import default_cache_dir as models_dir

    return models_dir().parent / "onnx"


def _pipeline(model) -> dict:
    """What runs after the transformer, as data; refuses what numpy pooling would not reproduce."""
    names = [type(m).__name__ for m in model]
    if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]) or len(names) > 3:
        raise NotExportable(f"modules {names} are not transformer + Pooling [+ Normalize]; encode with PyTorch")
    pooling = model[1].get_config_dict()
    mode = pooling.get("pooling_mode") or next(
        (k.removeprefix("pooling_mode_").removesuffix("_tokens") for k, v in pooling.items()
         if k.startswith("pooling_mode_") and v), None)
    mode = {"mean": "mean", "cls": "cls", "max": "max", "mean_tokens": "mean", "cls_token": "cls"}.get(mode)
    if mode is None:
        raise NotExportable(f"pooling {pooling} is not mean, cls or max; encode with PyTorch")
    return {"pooling": mode, "normalize": len(names) == 3, "max_seq_length": int(model.max_seq_length)}


def export_onnx(model_dir: str | Path, out: str | Path, variant: str = "optimized", all_layers: bool = False) -> Path:
    """Write `out/`: model.onnx, the tokenizer's files and `paperline_onnx.json`; whole or not at all.

    `all_layers=True` adds every layer's hidden states as one output [layers+1, batch, tokens, width] (the
    layer x dims grid needs them, `paperline.ml.layer_grid`).
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    if variant not in VARIANTS:
        raise PaperlineError(f"unknown ONNX variant '{variant}'; choose one of {', '.join(VARIANTS)}")
    model_dir, out = Path(model_dir), Path(out)
    st = SentenceTransformer(str(model_dir), device="cpu")
    meta = {"format": FORMAT, "variant": variant, "all_layers": all_layers, **_pipeline(st)}
    tokenizer = st[0].tokenizer
    ours = tokenizer(_SAMPLES, padding=True, truncation=True, max_length=meta["max_seq_length"], return_tensors="np")
    theirs = st.preprocess(_SAMPLES)
    if not all(k in ours and (ours[k] == theirs[k].numpy()).all() for k in ("input_ids", "attention_mask")):
        raise NotExportable(f"{model_dir}: its tokenizer called plainly differs from sentence-transformers' "
                            "preprocessing; encode with PyTorch")
    inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in ours]
    transformer_dir = _transformer_dir(model_dir)
    # eager attention: the exported graph is then the pattern ONNX Runtime's attention fusion recognises
    hf = AutoModel.from_pretrained(str(transformer_dir), attn_implementation="eager").eval()
    config = hf.config

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            result = self.inner(**dict(zip(inputs, args)), output_hidden_states=all_layers)
            if all_layers:
                return torch.stack(result.hidden_states)
            return result.last_hidden_state

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        raw = work / "raw.onnx"
        sample = {k: torch.as_tensor(ours[k]) for k in inputs}
        output = "hidden_states" if all_layers else "last_hidden_state"
        axes = {k: {0: "batch", 1: "tokens"} for k in inputs}
        axes[output] = {1: "batch", 2: "tokens"} if all_layers else {0: "batch", 1: "tokens"}
        # torch.onnx's TorchScript exporter (dynamo=False: the dynamo one needs onnxscript and emits a graph the
        # BERT fusions miss) warns about traced mask code that the equality test shows is exact here
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Wrapper(hf), tuple(sample[k] for k in inputs), str(raw), input_names=inputs,
                              output_names=[output], dynamic_axes=axes, opset_version=17, dynamo=False)
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(str(raw), model_type="bert", num_heads=int(config.num_attention_heads),
                                   hidden_size=int(config.hidden_size), opt_level=0, use_gpu=False)
        optimized.save_model_to_file(str(work / "optimized.onnx"))
        raw.unlink()
        if variant.startswith("int8"):
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(work / "optimized.onnx"), str(work / "model.onnx"), weight_type=QuantType.QInt8,
                             per_channel=True,  # per-tensor scales cost 0.01-0.1 cosine per sentence on MiniLM
                             op_types_to_quantize=None if variant == "int8-all" else ["MatMul"],
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            (work / "optimized.onnx").unlink()
        else:
            (work / "optimized.onnx").rename(work / "model.onnx")
        tokenizer.save_pretrained(str(work))
        meta.update(inputs=inputs, output=output, width=int(config.hidden_size),
                    layers=int(config.num_hidden_layers))
        (work / META).write_text(json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
        try:
            work.rename(out)
        except OSError:  # another process finished the same export first: keep its folder
            if not (out / META).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _transformer_dir(model_dir: Path) -> Path:
    """The folder of module 0 (the transformer): the model folder itself for a saved SentenceTransformer."""
    modules = model_dir / "modules.json"
    if modules.is_file():
        first = json.loads(modules.read_text())[0]
        return model_dir / first.get("path", "")
    return model_dir


def cached_export(model_dir: str | Path, variant: str = "optimized", all_layers: bool = False,
                  cache_dir: str | Path | None = None) -> tuple[Path, bool]:
    """The export of `model_dir` for `variant`, made once per model content: (folder, whether it was cached)."""
    digest = folder_digest(model_dir)
    folder = Path(cache_dir or default_cache_dir()) / f"{digest[:24]}-{variant}{'-layers' if all_layers else ''}"
    meta = folder / META
    if meta.is_file() and json.loads(meta.read_text()).get("format") == FORMAT:
        return folder, True
    return export_onnx(model_dir, folder, variant, all_layers), False


class OnnxEncoder:
    """Sentence embeddings from an exported folder with ONNX Runtime; what `SentenceTransformer.encode` gives."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META).read_text())
        self.variant = self.meta["variant"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.folder / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))

    def _batches(self, sentences: Sequence[str], batch_size: int):
        """(positions, model output) per batch, longest sentences first, as `SentenceTransformer.encode` does."""
        import numpy as np

        order = np.argsort([-len(s) for s in sentences], kind="stable")
        for start in range(0, len(sentences), batch_size):
            chosen = order[start : start + batch_size]
            tokens = self.tokenizer([sentences[i] for i in chosen], padding=True, truncation=True,
                                    max_length=self.meta["max_seq_length"], return_tensors="np")
            feeds = {k: tokens[k].astype(np.int64) for k in self.meta["inputs"]}
            yield chosen, tokens["attention_mask"], self.session.run(None, feeds)[0]

    def _pool(self, states, mask):
        import numpy as np

        mode = self.meta["pooling"]
        if mode == "cls":
            pooled = states[:, 0]
        elif mode == "max":
            pooled = np.where(mask[..., None] > 0, states, -1e9).max(axis=1)
        else:
            weights = mask[..., None].astype(states.dtype)
            pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if self.meta["normalize"]:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)

    def encode(self, sentences: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 [N, width] in the order given; the full model (the last layer of an all-layers export)."""
        import numpy as np

        sentences = [str(s) for s in sentences]
        result = np.zeros((len(sentences), self.meta["width"]), dtype=np.float32)
        for chosen, mask, states in self._batches(sentences, batch_size):
            result[chosen] = self._pool(states[-1] if self.meta["all_layers"] else states, mask)
        return result

    def encode_layers(self, sentences: Sequence[str], batch_size: int = 64) -> list:
        """Per layer 0..n, float32 [N, width]: what `paperline.ml.layer_grid.encode_layers` returns, in numpy."""
        import numpy as np

        if not self.meta["all_layers"]:
            raise PaperlineError(f"{self.folder} was exported without all layers; export with all_layers=True")
        sentences = [str(s) for s in sentences]
        result = np.zeros((self.meta["layers"] + 1, len(sentences), self.meta["width"]), dtype=np.float32)
        for chosen, mask, states in self._batches(sentences, batch_size):
            for k in range(states.shape[0]):
                result[k, chosen] = self._pool(states[k], mask)
        return list(result)


def load_encoder(model_dir: str | Path, variant: str = "optimized", all_layers: bool = False,
                 cache_dir: str | Path | None = None) -> OnnxEncoder:
    """Export (or reuse the export of) `model_dir` and load it."""
    folder, _ = cached_export(model_dir, variant, all_layers, cache_dir)
    return OnnxEncoder(folder)
