"""Cached task results that cannot run code, and the check a flow makes before it uses one.

The cached tasks (data gate, train, evaluate) persist their results with `RESULTS`, a Prefect serializer over
`paperline.ops.cache.results` (checked JSON of paperline's own result types; nothing is unpickled, nothing is
imported by name). That is not enough on its own: a stored record names the serializer it was written with, and
Prefect reads a record with the serializer it names, already when it only checks whether the record exists. A
file swapped into the result store saying `"type": "pickle"` would run. So before a cached task is called,
`verified(task, key)` reads the stored record as plain JSON, checks that it is ours, its payload's sha256 and
(for a trained model) the files of the model folder, and on any mismatch logs one line naming the file and
calls the task with `refresh_cache=True`: Prefect then does not read the record at all, recomputes, and
overwrites it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from prefect import get_run_logger
from prefect.results import get_result_store
from prefect.serializers import Serializer

from paperline.ops.cache.results import CachedResultError, decode, encode


class PaperlineResultSerializer(Serializer):
    """Prefect's view of `paperline.ops.cache.results`: dumps and loads through the checked JSON codec."""

    type: Literal["paperline-json"] = "paperline-json"

    def dumps(self, obj: Any) -> bytes:
        return encode(obj)

    def loads(self, blob: bytes) -> Any:
        return decode(blob)


RESULTS = PaperlineResultSerializer()


def stored_result_problem(task, key: str) -> str | None:
    """Why the result `task` stored under `key` must not be used, in one line naming the file; None when there is
    none (the task computes) or it verifies."""
    storage = get_result_store().update_for_task(task).result_storage
    where = _location(storage, key)
    try:
        content = storage.read_path(key)
    except Exception:  # noqa: BLE001 - nothing stored under that key; Prefect's own check treats any error alike
        return None
    try:
        record = json.loads(content)
        serializer = record["metadata"]["serializer"]["type"]
        payload = record["result"]
    except (ValueError, TypeError, KeyError):
        return f"cached result {where} is not a result record; not loaded, recomputing {task.name}"
    if serializer != RESULTS.type:
        return (f"cached result {where} was written with the '{serializer}' serializer, not '{RESULTS.type}'; "
                f"not loaded, recomputing {task.name}")
    try:
        decode(payload.encode() if isinstance(payload, str) else payload)
    except (CachedResultError, AttributeError) as exc:
        return f"cached result {where} cannot be used: {exc}; recomputing {task.name}"
    return None


def verified(task, key: str):
    """`task`, or, when its stored result under `key` fails the check, the task set to recompute and overwrite it."""
    problem = stored_result_problem(task, key)
    if problem is None:
        return task
    get_run_logger().warning(problem)
    return task.with_options(refresh_cache=True)


def _location(storage, key: str) -> str:
    resolve = getattr(storage, "_resolve_path", None)  # a local folder: the file a user can look at
    try:
        return str(resolve(key)) if resolve else f"{type(storage).__name__}:{key}"
    except (ValueError, OSError):  # a key outside the block's folder
        return key
