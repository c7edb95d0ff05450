"""Query parameter types shared by controllers (bounded, no NUL bytes)."""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter

from dialtone.errors import InvalidInput

_NO_NUL = r"^[^\x00]*$"

ChannelIdQuery = Annotated[str, QueryParameter(min_length=1, max_length=64, pattern=_NO_NUL)]
UserIdQuery = Annotated[str, QueryParameter(min_length=1, max_length=64, pattern=_NO_NUL)]
DeviceIdQuery = Annotated[str, QueryParameter(min_length=1, max_length=64, pattern=_NO_NUL)]
OptionalIdQuery = Annotated[str | None, QueryParameter(max_length=64, pattern=_NO_NUL)]
# ``all=1``: the parameter is named after a Python builtin, so it gets an alias.
AllFlagQuery = Annotated[str | None, QueryParameter(name="all", max_length=8)]


def flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes"}


DeviceIdPath = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=_NO_NUL)]

UserIdPath = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=_NO_NUL)]
ItemIdPath = Annotated[str, PathParameter(min_length=1, max_length=64, pattern=_NO_NUL)]
LimitQuery = Annotated[int | None, QueryParameter(ge=-(2**31), le=2**31)]
CursorQuery = Annotated[str | None, QueryParameter(max_length=512, pattern=_NO_NUL)]
TextQuery = Annotated[str | None, QueryParameter(max_length=64, pattern=_NO_NUL)]


def tristate(value: str | None, name: str) -> bool | None:
    """A boolean filter: absent (None), 1/true/yes or 0/false/no; anything else a 400."""
    if value is None:
        return None
    text = value.strip().lower()
    if text in {"1", "true", "yes"}:
        return True
    if text in {"0", "false", "no"}:
        return False
    raise InvalidInput(f"{name} must be true or false", code="invalid_input")
