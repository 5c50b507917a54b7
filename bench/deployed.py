"""What `deploy/deploy.sh` deploys, read from the script itself: its `gcloud functions deploy` flags
and the environment file it passes with ``--env-vars-file``.

The benchmarks that model an instance "as deployed" (bench/capacity.py, bench/burst.py) take their
THREADS, in-flight cap, deadline and the rest from here, so they measure what users get and follow
every change to the script's defaults. It runs ``deploy.sh TRIGGER --dry-run``, then the script that
prints with a `gcloud` that only records its argv: the env file is written exactly as a deploy would
write it, and nothing reaches a cloud.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy/deploy.sh"
BASH = shutil.which("bash") or "/bin/bash"
# A recording gcloud: one JSON array of its arguments per call.
_RECORDER = (
    'gcloud() { "$BENCH_PYTHON" -c "import json, sys; print(json.dumps(sys.argv[1:]))" "$@" >>"$BENCH_ARGV"; }\n'
)


@dataclass(frozen=True)
class Deployment:
    """One function as deploy.sh deploys it."""

    flags: dict[str, str]  # `gcloud functions deploy` flags, --name=value as name -> value (bare flags: "")
    env: dict[str, str] = field(default_factory=dict)  # the --env-vars-file, variable by variable

    @property
    def concurrency(self) -> int:
        return int(self.flags.get("concurrency", "1"))

    @property
    def timeout_seconds(self) -> int:
        return int(self.flags["timeout"].rstrip("s"))

    @property
    def threads(self) -> int:
        """functions-framework's request threads: THREADS from the env file, which deploy.sh always
        writes. The benches pass it on explicitly: functions-framework's own default is
        ``os.cpu_count() x 4``, and os.cpu_count() counts the host's CPUs whatever the process's
        affinity, so a pinned instance left to that default would get the host's count x 4, not 4.
        (4 here, for an env file without THREADS, is that default on one CPU.)"""
        return int(self.env.get("THREADS", "4"))

    def describe(self) -> str:
        """The flags that size an instance, as the deploy command spells them."""
        sized = ("cpu", "memory", "concurrency", "max-instances", "timeout")
        return " ".join(f"--{name}={self.flags[name]}" for name in sized if name in self.flags)


def deployment(*options: str, trigger: str = "finalize", env_file: Path | None = None) -> Deployment:
    """deploy.sh TRIGGER's deployment with ``options`` (e.g. ``--concurrency``, ``8``) and the user
    env file ``env_file``, for a made-up project and bucket."""
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as folder:
        argv_log = Path(folder) / "argv.jsonl"
        command = [str(DEPLOY), trigger, "--dry-run", "--project", "bench-project", "--region", "us-central1",
                   "--bucket", "bench-uploads", "--trigger-location", "us-central1", *options]  # fmt: skip
        if env_file is not None:
            command += ["--env-file", str(env_file)]
        env = {**os.environ, "TMPDIR": folder, "BENCH_PYTHON": sys.executable, "BENCH_ARGV": str(argv_log)}
        env = {k: v for k, v in env.items() if not k.startswith("NOTIFIER_")}  # the script's own defaults
        script = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if script.returncode != 0:
            raise RuntimeError(f"deploy.sh {' '.join(command[1:])} failed: {script.stderr.strip()}")
        subprocess.run([BASH, "-euo", "pipefail", "-c", _RECORDER + script.stdout], env=env, check=True)
        calls = [json.loads(line) for line in argv_log.read_text().splitlines()]
        deploy = next(call for call in calls if call[:2] == ["functions", "deploy"])
        flags = dict(_flag(argument) for argument in deploy[2:] if argument.startswith("--"))
        env_vars = _env_file(Path(flags["env-vars-file"]))
    return Deployment(flags, env_vars)


def _flag(argument: str) -> tuple[str, str]:
    name, _, value = argument[2:].partition("=")
    return name, value


def _env_file(path: Path) -> dict[str, str]:
    """deploy.sh's env file: one ``NAME: "json string"`` line per variable (deploy/envfile.py)."""
    variables = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition(": ")
        variables[name] = json.loads(value)
    return variables
