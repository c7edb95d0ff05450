"""Query parameter types shared by controllers (bounded, no NUL bytes)."""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter

_NO_NUL = r"^[^\x00]*$"

ChannelIdQuery = Annotated[str, QueryParameter(min_length=1, max_length=64, pattern=_NO_NUL)]
OptionalIdQuery = Annotated[str | None, QueryParameter(max_length=64, pattern=_NO_NUL)]
# ``all=1``: the parameter is named after a Python builtin, so it gets an alias.
AllFlagQuery = Annotated[str | None, QueryParameter(name="all", max_length=8)]


def flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes"}


DeviceIdPath = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=_NO_NUL)]
