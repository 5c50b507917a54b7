"""The function's files as the platform runs them: what is uploaded, built as the Python buildpack
builds it, then exported as a buildpacks image is.

- Uploaded: what .gcloudignore lets through (main.py, notifier/ without tools, templates/), no
  __pycache__.
- Built: the functions-framework buildpack runs ``python3 -m compileall -f -q .`` in the
  workspace (GoogleCloudPlatform/buildpacks, cmd/python/functions_framework/lib/lib.go, "check for
  syntax errors"), which writes our bytecode. deploy/deploy.sh sets SOURCE_DATE_EPOCH for the build,
  so py_compile writes checked-hash .pyc files (PEP 552) instead of timestamped ones.
- Exported: the buildpacks lifecycle sets every file's mtime in the image to 1980-01-01 00:00:01
  (buildpacks/lifecycle#249, #1358). A timestamped .pyc then no longer matches its source, so every
  cold start would compile our modules again; a checked-hash one still does.

``stale=True`` models a build without SOURCE_DATE_EPOCH: timestamped bytecode, stale at run time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

EXPORTED_MTIME = 315_532_801  # 1980-01-01T00:00:01Z, the lifecycle's normalized time
BUILD_ENV = {"SOURCE_DATE_EPOCH": str(EXPORTED_MTIME)}  # what deploy/deploy.sh passes the build
_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "tools")  # tools: .gcloudignore leaves it out


def build(source: Path, folder: Path, *, stale: bool = False) -> Path:
    """``source``'s folder (main.py, and notifier/ and templates/ if there) copied into ``folder``,
    compiled and exported as above; the main.py to serve."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, folder / "main.py")
    for part in ("notifier", "templates"):
        if (source.parent / part).is_dir():
            shutil.copytree(source.parent / part, folder / part, ignore=_SKIPPED)
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "PYTHONDONTWRITEBYTECODE")}
    if not stale:
        env.update(BUILD_ENV)
    subprocess.run([sys.executable, "-m", "compileall", "-f", "-q", "."], cwd=folder, env=env, check=True)
    _export(folder)
    return folder / "main.py"


def _export(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (EXPORTED_MTIME, EXPORTED_MTIME), follow_symlinks=False)
