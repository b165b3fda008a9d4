"""The layering rules of docs/architecture.md, checked on the real import graph.

Each check runs in a fresh interpreter so modules imported by other tests cannot hide a
violation.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "urbangeo"


def _modules_imported_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True,
    ).stdout
    return set(out.split())


@pytest.mark.parametrize("module", [
    "urbangeo", "urbangeo.api", "urbangeo.cli.main", "urbangeo.geo.cells", "urbangeo.geo.grid",
    "urbangeo.geo.chips", "urbangeo.geo.indicators", "urbangeo.geo.rasterize",
    "urbangeo.captions.run", "urbangeo.captions.describe", "urbangeo.sample", "urbangeo.demo",
    "urbangeo.model.tokenizer",
])
def test_torch_free_modules_do_not_import_torch(module: str) -> None:
    assert "torch" not in _modules_imported_by(f"import {module}")


def test_cli_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom urbangeo.cli.main import cli\n"
        "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass"
    )
    assert "torch" not in _modules_imported_by(code)


def _imports_in(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("geo", ("torch", "urbangeo.model", "urbangeo.cli", "urbangeo.captions")),
        ("model", ("urbangeo.geo", "urbangeo.captions", "urbangeo.learn", "urbangeo.cli",
                   "rasterio", "pyogrio")),
        ("learn", ("urbangeo.cli", "urbangeo.api", "click", "rich")),
        ("captions", ("urbangeo.model", "urbangeo.cli")),
    ],
)
def test_imports_only_point_down(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for name in _imports_in(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not offenders, "layering violated:\n" + "\n".join(offenders)
