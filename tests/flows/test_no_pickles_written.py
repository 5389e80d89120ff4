"""Nothing the flows write is a pickle: after real runs of the flows in a workspace (a smoke run, a sweep, a
leaderboard, a promotion by the promote flow on a worker that persists results by default), no file of the
workspace or of the result store is a pickle, or a Prefect result record whose payload is one.

tests/unit/test_no_pickle.py scans the source for pickle calls; this one looks at what the flows left on disk,
where Prefect's default result serializer (cloudpickle) would have put a flow's return value.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from repo_copy import BIN

MODEL = "sbert_sts-smoke"
PICKLE_MAGIC = {bytes([0x80, protocol]) for protocol in (2, 3, 4, 5)}
PICKLING_SERIALIZERS = {"pickle", "compressed/pickle"}  # Prefect's; both hold a cloudpickle payload
NOT_WRITTEN_BY_RUNS = {"data", ".dvc", ".git"}  # the versioned data and git, as the copy was made
LARGEST_JSON = 64 * 1024 * 1024


def pickles_under(root: Path) -> list[str]:
    """Every file under `root` that is a pickle (protocol 2-5 magic at offset 0), the base64 of one (Prefect's
    local result storage writes a pickled result so: `gAR...`), or a JSON result record whose serializer pickles,
    as `<path>: <why>`."""
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_symlink() or not path.is_file() or (relative.parts and relative.parts[0] in NOT_WRITTEN_BY_RUNS):
            continue
        with path.open("rb") as f:
            head = f.read(8)
        if head[:2] in PICKLE_MAGIC:
            found.append(f"{path}: pickle protocol {head[1]}")
        elif _base64_pickle(head):  # how Prefect's local storage writes a pickled result
            found.append(f"{path}: base64 of a pickle")
        elif head[:1] == b"{" and path.stat().st_size <= LARGEST_JSON:
            serializer = _serializer(path)
            if serializer in PICKLING_SERIALIZERS:
                found.append(f"{path}: Prefect result record with serializer '{serializer}'")
    return found


def _base64_pickle(start: bytes) -> bool:
    try:
        return base64.b64decode(start, validate=True)[:2] in PICKLE_MAGIC
    except ValueError:
        return False


def _serializer(path: Path) -> str | None:
    try:
        record = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return None
    metadata = record.get("metadata") if isinstance(record, dict) else None
    serializer = metadata.get("serializer") if isinstance(metadata, dict) else None
    return serializer.get("type") if isinstance(serializer, dict) else None


def test_the_scan_finds_a_pickle_and_a_pickled_result_record(tmp_path):
    import pickle

    (tmp_path / "plain.json").write_text('{"metadata": {"serializer": {"type": "paperline-json"}}}')
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    (tmp_path / "b64").write_bytes(base64.b64encode(pickle.dumps(None, protocol=5)))
    (tmp_path / "record").write_text('{"metadata": {"serializer": {"type": "pickle"}}, "result": "gAR..."}')
    assert pickles_under(tmp_path) == [f"{tmp_path / 'a.pkl'}: pickle protocol 4",
                                       f"{tmp_path / 'b64'}: base64 of a pickle",
                                       f"{tmp_path / 'record'}: Prefect result record with serializer 'pickle'"]


def test_no_flow_leaves_a_pickle_in_the_workspace_or_the_result_store(workspace, prefect_api):
    ran = workspace.paperline("run", "sbert_sts", "--config", "smoke")
    assert ran.returncode == 0, ran.stderr[-3000:]
    # another seed: a second version, which the promote flow below can move `champion` to (or back from)
    swept = workspace.paperline("sweep", "sbert_sts", "--config", "smoke", "seed=1", "--workers", "1")
    assert swept.returncode == 0, swept.stdout[-2000:] + swept.stderr[-2000:]
    board = workspace.paperline("leaderboard", "--include-capped")
    assert board.returncode == 0, board.stderr[-2000:]
    # The promote flow as a deployment's worker runs it: Prefect's own settings, persisting results by default
    # into the workspace's result store.
    results = workspace.root / ".paperline" / "prefect" / "results"
    worker_env = {**workspace.env, "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
                  "PREFECT_LOCAL_STORAGE_PATH": str(results)}
    champion = workspace.client().get_model_version_by_alias(MODEL, "champion").version
    other = "1" if str(champion) == "2" else "2"
    promoted = subprocess.run([str(BIN / "python"), "-m", "paperline_flows.promotion", "promote", MODEL, other,
                               "--reason", "the no-pickle check", "--force"], cwd=workspace.root, env=worker_env,
                              capture_output=True, text=True, timeout=600)
    assert promoted.returncode == 0, promoted.stdout[-2000:] + promoted.stderr[-2000:]

    assert any(results.iterdir()), "the cached steps wrote no result: the scan would prove nothing"
    home = Path(prefect_api[1])
    assert pickles_under(workspace.root) + pickles_under(home) == []
