"""The module boundaries, enforced on the import graph (every ``import`` in ``service/``, including
those under ``TYPE_CHECKING`` and inside functions): no cycles, the call core imports no provider
and no model dialect, the pure dialects import no I/O layer, ``audio/`` imports only numpy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SERVICE.rglob("*.py")}
    compiled = {_module_name(p) for p in SERVICE.rglob("*.pyi")} - set(modules)  # C extensions (their stubs)
    graph: dict[str, set[str]] = {name: set() for name in compiled}
    for name, path in list(modules.items()):
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:  # ``from pkg import mod`` depends on mod; ``from mod import x`` on mod
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules or sub in compiled else base)
        graph[name] = {t for t in targets if (t in modules or t in compiled) and t != name}
    return graph


GRAPH = _graph()


def _imports_of(prefix: str) -> dict[str, set[str]]:
    return {m: deps for m, deps in GRAPH.items() if m == prefix or m.startswith(prefix + ".")}


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components: every component must be a single module. Package
    ``__init__`` modules are skipped as targets only when a submodule is named (Python imports the
    package first, but that is not a dependency of the package on its submodule)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def edges(module: str) -> set[str]:
        return {t for t in GRAPH[module] if not module.startswith(t + ".")}

    def visit(module: str) -> None:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for target in edges(module):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert cycles == []


ALLOWED_FOR_CORE = ("service.providers.base", "service.providers")


@pytest.mark.parametrize("module", sorted(_imports_of("service.call")))
def test_call_core_imports_no_provider_and_no_model_dialect(module: str) -> None:
    bad = {t for t in GRAPH[module]
           if (t.startswith("service.providers") and t not in ALLOWED_FOR_CORE)
           or (t.startswith("service.realtime") and t not in ("service.realtime", "service.realtime.events"))
           or t.startswith("service.app") or t.startswith("service.cli")}
    assert bad == set(), f"{module} imports {sorted(bad)}"


PURE = [m for m in GRAPH if m.endswith(".dialect") or m in ("service.realtime.protocol", "service.realtime.events",
                                                          "service.providers.base")]
IO_LAYERS = ("service.call", "service.state", "service.app", "service.wsio", "service.realtime.client",
             "service.escalation.outbox", "service.escalation.webhook", "service.lifecycle")


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_dialects_import_no_io_layer(module: str) -> None:
    bad = {t for t in GRAPH[module] if t.startswith(IO_LAYERS)}
    assert bad == set(), f"{module} imports {sorted(bad)}"
    source = (SERVICE.parent / (module.replace(".", "/") + ".py")).read_text()
    assert "import asyncio" not in source and "import redis" not in source


@pytest.mark.parametrize("module", sorted(_imports_of("service.audio")))
def test_audio_imports_only_audio(module: str) -> None:
    bad = {t for t in GRAPH[module] if not (t.startswith("service.audio") or t == "service._hotpath")}
    assert bad == set(), f"{module} imports {sorted(bad)}"


def test_graph_sees_the_imports() -> None:
    """The graph is not vacuous: known edges are found (including one inside a function)."""
    assert "service.call.bridge" in GRAPH and "service.call.legs" in GRAPH["service.call.bridge"]
    assert "service.providers.base" in GRAPH["service.providers.twilio.dialect"]
