"""The layers of docs/design.md ("The layers"), checked on the source: which package may
import which, no import cycle, and imports that build nothing."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import run_python

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("worker", "api_shim")

# Bottom to top. A module may import its own layer and the layers below it, never above.
LAYERS: dict[str, tuple[str, ...]] = {
    "leaves": (
        "worker",  # the package's __init__ (only this module: see _layer_of)
        "worker.settings",
        "worker.queues",
        "worker.identity",
        "worker.processes",
        "worker.logging_setup",
        # Imports only the standard library until tracing is on; the domain asks it for
        # the current trace context (an outbox row keeps it).
        "worker.telemetry",
        "worker.domain.clock",
        "worker.domain.errors",
        # Rates, the pace rules and their store's protocol: the standard library only
        # (the settings parse the limits with it).
        "worker.domain.pace",
    ),
    "persistence": ("worker.models", "worker.db"),
    "domain": ("worker.domain",),
    "adapters": (
        "worker.runtime",
        "worker.celery_factory",
        "worker.lanes",
        "worker.pacing",
        "worker.attachment_files",
        "worker.embedded_broker",
        "worker.payloads",
        "worker.client",
        "worker.transports",
        "worker.webhook_transport",
        "worker.redis_clients",
        "worker.broker",
        "worker.migrate",
        "worker.migrations",
    ),
    "services": ("worker.sending", "worker.drains", "worker.lifeline", "worker.bounce_server"),
    # The API, bottom to top: its wire conventions and models; one request; the
    # description of the operations; the operations, served and described.
    "api wire": (
        "api_shim.jsv",
        "api_shim.wire",
        "api_shim.multipart",
        "api_shim.dtos",
        "api_shim.responses",
        "api_shim.dispatch",
        "api_shim.services",
    ),
    "api pipeline": ("api_shim.pipeline",),
    "api description": ("api_shim.openapi",),
    "api registry": (
        "api_shim.registry",
        "api_shim.routes",
        "api_shim.metadata",
        "api_shim.health",
    ),
    "entry points": ("worker.celery_app", "worker.tasks", "worker.cli", "api_shim"),
}
# What the domain must never know: queues, HTTP, the process's runtime.
NOT_IN_THE_DOMAIN = ("celery", "kombu", "redis", "fastapi", "starlette", "httpx")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield _module_name(path), path


PROJECT_MODULES = {name for name, _ in _sources()}


def _imports(path: Path, *, module: str, top_level_only: bool) -> set[str]:
    """The modules `path` imports; with `top_level_only`, leaving out imports inside
    functions and `if TYPE_CHECKING:` blocks (those run later, or never)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: list[ast.AST] = []
    if top_level_only:
        for statement in tree.body:
            if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
                continue
            nested = isinstance(statement, ast.Try | ast.If)
            nodes.extend(ast.walk(statement) if nested else [statement])
    else:
        nodes = list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.rsplit(".", node.level)[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # `from worker.domain import clock` imports the module worker.domain.clock (the
            # package's __init__ only on the way); `from worker.db import Database`, db.
            submodules = {f"{target}.{alias.name}" for alias in node.names}
            found |= (submodules & PROJECT_MODULES) or {target}
    return found


def _layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching prefix, layer index)
    for index, prefixes in enumerate(LAYERS.values()):
        for prefix in prefixes:
            below = module.startswith(prefix + ".") and prefix != "worker"
            if module == prefix or below:
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index)
    return None if best is None else best[1]


def test_every_module_has_a_layer() -> None:
    assert [name for name in PROJECT_MODULES if _layer_of(name) is None] == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    names = list(LAYERS)
    modules = PROJECT_MODULES
    upward = []
    for module, path in _sources():
        own = _layer_of(module)
        assert own is not None
        for imported in _imports(path, module=module, top_level_only=False) & modules:
            theirs = _layer_of(imported)
            if theirs is not None and theirs > own:
                upward.append(f"{module} ({names[own]}) imports {imported} ({names[theirs]})")
    assert upward == []


def test_the_domain_knows_no_queue_http_or_runtime() -> None:
    leaks = [
        f"{module} imports {imported}"
        for module, path in _sources()
        if module.startswith("worker.domain")
        for imported in _imports(path, module=module, top_level_only=False)
        if imported.split(".")[0] in NOT_IN_THE_DOMAIN
    ]
    assert leaks == []


def test_there_is_no_import_cycle() -> None:
    modules = PROJECT_MODULES
    graph = {
        module: _imports(path, module=module, top_level_only=True) & modules - {module}
        for module, path in _sources()
    }
    cycles: list[list[str]] = []
    state: dict[str, str] = {}  # "open" while on the stack, "done" after

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycles.append([*stack[stack.index(imported) :], imported])
            elif imported not in state:
                visit(imported, [*stack, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # A package imports its own modules through its __init__: not a cycle of code.
    assert [c for c in cycles if len(set(c)) > 1] == []


IMPORT_EVERYTHING_BUT_THE_WORKER = """
import importlib, pkgutil, sys
import worker.client, api_shim.app, worker.domain
for info in pkgutil.iter_modules(worker.domain.__path__):
    importlib.import_module("worker.domain." + info.name)
assert "worker.celery_app" not in sys.modules, "the worker's Celery app was built"
assert "worker.tasks" not in sys.modules, "the tasks were imported"
"""


@pytest.mark.parametrize("env_var_dir", [False, True])
def test_importing_builds_nothing_and_creates_no_file(tmp_path: Path, env_var_dir: bool) -> None:
    """`import worker.client`, `api_shim.app` or any domain module: no folder (the embedded
    broker's, the SQLite database's) and no Celery worker app."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if env_var_dir:
        env["VAR_DIR"] = str(tmp_path / "var")
    done = run_python(IMPORT_EVERYTHING_BUT_THE_WORKER, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []
