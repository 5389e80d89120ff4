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

`int8-static` is post-training static int8 (NNCF's `nncf.quantize` of the un-fused ONNX graph, transformer
preset, calibrated on sentences the caller gives; the feed-forward output projections stay float, which kept
STS-B within 0.1 where quantising them too moved it 0.2): a QDQ graph that OpenVINO runs in int8 (ONNX Runtime
runs it too, slower). `backend="openvino"` runs any export with OpenVINO instead of ONNX Runtime (imported
lazily); its precision hint, by default OpenVINO's own choice, is bf16 on CPUs with native bf16 (AVX512_BF16
or AMX), else f32. Batches are formed by token length (each sentence tokenised once, neighbours in length
batched, the order restored): on WordNet glosses that pads 1.002x the real tokens at batch 64 where the
character-length order of `SentenceTransformer.encode` pads 1.38x. The dynamic int8 variants keep the
character order: their per-batch activation scales make an embedding depend on the rest of its batch, and
their quality was measured in that order. Measurements: docs/benchmarks.md (d) and (g).

Only models that are a transformer, a `Pooling` (mean, cls or max) and optionally a `Normalize` are exported;
anything else raises `NotExportable`, and callers fall back to PyTorch. Exports are cached under
`<workspace>/.paperline/onnx/<sha256 of the model folder's files>-<variant>[-layers][-cal<sha256 of the
calibration sentences>]` (`PAPERLINE_ONNX_CACHE` moves it), so every evaluation of the same model reuses one
export. No MLflow, Prefect, DVC or GX here.
"""

from __future__ import annotations

import hashlib
import itertools
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

VARIANTS = ("optimized", "int8", "int8-all", "int8-static")
DYNAMIC = ("int8", "int8-all")  # activations quantised per batch: an embedding depends on its batch's other rows
BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("f32", "bf16")  # OpenVINO's inference precision hint; None leaves OpenVINO's default
ORDERS = ("tokens", "chars")
FORMAT = 1  # bump when the export recipe changes: old cache entries then miss
META = "paperline_onnx.json"
_SAMPLES = ["A man is playing a guitar.", "hello", "An unusually long sentence " * 200]
_TOKENIZE_CHUNK = 4096  # sentences per tokenizer call while tokenising a whole input once
# the feed-forward output projection (BERT, RoBERTa, MPNet: layer.N/output/dense; DistilBERT: ffn/lin2), whose
# input (after GELU) has the widest range: int8-static keeps it float
_STATIC_KEEP_FLOAT = [r".*layer\.\d+/output/dense/MatMul", r".*/ffn/lin2/MatMul"]


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


def export_onnx(model_dir: str | Path, out: str | Path, variant: str = "optimized", all_layers: bool = False,
                calibration: Sequence[str] | None = None) -> Path:
    """Write `out/`: model.onnx, the tokenizer's files and `paperline_onnx.json`; whole or not at all.

    `all_layers=True` adds every layer's hidden states as one output [layers+1, batch, tokens, width] (the
    layer x dims grid needs them, `paperline.ml.layer_grid`). `calibration`: the sentences `int8-static`
    measures activation ranges on (a few hundred real sentences of the workload; required for it, unused
    otherwise).
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    if variant not in VARIANTS:
        raise PaperlineError(f"unknown ONNX variant '{variant}'; choose one of {', '.join(VARIANTS)}")
    calibration = _calibration(variant, calibration)
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
        if variant == "int8-static":  # calibrated on the un-fused graph: NNCF's transformer patterns match it
            _quantize_static(raw, work / "model.onnx", tokenizer, inputs, meta["max_seq_length"], calibration)
            meta.update(calibration_sentences=len(calibration), calibration_sha256=_calibration_digest(calibration))
            raw.unlink()
        else:
            from onnxruntime.transformers.optimizer import optimize_model

            optimized = optimize_model(str(raw), model_type="bert", num_heads=int(config.num_attention_heads),
                                       hidden_size=int(config.hidden_size), opt_level=0, use_gpu=False)
            optimized.save_model_to_file(str(work / "optimized.onnx"))
            raw.unlink()
        if variant in DYNAMIC:
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(work / "optimized.onnx"), str(work / "model.onnx"), weight_type=QuantType.QInt8,
                             per_channel=True,  # per-tensor scales cost 0.01-0.1 cosine per sentence on MiniLM
                             op_types_to_quantize=None if variant == "int8-all" else ["MatMul"],
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            (work / "optimized.onnx").unlink()
        elif variant == "optimized":
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


