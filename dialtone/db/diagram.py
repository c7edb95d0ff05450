"""Graphviz DOT for the schema, drawn from Base.metadata (``make diagram`` renders it).

Run ``python -m dialtone.db.diagram > schema.dot``; the picture is never drawn by hand,
so it cannot drift from the models.
"""

from __future__ import annotations

import sys
from html import escape

from sqlalchemy import MetaData, Table
from sqlalchemy.sql.schema import Column

import dialtone.db.models  # noqa: F401  (registers every table on Base.metadata)
from dialtone.db.base import Base

_HEADER = "#2f4858"
_KEY = "#fdf1d6"


def _type_name(column: Column[object]) -> str:
    try:
        text = str(column.type.compile())
    except Exception:  # a type without a generic rendering: fall back to its class name
        text = type(column.type).__name__
    return text.lower()


def _marks(column: Column[object]) -> str:
    marks = []
    if column.primary_key:
        marks.append("PK")
    if column.foreign_keys:
        marks.append("FK")
    if column.unique:
        marks.append("UQ")
    return ",".join(marks)


def _table_label(table: Table) -> str:
    rows = [
        f'<TR><TD COLSPAN="3" BGCOLOR="{_HEADER}"><FONT COLOR="white"><B>'
        f"{escape(table.name)}</B></FONT></TD></TR>"
    ]
    for column in table.columns:
        name = escape(column.name)
        if not column.nullable and not column.primary_key:
            name = f"<B>{name}</B>"
        bg = f' BGCOLOR="{_KEY}"' if column.primary_key else ""
        rows.append(
            f'<TR><TD ALIGN="LEFT" PORT="{escape(column.name)}"{bg}>{name}</TD>'
            f'<TD ALIGN="LEFT"{bg}>{escape(_type_name(column))}</TD>'
            f'<TD ALIGN="LEFT"{bg}>{_marks(column)}</TD></TR>'
        )
    body = "".join(rows)
    return f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">{body}</TABLE>>'


def render_dot(metadata: MetaData = Base.metadata) -> str:
    lines = [
        "digraph dialtone {",
        "  graph [rankdir=LR, fontname=Helvetica, nodesep=0.5, ranksep=1.2,"
        ' label="Dialtone schema (PK primary key, FK foreign key, UQ unique; bold: NOT NULL)",'
        " labelloc=t];",
        "  node [shape=plaintext, fontname=Helvetica, fontsize=11];",
        "  edge [fontname=Helvetica, fontsize=9, color=gray40, arrowhead=crow, arrowtail=none];",
    ]
    for table in metadata.sorted_tables:
        lines.append(f'  "{table.name}" [label={_table_label(table)}];')
    for table in metadata.sorted_tables:
        for fk in sorted(table.foreign_keys, key=lambda f: f.parent.name):
            target = fk.column
            on_delete = f' [label="on delete {fk.ondelete.lower()}"]' if fk.ondelete else ""
            lines.append(
                f'  "{target.table.name}":"{target.name}" -> '
                f'"{table.name}":"{fk.parent.name}"{on_delete};'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_dot())
