"""Imports flow one way: pipeline -> stages -> cache, never back; the tests mirror those packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from builders import REPO_ROOT as ROOT, TESTS_DIR

FORBIDDEN = {"cache": {"stages", "pipeline"}, "stages": {"pipeline"}, "pipeline": set()}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_packages(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "layering broken:\n" + "\n".join(offenders)


def test_every_package_is_checked() -> None:
    packages = {init.parent.name for init in ROOT.glob("*/__init__.py")}
    assert packages == set(FORBIDDEN), "a top-level package without a layering rule (or a rule without a package)"


def test_test_folders_mirror_the_packages() -> None:
    """tests/cache/..., tests/stages/fit/..., tests/pipeline/subjects/...: every test folder names a package."""
    folders = [path for path in TESTS_DIR.rglob("*") if path.is_dir() and path.name != "__pycache__"]
    assert folders, "the tests are not grouped by package"
    unmatched = [str(path.relative_to(TESTS_DIR)) for path in folders
                 if not (ROOT / path.relative_to(TESTS_DIR) / "__init__.py").is_file()]
    assert not unmatched, f"test folders that name no package: {unmatched}"


def test_layering_check_detects_a_back_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import pipeline.cli\nfrom stages.subject import Subject\n")
    assert _imported_packages(module) == {"pipeline", "stages"}
