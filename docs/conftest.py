"""Doctests of pages that use the project's real data are skipped where those data are absent.

A page marks itself with the comment ``.. astrokin-needs-shared-data``; the
data live in ``../shared/data`` beside the repository (never copied into it).
"""

import pathlib

import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
MARK = ".. astrokin-needs-shared-data"


def pytest_collection_modifyitems(config, items):
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"the real data in {SHARED_DATA} are not available")
    for item in items:
        path = pathlib.Path(str(item.fspath))
        if path.suffix == ".rst" and MARK in path.read_text(encoding="utf-8"):
            item.add_marker(skip)
