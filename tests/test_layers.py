"""The layers point down: spaces -> detection -> export -> latency -> search -> pipeline -> cli.

A module may import its own package and the packages before it in `LAYERS`, never one after
(function-level imports included: a lazy import is still a dependency)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("spaces", "detection", "export", "latency", "search", "pipeline", "cli")


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found |= {name.split(".")[1] for name in names if name.startswith("tdbnas.") and name.count(".") >= 1}
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_no_module_imports_a_later_layer(package):
    allowed = set(LAYERS[: LAYERS.index(package) + 1])
    wrong = {str(path.relative_to(ROOT)): sorted(imported_packages(path) - allowed)
             for path in sorted((ROOT / package).rglob("*.py"))}
    assert not {path: names for path, names in wrong.items() if names}


def test_the_check_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tdbnas.cli.main import main\n    import tdbnas.search.signals\n")
    assert imported_packages(module) == {"cli", "search"}
