"""`paperline export-onnx NAME@ALIAS`: a registered sentence-transformers model as an ONNX pyfunc that
`mlflow models serve` answers on a CPU with ONNX Runtime (paperline.ml.fast_encode; the pyfunc is
src/paperline/serving/onnx_pyfunc.py, models from code, no pickle).

The export is checked before anything is logged: the pyfunc's embeddings of a fixed set of sentences against the
PyTorch model's, cosine >= `MIN_COSINE["optimized"]` (0.999) for fp32, >= `MIN_COSINE["int8"]` (0.95) for the
int8 export; below that nothing is registered. The result is a new version of `<name>_onnx` (a model of its
own: the policy, the champion and the audit history of `<name>` do not change), with the same alias as the
source (`sbert_sts_onnx@champion`), tags naming the source version, and a run in the source's experiment.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from paperline.core.errors import PaperlineError, UsageError
from paperline.ops.tracking import tags
from paperline.ops.tracking.client import access, grant_for

PYFUNC = Path(__file__).resolve().parents[2] / "serving" / "onnx_pyfunc.py"  # src/paperline/serving
MIN_COSINE = {"optimized": 0.999, "int8": 0.95}
CHECK_SENTENCES = ["A man is playing a guitar.", "A woman is slicing an onion.", "Two dogs run across a field.",
                   "The stock market fell sharply on Monday after the announcement.", "no", "Il pleut."]
REQUIREMENTS = ["onnxruntime", "transformers", "tokenizers", "numpy"]


@dataclass(frozen=True)
class OnnxVersion:
    name: str
    version: str
    alias: str
    source: str  # models:/<name>/<version> it was exported from
    variant: str
    min_cosine: float
    run_id: str


def pyfunc_embeddings(folder: str | Path, sentences: list[str]):
    """What the served pyfunc returns for `sentences`, from an export folder (loaded as MLflow would)."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "model"
        mlflow.pyfunc.save_model(str(saved), python_model=str(PYFUNC), artifacts={"onnx": str(folder)},
                                 pip_requirements=REQUIREMENTS)  # given: MLflow's inference of them takes seconds
        return mlflow.pyfunc.load_model(str(saved)).predict(sentences)


def min_cosine(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(cos.min())


def export_registered(client, model: str, variant: str = "optimized") -> OnnxVersion:
    """Export `name@alias` to ONNX, check it against PyTorch, log it as a pyfunc and register `<name>_onnx`."""
    import mlflow

    from paperline.core.requirements import pinned_requirements
    from paperline.ml import fast_encode
    from paperline.project.sections import SENTENCES_EXAMPLE

    name, sep, alias = model.partition("@")
    if not sep or not name or not alias:
        raise UsageError(f"'{model}' is not <name>@<alias>; e.g. sbert_sts@champion")
    try:
        source = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        raise UsageError(f"cannot find {name}@{alias}: {str(exc).splitlines()[0]}; `paperline models ls` lists "
                         "models and aliases") from None
    uri = f"models:/{name}/{source.version}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            encoder = mlflow.sentence_transformers.load_model(uri)
        except mlflow.exceptions.MlflowException as exc:  # another flavor (a pyfunc cross-encoder)
            raise UsageError(f"{name}@{alias} (v{source.version}) is not a sentence-transformers model, which is "
                             f"what export-onnx exports ({str(exc).splitlines()[0]})") from None
        encoder.save(str(Path(tmp) / "model"))
        try:
            folder = fast_encode.export_onnx(Path(tmp) / "model", Path(tmp) / "onnx", variant)
        except fast_encode.NotExportable as exc:
            raise UsageError(f"{name}@{alias}: {exc}") from None
        reference = encoder.encode(CHECK_SENTENCES, convert_to_numpy=True)
        cosine = min_cosine(pyfunc_embeddings(folder, CHECK_SENTENCES), reference)
        if cosine < MIN_COSINE[variant]:
            raise PaperlineError(f"the {variant} ONNX export of {name}@{alias} gives cosine {cosine:.4f} to the "
                                 f"PyTorch embeddings (< {MIN_COSINE[variant]}); not registered")
        target = f"{name}_onnx"
        experiment = _experiment_of(client, source)
        # The fluent API is not the checked client: a 401/403 here is made one line by `access`, and the run it
        # started ends FAILED on the way out.
        with access(f"write the ONNX export's run to the experiment of {name}@{alias}", client.tracking_uri), \
                mlflow.start_run(experiment_id=experiment,
                                 run_name=f"{target}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}") as run:
            mlflow.log_params({"source": uri, "variant": variant})
            mlflow.log_metric("min_cosine_to_torch", cosine)
            info = mlflow.pyfunc.log_model(
                name=target, python_model=str(PYFUNC), artifacts={"onnx": str(folder)},
                pip_requirements=pinned_requirements(REQUIREMENTS), input_example=SENTENCES_EXAMPLE,
                metadata={"source": uri, "variant": variant})
        with access(f"register a new version of the model '{target}'", client.tracking_uri,
                    grant=grant_for("create_model_version", {"name": target})):
            registered = mlflow.register_model(info.model_uri, target, tags={
                tags.ONNX_SOURCE: uri, tags.ONNX_VARIANT: variant,
                tags.ONNX_MIN_COSINE: f"{cosine:.6f}"})
        client.set_registered_model_alias(target, alias, registered.version)
    return OnnxVersion(target, str(registered.version), alias, uri, variant, cosine, run.info.run_id)


def _experiment_of(client, version) -> str | None:
    if version.run_id:
        return client.get_run(version.run_id).info.experiment_id
    return None
