"""The defaults of what follows the champion, in a module light enough for the CLI's parser to read: building the
parser must not import MLflow, torch or tqdm (tqdm reads TQDM_DISABLE once, when it is first imported, and the
quiet environment is set after the parser is built)."""

from __future__ import annotations

from importlib.util import find_spec

from paperline.ml.drift import DEFAULT_MAX_ROWS  # noqa: F401 -- texts a side of a drift check: the test's own

# backend name -> (fast_encode variant, runtime); (None, None): sentence-transformers' own encode, PyTorch.
# Measured on the WordNet glosses, 2 cores (bench/results/batch_encode.md): openvino (bf16 where the CPU has it,
# else f32) 4.6x torch at cosine >= 0.999; onnx 2.4x at cosine 1.0; onnx-int8 2.9x at STS-B -0.04
BACKENDS = {"openvino": ("optimized", "openvino"), "onnx": ("optimized", "onnxruntime"),
            "onnx-int8": ("int8", "onnxruntime"), "torch": (None, None)}
# the fastest at equal quality where its package is installed (`pip install paperline[openvino]`), else ONNX
# Runtime; find_spec looks for the package without importing it
DEFAULT_BACKEND = "openvino" if find_spec("openvino") is not None else "onnx"
MIN_RECALL = 0.95  # recall@10 against exact search an index must reach before `serving` moves to it
