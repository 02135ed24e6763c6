"""Record filters: a source's ``where:`` keeps the records whose metadata matches.

A condition is a list of accepted values (compared as text: ``{language: [ko, es]}``) or one
comparison on a number (``{turns: ">=4"}``). Records without the key do not match. What a filter
leaves out is counted in the source's :class:`~fedloom.data.sources.LoadReport`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from fedloom.data.schema import Record
from fedloom.errors import FedloomError


class FilterError(FedloomError, ValueError):
    """A ``where`` condition that cannot be read."""


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_COMPARISON = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?)\s*$")


def parse_condition(key: str, want: Any) -> Callable[[Any], bool]:
    """A predicate on one metadata value."""
    if isinstance(want, list | tuple):
        if not want:
            raise FilterError(f"`{key}` lists no accepted values")
        accepted = {str(v) for v in want}
        return lambda v: str(v) in accepted
    if isinstance(want, str):
        m = _COMPARISON.match(want)
        if m is None:
            raise FilterError(
                f"`{key}: {want!r}` is neither a list of values nor a comparison such as '>=4' "
                f"(operators {', '.join(_OPS)})"
            )
        op, bound = _OPS[m.group(1)], float(m.group(2))

        def compare(v: Any) -> bool:
            try:
                return op(float(v), bound)
            except (TypeError, ValueError):
                return False

        return compare
    raise FilterError(
        f"`{key}: {want!r}` must be a list of accepted values or a comparison string like '>=4'"
    )


def apply_where(
    records: Sequence[Record], where: dict[str, Any]
) -> tuple[list[Record], dict[str, int]]:
    """(records that match every condition, {reason: count} of those left out); a record is
    counted once, under the first condition it fails."""
    conds = [(k, parse_condition(k, w)) for k, w in where.items()]
    kept: list[Record] = []
    dropped: dict[str, int] = {}
    for r in records:
        for key, ok in conds:
            if key not in r.metadata or not ok(r.metadata[key]):
                reason = f"where {key} {where[key]}"
                dropped[reason] = dropped.get(reason, 0) + 1
                break
        else:
            kept.append(r)
    return kept, dropped
