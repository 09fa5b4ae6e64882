"""Shared pytest options: e2e tests run only with --with-e2e."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--with-e2e",
        action="store_true",
        default=False,
        help="run tests/e2e against the cluster of the current kubeconfig",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--with-e2e"):
        return
    skip = pytest.mark.skip(reason="e2e: needs a real cluster; run with --with-e2e")
    for item in items:
        if "e2e" in item.keywords or "/e2e/" in str(item.path):
            item.add_marker(skip)
