"""The module map's boundaries (README "Layout", ../shared/design.md), read from the source itself:
import cycles, who may read the environment, what mail/ may import, tooling kept off the function's path.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "notifier"
# Only these read the process environment: config (the function's settings) and the tooling,
# which builds its children's environments. Providers get the mapping config hands them. Not
# counted: an HTTP client's own proxy discovery (HTTPS_PROXY, NO_PROXY via urllib.request.getproxies
# in notifier/proxies.py), which every HTTP client does the same way.
ENVIRONMENT_READERS = ("notifier.config", "notifier.tools")
# What a delivery backend may not know about: settings loading, rules, templates.
NOT_FOR_MAIL = ("notifier.config", "notifier.rules", "notifier.rulesfile", "notifier.render", "notifier.templates")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path, *, type_checking: bool) -> set[str]:
    """Our modules that ``name`` imports anywhere in its body (lazily too): a cycle through a
    function-level import is still a cycle in the design. ``type_checking``: count the imports made
    only for annotations too."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test) and not type_checking:
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level:
                    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        package = package.rpartition(".")[0]
                    module = f"{package}.{module}".rstrip(".")
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    ours = set()
    for module in found:
        while module and module not in MODULES:
            module = module.rpartition(".")[0]
        if module and module != name:
            ours.add(module)
    return ours


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_our_modules():
    graph = {name: _imports(name, path, type_checking=False) for name, path in MODULES.items()}
    assert _cycles(graph) == []


def test_mail_backends_know_nothing_of_settings_rules_or_templates():
    wrong = {
        name: sorted(m for m in _imports(name, path, type_checking=True) if m.startswith(NOT_FOR_MAIL))
        for name, path in MODULES.items()
        if name.startswith("notifier.mail")
    }
    assert {name: found for name, found in wrong.items() if found} == {}


def test_the_function_never_imports_the_tooling():
    wrong = {
        name: sorted(m for m in _imports(name, path, type_checking=True) if m.startswith("notifier.tools"))
        for name, path in MODULES.items()
        if not name.startswith("notifier.tools") and name != "notifier.__main__"
    }
    assert {name: found for name, found in wrong.items() if found} == {}


def _reads_environment(path: Path) -> list[int]:
    """Lines that read the process environment (os.environ, os.getenv, os.environb)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "environb", "getenv"):
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and {alias.name for alias in node.names} & {"environ", "environb", "getenv"}
        ):
            lines.append(node.lineno)
    return lines


def test_only_config_and_the_tooling_read_the_environment():
    readers = {name: _reads_environment(path) for name, path in [*MODULES.items(), ("main", ROOT / "main.py")]}
    wrong = {name: lines for name, lines in readers.items() if lines and not name.startswith(ENVIRONMENT_READERS)}
    assert wrong == {}
    assert readers["notifier.config"], "the check must see config's own reads, or it checks nothing"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_says_its_one_job_first(name):
    docstring = ast.get_docstring(ast.parse(MODULES[name].read_text()))
    assert docstring, f"{name}: no module docstring"
    first = docstring.splitlines()[0]
    assert len(first) > 20, f"{name}: the first line should say what the module is for: {first!r}"


def test_the_function_path_loads_no_tooling_or_test_support(tmp_path):
    # As the platform loads it: functions-framework imports main.py and builds the app.
    code = (
        "import sys\n"
        "from functions_framework import create_app\n"
        f"create_app(target='handle_storage_event', source={str(ROOT / 'main.py')!r})\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('notifier.tools', 'tests', 'bench')))\n"
        "print('loaded:', ','.join(bad))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "NOTIFY_OUTBOX_DIR": str(tmp_path / "outbox"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded:"
