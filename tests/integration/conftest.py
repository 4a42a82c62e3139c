"""Fixtures for tests on a LAN of network namespaces."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.lan import Lan, why_no_lan


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    item.stash.setdefault(_failed, False)
    if report.failed:
        item.stash[_failed] = True
    return report


_failed = pytest.StashKey[bool]()


@pytest.fixture
def make_lan(request: pytest.FixtureRequest) -> Iterator[Callable[[int], Lan]]:
    """Build a LAN of N hosts (not yet running); everything is torn down after the test."""
    reason = why_no_lan()
    if reason:
        pytest.skip(reason)
    labs: list[Lan] = []
    # A short root: the control socket path must fit in a Unix socket address (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="mslan"))

    def build(count: int) -> Lan:
        lan = Lan(root, count)
        labs.append(lan)
        return lan

    yield build
    failed = request.node.stash.get(_failed, False)
    for lan in labs:
        if failed:
            print(lan.logs())
        lan.close()
    if failed and os.environ.get("MESHSYNC_KEEP_LAN"):
        print(f"kept for a look (MESHSYNC_KEEP_LAN): {root}")  # folders, indexes, logs
    else:
        shutil.rmtree(root, ignore_errors=True)
