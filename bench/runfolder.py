"""A local-cloud run's lifecycle, shared by `make chaos` and `make burst`: a folder for its logs,
signals turned into a clean stop, and the exit status.

The folder is removed unless the run failed or ``keep`` is set; then its path is printed, so a
failure can be read afterwards.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from notifier.tools.processes import LocalCloudError, Stopped, stop_on_signals


def run_in_folder(
    name: str,
    keep: bool,
    body: Callable[[Path], int],
    failures: tuple[type[Exception], ...] = (LocalCloudError,),
) -> int:
    """``body(folder)``'s exit status: 0 passed, 1 failed (or raised one of ``failures``, said in one
    line), 128+N stopped by signal N (everything it started stopped first)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"notifier-{name}-"))
    code, stopped = 1, False
    try:
        with stop_on_signals():
            code = body(workdir)
    except Stopped as stop:
        print(f"{name}: stopped by {stop}; everything it started is stopped", file=sys.stderr)
        code, stopped = 128 + stop.signum, True
    except failures as error:
        print(f"{name}: {error}", file=sys.stderr)
    finally:
        if keep or not (code == 0 or stopped):
            print(f"logs: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return code
