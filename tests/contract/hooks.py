"""Rules of the API that its OpenAPI document states in prose because JSON Schema cannot
relate two fields or count across a tree. They are taught to schemathesis here, so that a
request it generates as valid is valid; nothing here loosens a check.

- An event's window: `endsAt` after `startsAt` (on PATCH, after the event's own start
  when only one end is sent; the generated body sends both, or neither).
- A condition has at most 20 leaves in all (each `all`/`any` has 1 to 10 branches, at most
  4 levels deep, which the schema does state).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import schemathesis

MAX_LEAVES = 20
EVENT_ROUTES = {("POST", "/events"), ("PATCH", "/events/{id}")}


def parse(value):
    """The time in an RFC 3339 string, or None."""
    if not isinstance(value, str) or "T" not in value.upper():
        return None
    try:
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def leaves(condition) -> int:
    if isinstance(condition, dict):
        for key in ("all", "any"):
            if isinstance(condition.get(key), list):
                return sum(leaves(child) for child in condition[key])
    return 1


def is_event_route(context) -> bool:
    operation = context.operation
    return operation is not None and (operation.method.upper(), operation.path) in EVENT_ROUTES


def fix_window(method: str, body: dict) -> None:
    """Puts a generated window in order: `endsAt` a day after `startsAt`. A time that is not
    one, or a required end that is missing, is left for the server to refuse."""
    present = [key for key in ("startsAt", "endsAt") if key in body]
    times = [parse(body[key]) for key in present]
    if not present or None in times or (method == "POST" and len(present) < 2):
        return
    if len(times) == 2 and times[1] > times[0]:
        return
    anchor = times[0]
    try:
        later = anchor + timedelta(days=1)
    except OverflowError:
        anchor, later = anchor - timedelta(days=1), anchor
    body["startsAt"] = anchor.isoformat()
    body["endsAt"] = later.isoformat()


def first_leaf(condition):
    while isinstance(condition, dict):
        branches = next(
            (condition[k] for k in ("all", "any") if isinstance(condition.get(k), list)), None
        )
        if not branches:
            return condition
        condition = branches[0]
    return condition


@schemathesis.hook
def before_call(context, case, kwargs):
    """Applies the rules above to what is about to be sent. Schemathesis judges the request
    again after this hook, so a request stays valid or invalid by what is actually sent."""
    if not is_event_route(context) or not isinstance(case.body, dict):
        return
    fix_window(case.method.upper(), case.body)
    condition = case.body.get("condition")
    if leaves(condition) > MAX_LEAVES:
        case.body["condition"] = first_leaf(condition)
