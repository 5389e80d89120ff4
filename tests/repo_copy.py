"""A throwaway copy of the repository for tests that run DVC and the flows: its own data/, workspace and git."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BIN = Path(sys.executable).parent


_PULLED: Path | None = None  # this process's pulled copy, which every later pulled copy is copied from


def make_repo_copy(dest: Path, pull: bool = True) -> Path:
    """Copy what a run needs (projects, registry, data.dvc, .dvc/config) into `dest`, as a git repo; with `pull`,
    data/ pulled from the team's remote. The first pulled copy of a test process is made with `dvc pull` and kept;
    later ones copy it (files, DVC cache and git alike: a real copy, so a test that corrupts its data changes
    only its own), which takes a fraction of a second instead of seconds per workspace (the
    largest folders are hard-linked, see `_LINKED`)."""
    global _PULLED
    if not pull:
        return _fresh_copy(dest, pull=False)
    if _PULLED is None:
        template = Path(tempfile.mkdtemp(prefix="paperline-pulled-repo-"))
        atexit.register(shutil.rmtree, template, ignore_errors=True)
        _PULLED = _fresh_copy(template / "repo", pull=True)
    shutil.copytree(_PULLED, dest, symlinks=True, dirs_exist_ok=True, copy_function=_link_or_copy,
                    ignore=lambda folder, names: ["tmp"] if Path(folder).name == ".dvc" else [])
    return dest


# Hard-linked, not copied: DVC's cache objects (read-only; DVC replaces files, never writes into one) and the
# pictures of captioned_images (9,554 files, 49 MB per copy otherwise). A test that damages a picture must replace
# the file (write a new one and rename it over), never write into it: that would damage every copy.
_LINKED = (f"{os.sep}.dvc{os.sep}cache{os.sep}", f"{os.sep}data{os.sep}captioned_images{os.sep}images{os.sep}")


def _link_or_copy(src: str, dst: str) -> str:
    if any(part in src for part in _LINKED):
        try:
            os.link(src, dst)
            return dst
        except OSError:  # another file system: copy
            pass
    return shutil.copy2(src, dst)


def _fresh_copy(dest: Path, pull: bool) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("projects", "registry"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "data.dvc", dest / "data.dvc")
    (dest / ".gitignore").write_text("/data\n/.paperline\n")
    run = lambda *args: subprocess.run(args, cwd=dest, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run(str(BIN / "dvc"), "init", "-q")
    run(str(BIN / "dvc"), "config", "core.analytics", "false")
    # An absolute remote URL: the copy does not sit beside ../shared as the repository does.
    run(str(BIN / "dvc"), "remote", "add", "-d", "team", str(SHARED / "dvc-remote"))
    run("git", "add", "-A")
    run("git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "copy")
    if pull:
        run(str(BIN / "dvc"), "pull", "-q")
    return dest
