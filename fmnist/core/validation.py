"""Building blocks of the config schema (pydantic v2) and its errors as one line each.

`Section` refuses unknown keys, wrong types (strictly: no "3" for 3, no 1 for true), NaN and
infinities; `Range` reports `got X, allowed range [lo, hi)`; `one_line` turns a pydantic error into
`recipes.cnn4.budgets.full.epochs: got 0, allowed range [1, inf]`.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


def Range(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    """An allowed numeric range, reported as `got X, allowed range [lo, hi)`."""
    def check(value):
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if too_low or too_high:
            bounds = f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}" \
                     f"{')' if hi_open else ']'}"
            raise PydanticCustomError("range", "got {value}, allowed range {bounds}",
                                      {"value": repr(value), "bounds": bounds})
        return value
    return AfterValidator(check)



class Section(BaseModel):
    """A params.yaml section: unknown keys, wrong types, NaN and infinities are refused; an empty
    section (`augment:` with nothing under it) means all defaults."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        return {} if data is None else data


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _walk(loc: tuple, root: type[BaseModel]) -> tuple[Any, type[BaseModel] | None]:
    """The annotation at `loc` in `root`, and the section (model) that holds it."""
    tp: Any = root
    holder: type[BaseModel] | None = None
    for part in loc:
        while typing.get_origin(tp) in (Annotated, typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0]
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            holder = tp
            field = tp.model_fields.get(str(part))
            if field is None:
                return None, holder
            tp = field.annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
    return tp, holder


def _key(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def one_line(error: dict, root: type[BaseModel]) -> str:
    """A pydantic error as our one line: `key: got VALUE, expected/allowed ...`."""
    loc, kind, value = error["loc"], error["type"], error.get("input")
    key = _key(loc)
    if kind == "extra_forbidden":
        _, holder = _walk(loc, root)
        allowed = ", ".join(holder.model_fields) if holder else ""
        where = _key(loc[:-1]) or "params.yaml"
        return f"{key}: unknown key in {where}; allowed keys: {allowed}"
    if kind == "range":
        return f"{key}: {error['msg']}"
    if kind == "missing":
        return f"{key}: missing; this key is required here, add it"
    if kind == "finite_number":
        return f"{key}: got {value!r}, expected a finite number"
    annotation, _ = _walk(loc, root)
    if kind == "literal_error":
        allowed = typing.get_args(annotation)
        return f"{key}: got {value!r}, allowed values: {', '.join(map(str, allowed))}"
    return f"{key}: got {value!r}, expected {_type_name(annotation)}"
