"""Parameters: names a task declares with default strings, which its push uses as `{{name}}`, and the values a
caller gives for them when it triggers a run (issue 13). Pure: no I/O.

Substitution is plain text on the push's parsed strings: a value is never parsed, evaluated or spliced into
JSON text, so it cannot change the push's structure, only the strings that name it. A task without parameters
sends its push exactly as stored: `{{...}}` in it is then literal text, as it was before parameters existed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pydantic

from service.domain import errors, models

MAX_PARAMS = 50
MAX_NAME_CHARS = 64
# The most parameter sets one triggered run may carry: one push each.
MAX_SETS = 1000
# iSchedule's key for a webhook's parameters, and ours; a body uses one or the other.
BODY_KEYS = ("QueryParameters", "params")

_NAME = re.compile(rf"[A-Za-z0-9_]{{1,{MAX_NAME_CHARS}}}", re.ASCII)
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", re.ASCII)

Values = Mapping[str, str]


def check_declared(declared: Any, where: str = "params") -> dict[str, str]:
    """A task's `params`: an object of at most MAX_PARAMS names (ASCII letters, digits, `_`) to strings."""
    if not isinstance(declared, dict):
        raise errors.InvalidParameter(f"{where}: must be an object of names to default strings")
    if len(declared) > MAX_PARAMS:
        raise errors.InvalidParameter(f"{where}: must declare at most {MAX_PARAMS} names, got {len(declared)}")
    for name, default in declared.items():
        if not _NAME.fullmatch(name):
            raise errors.InvalidParameter(
                f'{where}: names must be 1..{MAX_NAME_CHARS} ASCII letters, digits or underscores, got "{name}"'
            )
        if not isinstance(default, str):
            raise errors.InvalidParameter(f"{where}.{name}: must be a string")
    return dict(declared)


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string value in a JSON value, with its path (`push.body.notification.alert`). Keys are not
    values: they are never substituted."""
    pending: list[tuple[str, Any]] = [(path, value)]
    while pending:
        where, item = pending.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            pending.extend((f"{where}.{key}", inner) for key, inner in item.items())
        elif isinstance(item, list):
            pending.extend((f"{where}[{index}]", inner) for index, inner in enumerate(item))


def used(push: Any) -> dict[str, list[str]]:
    """The names the push uses, each with the paths of the strings that use it."""
    names: dict[str, list[str]] = {}
    for where, text in _strings(push, "push"):
        for name in dict.fromkeys(_PLACEHOLDER.findall(text)):
            names.setdefault(name, []).append(where)
    return names


def _declared_list(declared: Values) -> str:
    return ", ".join(sorted(declared)) if declared else "none"


def check_push(push: dict[str, Any], declared: Values) -> None:
    """A task's push and parameters together: every name the push uses is declared, and the push with the
    defaults filled in passes every rule a stored push passes (what a scheduled fire sends)."""
    if not declared:
        return  # no parameters: the push is sent as stored, `{{...}}` and all
    for name, paths in sorted(used(push).items()):
        if name not in declared:
            raise errors.InvalidParameter(
                f"{paths[0]}: uses {{{{{name}}}}}, which params does not declare (declared: "
                f"{_declared_list(declared)})"
            )
    _check_rendered(push, declared, declared, "params", "with the defaults filled in")


def render(push: Any, values: Values | None) -> Any:
    """The push with every `{{name}}` of a name in `values` replaced by its value; None or no values: the push
    itself, untouched. Names not in `values` stay as written. Copies only what it changes."""
    if not values:
        return push
    if isinstance(push, str):
        return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), match.group(0)), push)
    if isinstance(push, dict):
        return {key: render(item, values) for key, item in push.items()}
    if isinstance(push, list):
        return [render(item, values) for item in push]
    return push


def effective(defaults: Values | None, given: Values | None) -> dict[str, str] | None:
    """What a push is sent with: the task's defaults, overridden by the values a caller gave for this run.
    None when the task declares no parameters: its push is sent as stored."""
    if not defaults:
        return None
    if not given:
        return dict(defaults)
    return {**defaults, **{name: value for name, value in given.items() if name in defaults}}


def parse_sets(body: Any, declared: Values, push: dict[str, Any], *, lenient: bool) -> list[dict[str, str]]:
    """The parameter sets of a triggered run's body: one per push (at least one, the defaults).

    `{"QueryParameters": {...}}` or `{"params": {...}}`, or a list of up to MAX_SETS such objects. A value is a
    string, or null or "" for the task's default; only the values given are kept (the defaults fill in the
    rest when the push is sent, so a change to them before then is what goes out). Each set is checked by
    rendering the push with it: the push must still pass every rule, else 28100 naming the parameter.

    `lenient` (webhooks): a body that is not an object, or an object without either key, means no
    parameters; run now refuses them. Bad parameters are refused either way."""
    if body is None:
        return [{}]
    if not isinstance(body, dict):
        if lenient:
            return [{}]
        raise errors.InvalidParameter("body: must be a JSON object holding QueryParameters (or params)")
    present = [key for key in BODY_KEYS if key in body]
    if len(present) > 1:
        raise errors.InvalidParameter("body: holds both QueryParameters and params; send one of them")
    if not lenient:
        unknown = sorted(set(body) - set(BODY_KEYS))
        if unknown:
            raise errors.InvalidParameter(f"{unknown[0]}: is not a known field (expected QueryParameters or params)")
    if not present:
        return [{}]
    key = present[0]
    given = body[key]
    if isinstance(given, dict):
        sets, paths = [given], [key]
    elif isinstance(given, list):
        if not 1 <= len(given) <= MAX_SETS:
            raise errors.InvalidParameter(f"{key}: must hold 1..{MAX_SETS} parameter sets, got {len(given)}")
        sets, paths = given, [f"{key}[{index}]" for index in range(len(given))]
    else:
        raise errors.InvalidParameter(f"{key}: must be an object of names to strings, or a list of such objects")
    return [_parse_set(values, where, declared, push) for values, where in zip(sets, paths, strict=True)]


def _parse_set(values: Any, where: str, declared: Values, push: dict[str, Any]) -> dict[str, str]:
    if not isinstance(values, dict):
        raise errors.InvalidParameter(f"{where}: must be an object of names to strings")
    kept: dict[str, str] = {}
    for name, value in values.items():
        if name not in declared:
            raise errors.InvalidParameter(
                f'{where}.{name}: the task declares no parameter "{name}"; it declares: {_declared_list(declared)}'
            )
        if value is not None and not isinstance(value, str):
            raise errors.InvalidParameter(f"{where}.{name}: must be a string, or null for the default")
        if value:  # null and "" mean the default
            kept[name] = value
    if kept:
        _check_rendered(push, {**declared, **kept}, kept, where, "after substitution")
    return kept


def _check_rendered(push: dict[str, Any], values: Values, suspects: Values, where: str, when: str) -> None:
    """Validate the push rendered with `values` as a stored push is validated. A failure names the parameter
    (`where`.name): of the `suspects` used in the failing field, the one with the longest value (a size
    rule is the usual one to break), and the push field, and says `when`."""
    rendered = render(push, values)
    try:
        models.Push.model_validate(rendered)
    except pydantic.ValidationError as exc:
        message = models.validation_message(exc, "push")
        field = message.split(":", 1)[0]
        names = [name for name, paths in used(push).items() if name in suspects
                 and any(path == field or path.startswith((field + ".", field + "[")) for path in paths)]
        culprit = max(sorted(names), key=lambda name: len(suspects[name]), default=None)
        blamed = where if culprit is None else f"{where}.{culprit}"
        raise errors.InvalidParameter(f"{blamed}: {when}, {message}") from None