def _calibration(variant: str, calibration: Sequence[str] | None) -> list[str] | None:
    if variant != "int8-static":
        return None
    sentences = [str(s) for s in calibration or []]
    if not sentences:
        raise PaperlineError("the int8-static export needs calibration sentences (a few hundred real texts of the "
                             "workload): pass calibration=[...]")
    return sentences


def _calibration_digest(sentences: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(sentences)).encode()).hexdigest()


def _quantize_static(raw: Path, out: Path, tokenizer, inputs: list[str], max_length: int,
                     calibration: list[str]) -> None:
    """NNCF post-training int8 of the un-fused graph `raw` (weights per channel, activations per tensor from
    the calibration sentences, one at a time at their own length), written as a QDQ ONNX graph to `out`."""
    try:
        import nncf
    except ImportError:
        raise PaperlineError("the int8-static export needs the nncf package (pip install nncf)") from None
    import numpy as np
    import onnx

    def feeds(sentence: str) -> dict:
        tokens = tokenizer([sentence], truncation=True, max_length=max_length, return_tensors="np")
        return {k: tokens[k].astype(np.int64) for k in inputs}

    quantized = nncf.quantize(onnx.load(str(raw)), nncf.Dataset(calibration, feeds),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration),
                              ignored_scope=nncf.IgnoredScope(patterns=_STATIC_KEEP_FLOAT, validate=False))
    onnx.save(quantized, str(out))


def cached_export(model_dir: str | Path, variant: str = "optimized", all_layers: bool = False,
                  cache_dir: str | Path | None = None,
                  calibration: Sequence[str] | None = None) -> tuple[Path, bool]:
    """The export of `model_dir` for `variant`, made once per model content: (folder, whether it was cached).

    `int8-static` needs `calibration` sentences, and its export is made once per model and calibration set."""
    calibration = _calibration(variant, calibration)
    digest = folder_digest(model_dir)
    name = f"{digest[:24]}-{variant}{'-layers' if all_layers else ''}"
    if calibration is not None:
        name += f"-cal{_calibration_digest(calibration)[:12]}"
    folder = Path(cache_dir or default_cache_dir()) / name
    meta = folder / META
    if meta.is_file() and json.loads(meta.read_text()).get("format") == FORMAT:
        return folder, True
    if calibration is not None:
        return export_onnx(model_dir, folder, variant, all_layers, calibration), False
    return export_onnx(model_dir, folder, variant, all_layers), False


