"""The layering the project promises, checked on the source: app.py -> demos/ -> pipelines/, pipelines never
imports gradio, no import cycle between modules, no module imports another's private helper, files stay small."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for top in ("pipelines", "demos"):
        for p in sorted((ROOT / top).rglob("*.py")):
            parts = p.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


def _imports(path: Path, name: str) -> list[tuple[str, str | None]]:
    """(module, imported name or None) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            found += [(mod, a.name) for a in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        for mod, name in _imports(p, m):
            target = f"{mod}.{name}" if name and f"{mod}.{name}" in mods else mod
            if target in mods and target != m:
                graph[m].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules forming an import cycle, or None (iterative DFS, white/grey/black)."""
    colour = {m: 0 for m in graph}
    for root in graph:
        if colour[root]:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        colour[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour.get(nxt) == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) in (["a", "b", "c", "a"],)
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules():
    assert find_cycle(_graph()) is None


def test_pipelines_never_imports_gradio_or_demos():
    for m, p in _modules().items():
        if m.startswith("pipelines"):
            bad = [mod for mod, _ in _imports(p, m) if mod.split(".")[0] in {"gradio", "demos"}]
            assert not bad, f"{m} imports {bad}"


def _tab_modules() -> set[str]:
    """The tabs: the modules app.py lists in TAB_MODULES (shared helpers such as demos.player are not tabs)."""
    tree = ast.parse((ROOT / "app.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TAB_MODULES" for t in node.targets):
            return {e.value for e in node.value.elts}
    raise AssertionError("app.py has no TAB_MODULES")


def test_tabs_never_import_each_other():
    tabs = _tab_modules()
    assert len(tabs) >= 6
    for m, p in _modules().items():
        if m in tabs:
            imported = {mod for mod, _ in _imports(p, m)} | {f"{mod}.{n}" for mod, n in _imports(p, m) if n}
            assert not (imported & (tabs - {m})), f"{m} imports other tabs {imported & (tabs - {m})}"


def test_no_private_helper_imported_from_another_module():
    mods = _modules()
    for m, p in mods.items():
        for mod, name in _imports(p, m):
            if mod.startswith(("pipelines", "demos")) and name and name.startswith("_") and mod != m:
                raise AssertionError(f"{m} imports private {mod}.{name}")
        text = p.read_text()
        assert "noqa: SLF001" not in text, f"{m} reaches into a private helper"


def test_files_stay_small():
    big = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"over {MAX_LINES} lines: {big}"
