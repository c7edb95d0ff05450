"""The schema diagram source names every table, column and foreign key of the models."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from dialtone.db.base import Base
from dialtone.db.diagram import render_dot


def test_dot_covers_the_metadata() -> None:
    dot = render_dot()
    assert dot.startswith("digraph dialtone {")
    for table in Base.metadata.sorted_tables:
        assert f'"{table.name}" [label=' in dot
        for column in table.columns:
            assert f'PORT="{column.name}"' in dot
        for fk in table.foreign_keys:
            edge = (
                f'"{fk.column.table.name}":"{fk.column.name}" -> "{table.name}":"{fk.parent.name}"'
            )
            assert edge in dot
    assert dot.count(" -> ") == sum(len(t.foreign_keys) for t in Base.metadata.sorted_tables)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_dot_is_valid_graphviz() -> None:
    result = subprocess.run(
        ["dot", "-Tsvg"], input=render_dot(), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "<svg" in result.stdout