class OnnxEncoder:
    """Sentence embeddings from an exported folder with ONNX Runtime (or OpenVINO); what `SentenceTransformer.encode`
    gives.

    `threads`: the runtime's intra-op threads (None: its default, every core). `backend`: "onnxruntime" or
    "openvino" (the `openvino` package, imported here only). `precision` (OpenVINO only): "f32", "bf16", or None
    for OpenVINO's default (bf16 on CPUs with native bf16, else f32); `self.precision` says what it chose.
    `order`: how sentences are batched, "tokens" (by token length: the least padding) or "chars" (by character
    length, as `SentenceTransformer.encode`); None: "tokens", except for the dynamic int8 variants (`DYNAMIC`),
    whose embeddings depend on their batch and keep the order they were measured in.
    """

    def __init__(self, folder: str | Path, threads: int | None = None, backend: str = "onnxruntime",
                 precision: str | None = None, order: str | None = None):
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META).read_text())
        self.variant = self.meta["variant"]
        if backend not in BACKENDS:
            raise PaperlineError(f"unknown encode backend '{backend}'; choose one of {', '.join(BACKENDS)}")
        if precision is not None and (backend != "openvino" or precision not in PRECISIONS):
            raise PaperlineError(f"precision '{precision}' is an OpenVINO hint ({', '.join(PRECISIONS)}) and needs "
                                 "backend='openvino'")
        self.order = order or ("chars" if self.variant in DYNAMIC else "tokens")
        if self.order not in ORDERS:
            raise PaperlineError(f"unknown batch order '{order}'; choose one of {', '.join(ORDERS)}")
        self.backend = backend
        self.session = None
        if backend == "openvino":
            self._run = self._openvino(threads, precision)
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(self.folder / "model.onnx"), options,
                                                providers=["CPUExecutionProvider"])
            self.precision = "f32"
            self._run = lambda feeds: self.session.run(None, feeds)[0]
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder))
        self._plain = self._pads_plainly()

    def _openvino(self, threads: int | None, precision: str | None):
        try:
            import openvino
        except ImportError:
            raise PaperlineError("backend='openvino' needs the openvino package (pip install openvino); "
                                 "backend='onnxruntime' needs nothing more") from None
        # LATENCY: one stream over every thread; for one batch after another this measured faster than streams
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        core = openvino.Core()
        compiled = core.compile_model(core.read_model(str(self.folder / "model.onnx")), "CPU", config)
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        request, output = compiled.create_infer_request(), compiled.output(0)
        return lambda feeds: request.infer(feeds)[output]  # a copy: the next infer does not overwrite it

    def _pads_plainly(self) -> bool:
        """Whether padding token ids in numpy (right-padded with the pad id, mask 1 on tokens, token types 0)
        gives what the tokenizer's own padding gives; else each batch is tokenised again with padding."""
        import numpy as np

        if self.tokenizer.pad_token_id is None:
            return False
        theirs = self.tokenizer(_SAMPLES, padding=True, truncation=True, max_length=self.meta["max_seq_length"],
                                return_tensors="np")
        ours = self._feeds(*self._tokenize(_SAMPLES), np.arange(len(_SAMPLES)))[1]
        return all(k in theirs and np.array_equal(theirs[k], ours[k]) for k in self.meta["inputs"])

    def _tokenize(self, sentences: Sequence[str]):
        """Every sentence tokenised once, unpadded: (token counts [N], offsets [N], token ids flat int32)."""
        import numpy as np

        counts, flat = np.zeros(len(sentences), dtype=np.int64), []
        for start in range(0, len(sentences), _TOKENIZE_CHUNK):
            ids = self.tokenizer(list(sentences[start : start + _TOKENIZE_CHUNK]), truncation=True,
                                 max_length=self.meta["max_seq_length"], return_attention_mask=False,
                                 return_token_type_ids=False)["input_ids"]
            counts[start : start + len(ids)] = [len(x) for x in ids]
            flat.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32))
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(counts) else counts
        return counts, offsets, np.concatenate(flat) if flat else np.zeros(0, dtype=np.int32)

    def _feeds(self, counts, offsets, flat, chosen):
        """(attention mask, model inputs) for the sentences `chosen`, right-padded to the longest of them."""
        import numpy as np

        lengths = counts[chosen]
        width = max(int(lengths.max()), 1)
        mask = np.arange(width)[None, :] < lengths[:, None]
        where = np.minimum(offsets[chosen][:, None] + np.arange(width)[None, :], max(len(flat) - 1, 0))
        ids = np.where(mask, flat[where] if len(flat) else 0, self.tokenizer.pad_token_id or 0).astype(np.int64)
        mask = mask.astype(np.int64)
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return mask, {k: inputs[k] for k in self.meta["inputs"]}

    def _batches(self, sentences: Sequence[str], batch_size: int):
        """(positions, attention mask, model output) per batch, longest sentences first (by `self.order`)."""
        import numpy as np

        counts, offsets, flat = self._tokenize(sentences)
        if self.order == "tokens":
            order = np.argsort(-counts, kind="stable")
        else:
            order = np.argsort([-len(s) for s in sentences], kind="stable")
        for start in range(0, len(sentences), batch_size):
            chosen = order[start : start + batch_size]
            if self._plain:
                mask, feeds = self._feeds(counts, offsets, flat, chosen)
            else:
                tokens = self.tokenizer([sentences[i] for i in chosen], padding=True, truncation=True,
                                        max_length=self.meta["max_seq_length"], return_tensors="np")
                mask, feeds = tokens["attention_mask"], {k: tokens[k].astype(np.int64) for k in self.meta["inputs"]}
            yield chosen, mask, self._run(feeds)

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

    def encode(self, sentences: Sequence[str], batch_size: int = 64, dedupe: bool = False) -> np.ndarray:
        """float32 [N, width] in the order given; the full model (the last layer of an all-layers export).

        `dedupe=True` encodes each distinct sentence once and copies its row to every repeat (a corpus of
        WordNet glosses is 56% distinct)."""
        import numpy as np

        sentences = [str(s) for s in sentences]
        if dedupe:
            first: dict[str, int] = {}
            inverse = np.fromiter((first.setdefault(s, len(first)) for s in sentences), dtype=np.int64,
                                  count=len(sentences))
            if len(first) < len(sentences):
                return self.encode(list(first), batch_size)[inverse]
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
                 cache_dir: str | Path | None = None, *, backend: str = "onnxruntime", threads: int | None = None,
                 precision: str | None = None, calibration: Sequence[str] | None = None) -> OnnxEncoder:
    """Export (or reuse the export of) `model_dir` and load it (`OnnxEncoder` says what the options do)."""
    folder, _ = cached_export(model_dir, variant, all_layers, cache_dir, calibration)
    return OnnxEncoder(folder, threads=threads, backend=backend, precision=precision)
