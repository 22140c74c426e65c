"""The package's structure: imports run one way between its rooms (docs/architecture.md), with no circles.

Every `import` in lgvit/ is read with `ast`, lazy imports inside functions included, and resolved
to the module it names. A room is a top-level module or subpackage of lgvit (`layers`, `models`,
`factory`, ...); `ROOMS` says which other rooms each may import.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lgvit"

# room -> the rooms it may import (besides itself); docs/architecture.md draws the same picture
_CORE = {"training", "data", "factory", "features", "registry", "models", "convert", "layers", "constants", "files"}
ROOMS: dict[str, set[str]] = {
    "constants": set(),
    "files": set(),
    "layers": set(),
    "models": {"layers", "constants"},
    "convert": {"layers"},
    "registry": {"models", "convert"},
    "features": {"models", "layers"},
    "factory": {"registry", "models", "convert", "layers", "files", "constants", "features"},
    "dense": {"factory", "features", "registry", "models", "layers", "files"},  # files: the prediction PNGs
    "data": {"constants", "files"},
    "explain": {"models", "layers", "files"},
    "training": _CORE - {"training"} | {"explain", "dense"},  # explain: the report's CAM grid; dense: --task
    "tools": _CORE,
    "export": _CORE | {"__init__"},  # __init__: the version it writes into the files
    "commands": _CORE | {"tools", "export", "explain"},
    "cli": {"commands", "__init__"},
    "__init__": {"factory", "registry", "convert", "data", "dense"},
    "__main__": {"cli"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()


def _exists(name: str) -> bool:
    return _is_package(name) or (PACKAGE.parent / (name.replace(".", "/") + ".py")).is_file()


def _imports(path: Path, name: str | None = None) -> set[str]:
    """The lgvit modules the file at `path` (module `name`, default: its place in lgvit/) imports anywhere in it;
    `from pkg import mod` names the module."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lgvit"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.split(".")[0] != "lgvit":
                continue
            subs = {f"{base}.{a.name}" for a in node.names if _exists(f"{base}.{a.name}")}
            found |= subs if len(subs) == len(node.names) else subs | {base}
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_room_is_known() -> None:
    rooms = {_room(m) for m in _graph()}
    assert rooms == set(ROOMS), f"rooms without a rule: {rooms - set(ROOMS)}; rules for no room: {set(ROOMS) - rooms}"


def test_imports_follow_the_room_rules() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if _room(target) != _room(module) and _room(target) not in ROOMS[_room(module)]
    )
    assert not wrong, "forbidden imports (see docs/architecture.md):\n" + "\n".join(wrong)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of `graph` as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> list[str] | None:
        if node in stack:
            return stack[stack.index(node) :] + [node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            if found := visit(nxt, stack + [node]):
                return found
        done.add(node)
        return None

    return next((c for start in sorted(graph) if (c := visit(start, []))), None)


def test_no_import_circles_between_modules_or_rooms() -> None:
    graph = _graph()
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        rooms.setdefault(_room(module), set()).update(_room(t) for t in targets if _room(t) != _room(module))
    assert _cycle(rooms) is None, f"room circle: {' -> '.join(_cycle(rooms))}"
    assert _cycle({room: allowed for room, allowed in ROOMS.items()}) is None  # the rules themselves run one way


def test_the_checker_sees_lazy_relative_and_from_imports(tmp_path: Path) -> None:
    """The import reader on the forms lgvit uses, and the circle finder on a circle (this test can fail)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from ..registry import get_spec\nfrom .. import factory\n\n"
        "def f():\n    from ..training import loop\n    import lgvit.data\n"
    )
    found = _imports(probe, "lgvit.models.probe")
    assert found == {"lgvit.registry", "lgvit.factory", "lgvit.training.loop", "lgvit.data"}
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_says_what_it_holds(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc, f"{path} needs an opening docstring saying what the module holds"
