"""Keyset (cursor) pagination over grouped rows, for usage reads.

DRF's CursorPagination positions on one ordering field plus an offset; grouped usage rows
are ordered by a composite key (period, deployment, meter, tier), so a page here starts
strictly after (or, going back, before) the full key of the row it continues from. Stable
under inserts, no COUNT(*), and the same cost on page 1 and page 1,000.

A cursor is opaque to clients: URL-safe base64 of JSON `{"k": [key values], "r": going back,
"g": the query's signature}` — the signature names what the keys mean (the grouping), so a
cursor given out for another grouping is refused, not misread.
"""

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q, QuerySet

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500


class CursorError(ValueError):
    """A cursor this endpoint did not give out, or one for another query shape."""


@dataclass(frozen=True)
class Cursor:
    key: tuple
    backwards: bool


@dataclass(frozen=True)
class Page:
    rows: list[dict]
    next: Cursor | None
    previous: Cursor | None


def _plain(value):
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    return value


def _typed(value):
    if isinstance(value, dict) and set(value) == {"t"}:
        return datetime.fromisoformat(value["t"])
    if isinstance(value, dict) and set(value) == {"u"}:
        return uuid.UUID(value["u"])
    if isinstance(value, (str, int)):
        return value
    raise CursorError("unexpected value")


def encode_cursor(cursor: Cursor, signature: list[str]) -> str:
    payload = {"k": [_plain(value) for value in cursor.key], "r": cursor.backwards, "g": signature}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str, keys: list[str], signature: list[str]) -> Cursor:
    """The cursor, or CursorError when it is not one given out for this signature and these keys."""
    try:
        payload = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(payload, dict) or payload.get("g") != signature or not isinstance(payload.get("r"), bool):
            raise CursorError("another query's cursor")
        values = payload.get("k")
        if not isinstance(values, list) or len(values) != len(keys):
            raise CursorError("wrong key length")
        return Cursor(key=tuple(_typed(value) for value in values), backwards=payload["r"])
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as error:
        raise CursorError(str(error)) from None


def _beyond(keys: list[str], values: tuple, *, backwards: bool) -> Q:
    """Rows strictly after `values` in the ascending order of `keys` (before, going back):
    (k1 > v1) or (k1 = v1 and k2 > v2) or … — a row-value comparison every database runs."""
    lookup = "lt" if backwards else "gt"
    condition = Q()
    for index, key in enumerate(keys):
        equal_before = {earlier: value for earlier, value in zip(keys[:index], values[:index], strict=True)}
        condition |= Q(**equal_before, **{f"{key}__{lookup}": values[index]})
    return condition


def keyset_page(rows: QuerySet, keys: list[str], *, cursor: Cursor | None, size: int) -> Page:
    """One page of `rows` (a values() queryset whose rows carry `keys`), in ascending key order."""
    if cursor is not None:
        rows = rows.filter(_beyond(keys, cursor.key, backwards=cursor.backwards))
    backwards = cursor is not None and cursor.backwards
    ordered = rows.order_by(*(f"-{key}" if backwards else key for key in keys))
    fetched = list(ordered[:size + 1])
    more = len(fetched) > size
    page = fetched[:size]
    if backwards:
        page.reverse()

    if not page:
        return Page(rows=[], next=None, previous=None)
    # Going forward there is a previous page whenever we came from a cursor; going back there
    # is a next page: the one we came from.
    has_next, has_previous = (True, more) if backwards else (more, cursor is not None)
    first, last = tuple(page[0][key] for key in keys), tuple(page[-1][key] for key in keys)
    return Page(rows=page, next=Cursor(last, backwards=False) if has_next else None,
                previous=Cursor(first, backwards=True) if has_previous else None)
