"""Read deploy.sh's --env-file as YAML and print it back as a safe --env-vars-file.

    python3 deploy/envfile.py FILE [--drop NAME]...

The file must be a flat map of environment variable names to strings, which is what
``gcloud functions deploy --env-vars-file`` accepts. It is parsed with a real YAML parser, so quoted
keys, flow maps and merge keys are seen as gcloud sees them; secrets are refused however they are
spelled. The output has one ``NAME: "value"`` line per variable (a JSON string is a YAML
double-quoted scalar), without the names given with --drop (deploy.sh sets those itself).
Problems go to stderr as one line naming the file, exit status 2. Values are never printed.

Standard library only. The YAML parser is PyYAML when this Python has it, else the ruamel.yaml
that the Google Cloud CLI bundles and parses --env-vars-file with (found next to ``gcloud``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Secrets come from Secret Manager (deploy.sh --secret), never from a plain environment variable
# that anyone who can view the function can read.
SECRETS = ("SENDGRID_API_KEY", "SMTP_PASSWORD")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED_PREFIX = "X_GOOGLE_"  # gcloud refuses these
MAX_BYTES = 256 * 1024  # far above what Cloud Run accepts for all variables together
TYPE_NAMES = {type(None): "nothing", bool: "true/false", int: "a number", float: "a number", list: "a list"}


class EnvFileError(Exception):
    """What is wrong with the env file, without any of its values."""


Loader = Callable[[str], Any]


def pyyaml_loader() -> Loader | None:
    try:
        import yaml
    except ImportError:
        return None

    def load(text: str) -> Any:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise EnvFileError(describe_yaml_error(error)) from None

    return load


def gcloud_ruamel_loader() -> Loader | None:
    """The parser of ``gcloud functions deploy --env-vars-file`` (YAML 1.1, safe), from the SDK's
    lib/third_party folder; only ``ruamel`` is imported from there."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    third_party = Path(os.path.realpath(gcloud)).parent.parent / "lib" / "third_party"
    if not (third_party / "ruamel" / "yaml").is_dir():
        return None
    sys.path.insert(0, str(third_party))
    try:
        import ruamel.yaml as ruamel_yaml
    except ImportError:
        return None
    finally:
        sys.path.remove(str(third_party))

    def load(text: str) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its duplicate-key warning quotes values
                return ruamel_yaml.load(text, Loader=ruamel_yaml.SafeLoader, version="1.1")
        except ruamel_yaml.YAMLError as error:
            raise EnvFileError(describe_yaml_error(error)) from None

    return load


LOADER_FACTORIES: tuple[Callable[[], Loader | None], ...] = (pyyaml_loader, gcloud_ruamel_loader)


def describe_yaml_error(error: Exception) -> str:
    """Where and what, without the snippet of the line (it may hold a value)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "not valid YAML"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f'{where}{problem} (expected YAML: NAME: "value" lines)'


def read_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as error:
        raise EnvFileError(f"cannot read it ({error.strerror})") from None
    if len(data) > MAX_BYTES:
        raise EnvFileError(f"larger than {MAX_BYTES // 1024} KiB; expected a short YAML map")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise EnvFileError(f"byte {error.start} is not UTF-8 text; expected UTF-8 YAML") from None


def check_variables(document: Any) -> dict[str, str]:
    """The document as NAME → string, or EnvFileError saying what was expected."""
    if document is None:  # empty, or comments only
        return {}
    if not isinstance(document, dict):
        raise EnvFileError(f'expected a map of NAME: "value" lines, got {type_name(document)}')
    variables = {}
    for position, (name, value) in enumerate(document.items(), 1):
        check_name(name, position)
        if not isinstance(value, str):
            raise EnvFileError(f'{name}: expected a string, got {type_name(value)} (quote it: {name}: "...")')
        variables[name] = value
    return variables


def check_name(name: Any, position: int) -> None:
    # Keys are not echoed unless they are plain names: a pasted secret could sit in a key.
    if isinstance(name, str) and name.strip().upper() in SECRETS:
        raise EnvFileError(f"sets {name.strip().upper()}; keep secrets in Secret Manager (deploy.sh --secret)")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise EnvFileError(
            f"entry {position}: its name is not an environment variable name "
            "(expected letters, digits and _, not starting with a digit)"
        )
    if name.upper().startswith(RESERVED_PREFIX):
        raise EnvFileError(f"{name}: names starting with {RESERVED_PREFIX} are reserved by Google Cloud")


def type_name(value: Any) -> str:
    return "a map" if isinstance(value, dict) else TYPE_NAMES.get(type(value), type(value).__name__)


def env_vars_yaml(variables: dict[str, str]) -> str:
    # json.dumps escapes quotes, backslashes, newlines and non-ASCII: one safe line per variable.
    return "".join(f"{name}: {json.dumps(value)}\n" for name, value in variables.items())


def find_loader() -> Loader | None:
    for factory in LOADER_FACTORIES:
        loader = factory()
        if loader is not None:
            return loader
    return None


def convert(path: Path, drop: list[str]) -> str:
    load = find_loader()
    if load is None:
        raise EnvFileError(
            "reading it needs a YAML parser: install the Google Cloud CLI (gcloud bundles one) "
            "or PyYAML (python3 -m pip install pyyaml)"
        )
    variables = check_variables(load(read_text(path)))
    return env_vars_yaml({name: value for name, value in variables.items() if name not in drop})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="the user's env.yaml")
    parser.add_argument("--drop", action="append", default=[], metavar="NAME", help="a variable to leave out")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(convert(args.file, args.drop))
    except EnvFileError as error:
        print(f"{args.file}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
