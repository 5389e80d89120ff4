"""Cached step results as checked JSON: a codec that can only build paperline's own result types, never run code.

The flow caches the data gate, `train` and `evaluate` in the workspace (Prefect's result store). Prefect's default
serializer is cloudpickle, so a file swapped into that folder would run whatever it pickled on the next
`paperline run`; Prefect's JSON serializer is no better here, as it imports any class a payload names. This codec
writes and reads plain JSON:

- an envelope `{"format", "sha256", "payload"}`: the sha256 of the payload text, checked before it is parsed, so
  a payload edited by hand or cut short is refused, not half-read;
- in the payload, dataclasses of a closed list of types (`KNOWN_TYPES`: TrainedModel, Evaluation, the gate's
  result and what they hold) by name, field by field, so a field added to one of them later (a list of dicts, a
  path) needs no change here; paths; lists; dicts with text keys; numbers, text, booleans and null. Anything
  else is refused when written, and an unknown type name when read: nothing is imported by name;
- a TrainedModel's model folder as its path plus the sha256 of every file in it, compared when the result is
  read: a model whose weights changed since `train` wrote them is not trusted, and the step is recomputed;
- an exception (Prefect persists a failed task's error with the same serializer) as its type's name and message
  only, read back as a `StoredError` with that text: never as its class.

Prefect is not imported here (the library never imports it): the Prefect serializer that uses this codec is in
`paperline_flows.results`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from paperline.core.errors import PaperlineError
from paperline.data.quality_report import (
    ExpectationFailure,
    ExpectationOutcome,
    GateOutcome,
    GateResult,
)
from paperline.project.interface import Evaluation, PyfuncSpec, TrainedModel

FORMAT = "paperline.cached-result/1"
KNOWN_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    TrainedModel, PyfuncSpec, Evaluation, GateOutcome, GateResult, ExpectationFailure, ExpectationOutcome)}
# Fields whose folder is recorded with the sha256 of its files and checked when read.
CHECKSUMMED_FIELDS = {"TrainedModel": ("path",)}
_TAGS = ("$type", "$path", "$dict", "$error")  # an object holding one of these is a tagged value, not a dict


class CachedResultError(PaperlineError):
    """A cached result that cannot be used: not ours, damaged, or its model files changed; it is recomputed."""


class StoredError(PaperlineError):
    """A failed task's error as it was stored: its message, and the exit code of the error it was."""

    def __init__(self, message: str, exit_code: int = PaperlineError.exit_code):
        super().__init__(message)
        self.exit_code = exit_code


def encode(obj: Any) -> bytes:
    """The JSON bytes of a result (a TrainedModel, an Evaluation, a GateOutcome), with its payload's sha256."""
    payload = json.dumps(_encode(obj, "result"), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(payload.encode()).hexdigest()
    return json.dumps({"format": FORMAT, "sha256": digest, "payload": payload}).encode()


def decode(blob: bytes) -> Any:
    """The result that `encode` wrote, after checking the payload against its sha256 and every checksummed model
    folder against its files; anything else is a CachedResultError saying what differs."""
    try:
        envelope = json.loads(blob)
        fmt, digest, payload = envelope["format"], envelope["sha256"], envelope["payload"]
    except (ValueError, TypeError, KeyError) as exc:  # a pickle, a truncated file, another serializer's JSON
        raise CachedResultError(f"not a paperline result ({type(exc).__name__})") from None
    if fmt != FORMAT:
        raise CachedResultError(f"result format {fmt!r}, expected {FORMAT!r}")
    if not isinstance(payload, str) or hashlib.sha256(payload.encode()).hexdigest() != digest:
        raise CachedResultError("the payload differs from the sha256 recorded with it")
    return _decode(json.loads(payload))


# ---- encoding ---------------------------------------------------------------------------------------------------


def _encode(value: Any, where: str) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # a numpy scalar or array (a metric)
        value = value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return {"$path": str(value)}
    if isinstance(value, BaseException):
        return {"$error": type(value).__name__, "message": str(value),
                "exit_code": getattr(value, "exit_code", PaperlineError.exit_code)}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CachedResultError(f"cannot cache {where}: a dict with keys that are not text")
        items = {k: _encode(v, f"{where}.{k}") for k, v in value.items()}
        return {"$dict": items} if any(k in _TAGS for k in items) else items
    name = type(value).__name__
    if dataclasses.is_dataclass(value) and KNOWN_TYPES.get(name) is type(value):
        fields = {f.name: _encode(getattr(value, f.name), f"{where}.{f.name}")
                  for f in dataclasses.fields(value) if f.init}
        for field in CHECKSUMMED_FIELDS.get(name, ()):
            fields[field]["files"] = folder_manifest(Path(getattr(value, field)))
        return {"$type": name, "fields": fields}
    raise CachedResultError(f"cannot cache {where}: {name} is not one of the result types "
                            f"({', '.join(KNOWN_TYPES)}), a path, a list, a dict or a plain value")


def folder_manifest(path: Path) -> dict[str, str] | None:
    """The sha256 of every file under `path` (or of `path` itself, as "."), by relative name; None if absent."""
    if path.is_file():
        return {".": _sha256(path)}
    if not path.is_dir():
        return None
    # Checkpoints are not the model, and the flow deletes them once a run is registered (`_remove_checkpoints`).
    return {str(f.relative_to(path)): _sha256(f) for f in sorted(path.rglob("*"))
            if f.is_file() and not any(p.startswith("checkpoint-") for p in f.relative_to(path).parts[:-1])}


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ---- decoding ---------------------------------------------------------------------------------------------------


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$dict" in value:
        return {k: _decode(v) for k, v in value["$dict"].items()}
    if "$path" in value:
        path = Path(value["$path"])
        if "files" in value:
            check_files(path, value["files"])
        return path
    if "$type" in value:
        return _decode_dataclass(value["$type"], value.get("fields"))
    if "$error" in value:
        return StoredError(str(value.get("message", "")), int(value.get("exit_code", PaperlineError.exit_code)))
    return {k: _decode(v) for k, v in value.items()}


def _decode_dataclass(name: Any, fields: Any) -> Any:
    cls = KNOWN_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:  # never imported by name: only the closed list is built
        raise CachedResultError(f"unknown result type {name!r}")
    if not isinstance(fields, dict):
        raise CachedResultError(f"{name} without fields")
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    stray = sorted(set(fields) - known)
    if stray:
        raise CachedResultError(f"{name} has no field(s) {', '.join(stray)}")
    values = {k: _decode(v) for k, v in fields.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError, PaperlineError) as exc:  # a field missing; a contract check in __post_init__
        raise CachedResultError(f"{name}: {exc}") from None


def check_files(path: Path, recorded: dict[str, str] | None) -> None:
    """Raise CachedResultError naming the first file under `path` that differs from `recorded` (its manifest)."""
    if recorded is None:
        raise CachedResultError(f"{path} did not exist when the result was cached")
    found = folder_manifest(path)
    if found is None:
        raise CachedResultError(f"the model folder {path} is missing")
    for name, digest in sorted(recorded.items()):
        file = path if name == "." else path / name
        if name not in found:
            raise CachedResultError(f"{file} is missing from the model folder")
        if found[name] != digest:
            raise CachedResultError(f"{file} differs from the sha256 recorded when the model was cached")
    added = sorted(set(found) - set(recorded))
    if added:
        raise CachedResultError(f"{path / added[0]} was added to the model folder after it was cached")
