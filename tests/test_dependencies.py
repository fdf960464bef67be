"""Every third-party module the toolkit imports is declared for the command that uses it.

A package installed by hand on a developer's machine hides a missing requirement until a user
with a fresh virtual environment hits it at the end of a long stage (`tdbnas run` died in its
search stage on `import matplotlib` this way). This walks every import of every module of the
package, module level and inside functions, and maps it to the distribution that provides it
(`importlib.metadata.packages_distributions`); that distribution must be a requirement of the
core dependencies or of the extra the module's folder belongs to. Imports inside a
`try: ... except ImportError` are optional by construction (a fallback exists: torchvision's
NMS, the old `tflite_runtime` name of the interpreter) and are not required.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spaces", "detection", "export", "latency", "search", "pipeline", "cli")
#: Folders (or files) whose modules may also use an extra's requirements; the rest: core only.
EXTRA_OF = {"export": "export", "latency": "export", "search/parallel.py": "distributed"}
OPTIONAL_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception"}


def _name(requirement: str) -> str:
    """`tensorflow-cpu>=2.16; python_version...` -> `tensorflow-cpu` (PEP 503 normalised)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0]).lower()


def declared(root: Path = ROOT) -> dict[str, set[str]]:
    """Requirement names of the core dependencies and of each extra (extras of tdbnas expanded)."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})

    def expand(requirements: list[str]) -> set[str]:
        names = set()
        for requirement in requirements:
            if requirement.startswith("tdbnas["):
                for extra in requirement[len("tdbnas["):requirement.index("]")].split(","):
                    names |= expand(extras[extra.strip()])
            else:
                names.add(_name(requirement))
        return names

    return {"core": expand(project["dependencies"]), **{extra: expand(reqs) for extra, reqs in extras.items()}}


def _catches_import_errors(handler: ast.ExceptHandler) -> bool:
    names = [handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts
    return handler.type is None or any(isinstance(n, ast.Name) and n.id in OPTIONAL_ERRORS for n in names)


def _optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """In the body of a `try` that catches ImportError (or broader), or in such a handler (the
    fallback of an optional import)?"""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body and any(map(_catches_import_errors, parent.handlers)):
            return True
        if isinstance(parent, ast.ExceptHandler) and _catches_import_errors(parent):
            return True
        child, parent = parent, parents.get(parent)
    return False


def third_party_imports(path: Path) -> list[tuple[str, int]]:
    """(top-level module, line) of every required third-party import in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ("tdbnas", "__future__") or _optional(node, parents):
                continue
            found.append((top, node.lineno))
    return found


def extra_of(relative: str) -> str:
    for prefix, extra in EXTRA_OF.items():
        if relative == prefix or relative.startswith(prefix + "/"):
            return extra
    return "core"


def undeclared(root: Path = ROOT) -> list[str]:
    """One line per import under `root`'s packages that no requirement of its extra provides."""
    requirements = declared(root)
    providers = metadata.packages_distributions()
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            extra = extra_of(relative)
            allowed = requirements["core"] | requirements.get(extra, set())
            for module, line in third_party_imports(path):
                # Not installed here (e.g. ray without the extra): the module must then be named
                # exactly like a declared distribution.
                distributions = {_name(d) for d in providers.get(module, [module])}
                if not distributions & allowed:
                    problems.append(f"{relative}:{line} imports {module!r} (from {sorted(distributions)}), which no "
                                    f"requirement of the {extra!r} dependencies provides")
    return problems


def test_every_import_is_declared_for_its_extra():
    problems = undeclared()
    assert not problems, "undeclared imports:\n" + "\n".join(problems)


@pytest.mark.parametrize("source, expected", [
    ("import numpy\n", ["numpy"]),
    ("def f():\n    from matplotlib import pyplot\n", ["matplotlib"]),
    ("try:\n    import torchvision\nexcept ImportError:\n    torchvision = None\n", []),
    ("try:\n    import torchvision\nexcept (OSError, ImportError):\n    pass\n", []),
    ("try:\n    import yaml\nexcept KeyError:\n    pass\n", ["yaml"]),
    ("try:\n    import ai_edge_litert\nexcept ImportError:\n    import tflite_runtime\n", []),
    ("import os, json\nfrom tdbnas.spaces import ArchSpec\n", []),
])
def test_the_walk_finds_required_imports(tmp_path, source, expected):
    path = tmp_path / "module.py"
    path.write_text(source)
    assert [module for module, _ in third_party_imports(path)] == expected


def test_an_undeclared_import_is_reported(tmp_path):
    """The check can fail: the stop-12 state (matplotlib imported by the reports, declared nowhere),
    and TensorFlow in a core module while only the export extra declares it."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "tdbnas"\ndependencies = ["numpy>=1.24", "PyYAML>=6"]\n'
        '[project.optional-dependencies]\nexport = ["tensorflow-cpu>=2.16"]\ndev = ["pytest", "tdbnas[export]"]\n')
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "report.py").write_text("import numpy\nimport yaml\n\ndef plot():\n"
                                                     "    import matplotlib.pyplot as plt\n")
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "bad.py").write_text("import tensorflow\n")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "good.py").write_text("import tensorflow as tf\n")
    problems = undeclared(tmp_path)
    assert sorted(p.split(" imports ")[0] for p in problems) == ["pipeline/report.py:5", "search/bad.py:1"], problems
    assert declared(tmp_path)["dev"] == {"pytest", "tensorflow-cpu"}
