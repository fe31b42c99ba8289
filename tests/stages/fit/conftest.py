"""The fit tests train models on a few vertices of a 64-image store: torch runs them on one thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _tiny_tensors_one_thread(one_torch_thread: None) -> None:
    """Every fit test runs under ``one_torch_thread`` (tests/conftest.py)."""
