"""service.domain.params: declared names, substitution, a triggered run's parameter sets (issue 13)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from service.domain import errors, params

PUSH: dict[str, Any] = {
    "to": {"alias": ["{{user}}"]},
    "body": {
        "platform": "web",
        "notification": {"alert": "Hi {{user}}: {{ note }} {{user}}", "web": {"title": "{{unknown thing}}"}},
        "options": {"time_to_live": 60},
    },
    "custom_args": {"{{user}}": ["{{note}}", 3, None, True]},
}
DECLARED = {"user": "all", "note": "hello"}


def test_render_replaces_declared_names_in_every_string_value_and_no_key() -> None:
    original = copy.deepcopy(PUSH)
    rendered = params.render(PUSH, {"user": "ana", "note": 'a "quoted" {{user}}'})
    assert rendered["to"] == {"alias": ["ana"]}
    # Plain text: a value's own braces are not substituted again, its quotes are just characters.
    assert rendered["body"]["notification"]["alert"] == 'Hi ana: a "quoted" {{user}} ana'
    assert rendered["body"]["notification"]["web"]["title"] == "{{unknown thing}}"  # not a name's shape
    assert rendered["custom_args"] == {"{{user}}": ['a "quoted" {{user}}', 3, None, True]}
    assert original == PUSH  # the stored push is shared: never changed in place


def test_render_without_values_is_the_push_itself() -> None:
    assert params.render(PUSH, None) is PUSH
    assert params.render(PUSH, {}) is PUSH


def test_a_name_not_in_the_values_stays_as_written() -> None:
    assert params.render("{{a}} {{b}}", {"a": "1"}) == "1 {{b}}"


def test_effective_values_are_the_defaults_overridden_by_the_callers() -> None:
    assert params.effective(None, {"user": "x"}) is None  # no parameters: sent as stored
    assert params.effective(DECLARED, None) == DECLARED
    assert params.effective(DECLARED, {"user": "bo", "gone": "x"}) == {"user": "bo", "note": "hello"}


def test_used_names_each_with_the_fields_using_them() -> None:
    used = params.used(PUSH)
    assert sorted(used) == ["note", "user"]
    assert sorted(used["user"]) == ["push.body.notification.alert", "push.to.alias[0]"]
    assert sorted(used["note"]) == ["push.body.notification.alert", "push.custom_args.{{user}}[0]"]


@pytest.mark.parametrize(
    "declared, message",
    [
        ([], "params: must be an object of names to default strings"),
        ({"a-b": ""}, 'params: names must be 1..64 ASCII letters, digits or underscores, got "a-b"'),
        ({"é": ""}, "params: names must be 1..64 ASCII letters"),
        ({"x" * 65: ""}, "params: names must be 1..64"),
        ({"a": None}, "params.a: must be a string"),
        ({f"n{index}": "" for index in range(51)}, "params: must declare at most 50 names, got 51"),
    ],
)
def test_bad_declarations_are_refused_naming_the_field(declared: Any, message: str) -> None:
    with pytest.raises(errors.InvalidParameter) as raised:
        params.check_declared(declared)
    assert raised.value.message.startswith(message)


def test_fifty_names_of_64_characters_are_allowed() -> None:
    declared = {f"{index:02d}" + "x" * 62: "" for index in range(50)}
    assert params.check_declared(declared) == declared


def test_a_push_must_declare_every_name_it_uses_once_it_has_parameters() -> None:
    with pytest.raises(errors.InvalidParameter) as raised:
        params.check_push(PUSH, {"user": "x"})
    field, reason = raised.value.message.split(": ", 1)
    assert field in params.used(PUSH)["note"]
    assert reason == "uses {{note}}, which params does not declare (declared: user)"
    params.check_push(PUSH, {})  # no parameters: {{...}} is text
    params.check_push(PUSH, DECLARED)


def test_the_defaults_must_make_a_valid_push() -> None:
    with pytest.raises(errors.InvalidParameter) as raised:
        params.check_push(PUSH, {"user": "x" * 2000, "note": ""})
    assert raised.value.message.startswith("params.user: with the defaults filled in, push.body: ")


def test_parameter_sets_keep_only_the_values_given() -> None:
    body = {"QueryParameters": [{"user": "ana", "note": None}, {"note": ""}, {}]}
    assert params.parse_sets(body, DECLARED, PUSH, lenient=False) == [{"user": "ana"}, {}, {}]
    assert params.parse_sets({"params": {"note": "n"}}, DECLARED, PUSH, lenient=False) == [{"note": "n"}]
    assert params.parse_sets(None, DECLARED, PUSH, lenient=False) == [{}]


def test_lenient_bodies_without_parameters_mean_the_defaults() -> None:
    for body in ([1, 2], "text", {"event": "x"}):
        assert params.parse_sets(body, DECLARED, PUSH, lenient=True) == [{}]
    with pytest.raises(errors.InvalidParameter):
        params.parse_sets({"event": "x"}, DECLARED, PUSH, lenient=False)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"QueryParameters": {"who": "x"}}, 'QueryParameters.who: the task declares no parameter "who"; it declares: note, user'),
        ({"QueryParameters": [{"user": "a"}, {"user": 1}]}, "QueryParameters[1].user: must be a string, or null"),
        ({"QueryParameters": [{}] * 1001}, "QueryParameters: must hold 1..1000 parameter sets, got 1001"),
        ({"QueryParameters": []}, "QueryParameters: must hold 1..1000 parameter sets, got 0"),
        ({"QueryParameters": "x"}, "QueryParameters: must be an object of names to strings, or a list"),
        ({"QueryParameters": [3]}, "QueryParameters[0]: must be an object of names to strings"),
        ({"QueryParameters": {}, "params": {}}, "body: holds both QueryParameters and params"),
        ({"params": {"user": "u" * 3000}}, "params.user: after substitution, push.body: "),
        ({"params": {"note": "n" * 4000}}, "params.note: after substitution, push.body: "),
    ],
)
def test_bad_parameter_sets_are_refused_naming_the_parameter(body: Any, message: str) -> None:
    with pytest.raises(errors.InvalidParameter) as raised:
        params.parse_sets(body, DECLARED, PUSH, lenient=True)
    assert raised.value.message.startswith(message), raised.value.message


def test_a_value_breaking_a_field_rule_names_that_parameter_and_field() -> None:
    push = {**PUSH, "body": {**PUSH["body"], "platform": "{{plat}}"}}
    declared = {**DECLARED, "plat": "web"}
    params.check_push(push, declared)
    assert params.parse_sets({"params": {"plat": "all", "user": "u"}}, declared, push, lenient=False) == [
        {"plat": "all", "user": "u"}
    ]
    with pytest.raises(errors.InvalidParameter) as raised:
        params.parse_sets({"params": {"user": "u", "plat": "pager"}}, declared, push, lenient=False)
    assert raised.value.message.startswith(
        'params.plat: after substitution, push.body.platform: must be "all", "web" or a non-empty list'
    ), raised.value.message


def test_the_declared_list_says_none_when_there_are_none() -> None:
    with pytest.raises(errors.InvalidParameter) as raised:
        params.parse_sets({"params": {"a": "1"}}, {}, PUSH, lenient=False)
    assert raised.value.message == 'params.a: the task declares no parameter "a"; it declares: none'
