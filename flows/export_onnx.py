"""Re-export a champion to ONNX when it moves: `<model>@champion` -> ONNX Runtime pyfunc checked against PyTorch
-> `<model>_onnx@champion` (paperline.ops.registry.onnx_export; `paperline export-onnx` by hand).

Deployed as `export-onnx-sbert-sts` (infra/prefect.yaml), triggered by a champion move of sbert_sts, so the ONNX
model that serves CPU traffic follows the champion without anyone rerunning the command. Run as a script:
`python -m paperline_flows.export_onnx sbert_sts@champion`.
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger

from paperline.core.settings import Settings
from paperline.ops.registry.onnx_export import export_registered
from paperline.ops.tracking.client import connect


@flow(name="paperline-export-onnx", flow_run_name="export-onnx-{model}", persist_result=False)
def export_onnx(model: str = "sbert_sts@champion", int8: bool = False) -> str:
    """Export `<model>@<alias>` to ONNX Runtime, check it against PyTorch and register `<model>_onnx@<alias>`.

    Args:
        model: `<model>@<alias>`, e.g. sbert_sts@champion.
        int8: Dynamic int8 quantisation (faster; STS-B within 0.1 of PyTorch) instead of fp32.
    """
    done = export_registered(connect(Settings.from_env()), model, "int8" if int8 else "optimized")
    line = (f"registered {done.name} v{done.version} (alias {done.alias}): {done.variant} ONNX of {done.source}, "
            f"min cosine to PyTorch {done.min_cosine:.4f}")
    get_run_logger().info(line)
    return line


if __name__ == "__main__":
    print(export_onnx(sys.argv[1] if len(sys.argv) > 1 else "sbert_sts@champion"))
