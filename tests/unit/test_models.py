"""Wire validation: name rules, trigger shape, push envelope rules, and messages that name the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from service.domain import errors, models
from tests import examples


def valid_body(**overrides: Any) -> dict[str, Any]:
    return examples.seed_schedule("2027-06-01 19:20:00", **overrides)


def with_push(path: str, value: Any) -> dict[str, Any]:
    """The valid body with push.<path> set to value (or removed when value is ...)."""
    body = valid_body()
    target = body["push"]
    *parents, last = path.split(".")
    for part in parents:
        target = target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return body


def rejection(data: Any, model: type = models.ScheduleCreate) -> str:
    with pytest.raises(errors.InvalidParameter) as caught:
        models.parse(model, data)
    return caught.value.message


def test_seed_example_is_valid() -> None:
    parsed = models.parse(models.ScheduleCreate, valid_body())
    assert parsed.trigger.to_wire() == {"single": {"time": "2027-06-01 19:20:00", "zone_type": 1}}


class TestName:
    @pytest.mark.parametrize("name", ["推送任务", "定时_push_2", "a", "schedule push example", "Ünïcode_名前", "x" * 255, "任" * 85])
    def test_accepted(self, name: str) -> None:
        assert models.parse(models.ScheduleCreate, valid_body(name=name)).name == name

    def test_256_bytes_rejected(self) -> None:
        assert rejection(valid_body(name="x" * 256)) == "name: must be at most 255 UTF-8 bytes, got 256"

    def test_cjk_counted_in_bytes(self) -> None:
        # 86 CJK characters are 258 UTF-8 bytes.
        assert "got 258" in rejection(valid_body(name="任" * 86))

    @pytest.mark.parametrize("name", ["with-hyphen", " leading", "trailing ", "dot.name", "emoji😀", "tab\tname", ""])
    def test_other_characters_rejected(self, name: str) -> None:
        assert rejection(valid_body(name=name)).startswith("name: ")

    def test_must_be_a_string(self) -> None:
        assert rejection(valid_body(name=12)) == "name: must be a string"


class TestTopLevel:
    def test_missing_fields_are_named(self) -> None:
        body = valid_body()
        del body["trigger"]
        assert rejection(body) == "trigger: is required"

    def test_unknown_field(self) -> None:
        assert rejection(valid_body(colour="red")) == "colour: is not a known field"

    def test_enabled_false_on_create(self) -> None:
        assert rejection(valid_body(enabled=False)) == "enabled: must be true when a task is created"

    def test_enabled_is_a_real_bool(self) -> None:
        assert rejection(valid_body(enabled="true")) == "enabled: must be true or false"

    def test_not_an_object(self) -> None:
        assert rejection([1, 2]) == "body: must be a JSON object"

    @pytest.mark.parametrize("zone_type", [0, 3, "1", True, 1.0])
    def test_zone_type(self, zone_type: Any) -> None:
        body = valid_body(trigger={"single": {"time": "2027-06-01 19:20:00", "zone_type": zone_type}})
        assert rejection(body).startswith("trigger.single.zone_type: ")

    def test_zone_type_absent_means_1(self) -> None:
        body = valid_body(trigger={"single": {"time": "2027-06-01 19:20:00"}})
        assert models.parse(models.ScheduleCreate, body).trigger.to_wire()["single"]["zone_type"] == 1

    def test_bad_time_message(self) -> None:
        body = valid_body(trigger={"single": {"time": "2014-2-15 13:16:59", "zone_type": 1}})
        assert rejection(body) == 'trigger.single.time: must be yyyy-mm-dd hh:mm:ss, got "2014-2-15 13:16:59"'

    def test_trigger_needs_one_kind(self) -> None:
        assert rejection(valid_body(trigger={})) == "trigger: must hold exactly one of single, periodical, cron, interval"

    def test_cid_limits(self) -> None:
        assert rejection(valid_body(cid="")).startswith("cid: must be 1..255")
        assert models.parse(models.ScheduleCreate, valid_body(cid="abc-123")).cid == "abc-123"


class TestPush:
    def test_audience_all(self) -> None:
        models.parse(models.ScheduleCreate, with_push("to", "all"))

    @pytest.mark.parametrize("to", [{}, {"registration_id": []}, {"alias": [], "tag": []}, {"seg": {}}])
    def test_audience_needs_a_target(self, to: Any) -> None:
        assert rejection(with_push("to", to)).startswith("push.to: must hold at least one non-empty of")

    def test_audience_other_string(self) -> None:
        assert rejection(with_push("to", "everyone")) == 'push.to: must be "all" or an audience object, got "everyone"'

    def test_registration_id_limit(self) -> None:
        models.parse(models.ScheduleCreate, with_push("to", {"registration_id": ["r"] * 1000}))
        assert rejection(with_push("to", {"registration_id": ["r"] * 1001})) == "push.to.registration_id: must have at most 1000 items"

    def test_tag_limit(self) -> None:
        models.parse(models.ScheduleCreate, with_push("to", {"tag": ["t"] * 20}))
        assert rejection(with_push("to", {"tag_and": ["t"] * 21})) == "push.to.tag_and: must have at most 20 items"

    def test_audience_item_type_is_named(self) -> None:
        assert rejection(with_push("to", {"alias": ["a", 7]})) == "push.to.alias[1]: must be a string"

    @pytest.mark.parametrize("platform", ["all", "web", ["android"], ["android", "ios", "hmos", "web"]])
    def test_platform_accepted(self, platform: Any) -> None:
        models.parse(models.ScheduleCreate, with_push("body.platform", platform))

    @pytest.mark.parametrize("platform", ["android", [], ["android", "blackberry"], "web scheduled task", None])
    def test_platform_rejected(self, platform: Any) -> None:
        assert rejection(with_push("body.platform", platform)).startswith("push.body.platform: must be")

    def test_body_needs_content(self) -> None:
        body = with_push("body.notification", ...)
        # The seed's own example sends "message": {} beside a notification: an empty object does not count.
        assert rejection(body) == "push.body: must hold at least one non-empty of notification, message, live_activity, voip"

    def test_payload_size_limit(self) -> None:
        overhead = len(json.dumps({"alert": ""}, separators=(",", ":"))) + len("{}")
        fits = with_push("body.notification", {"alert": "x" * (4000 - overhead)})
        models.parse(models.ScheduleCreate, fits)
        too_big = with_push("body.notification", {"alert": "x" * (4001 - overhead)})
        assert rejection(too_big) == "push.body: notification plus message must be at most 4000 bytes serialized, got 4001"

    @pytest.mark.parametrize("ttl", [0, 1_296_000])
    def test_time_to_live_bounds_accepted(self, ttl: int) -> None:
        models.parse(models.ScheduleCreate, with_push("body.options", {"time_to_live": ttl}))

    @pytest.mark.parametrize("ttl,message", [(-1, "must be between 0 and 1296000, got -1"), (1_296_001, "must be between 0 and 1296000, got 1296001"), ("60", "must be an integer"), (6.5, "must be an integer")])
    def test_time_to_live_rejected(self, ttl: Any, message: str) -> None:
        assert rejection(with_push("body.options", {"time_to_live": ttl})) == f"push.body.options.time_to_live: {message}"

    def test_from_and_request_id_are_strings(self) -> None:
        assert rejection(with_push("from", 5)) == "push.from: must be a string"
        assert rejection(with_push("request_id", 5)) == "push.request_id: must be a string"

    def test_unknown_inner_fields_are_kept(self) -> None:
        body = with_push("body.notification", {"alert": "a", "android": {"badge_add_num": 1}})
        body["push"]["future_field"] = {"x": 1}
        original = copy.deepcopy(body)
        models.parse(models.ScheduleCreate, body)
        assert body == original  # validation never rewrites what is stored and forwarded

    def test_missing_body(self) -> None:
        assert rejection(with_push("body", ...)) == "push.body: is required"


class TestUpdate:
    def test_empty_update(self) -> None:
        assert rejection({}, models.ScheduleUpdate) == (
            "must hold at least one of name, enabled, trigger, push, description, max_failures, params"
        )

    def test_partial_push_is_rejected(self) -> None:
        message = rejection({"push": {"alert": "web scheduled task"}}, models.ScheduleUpdate)
        assert "push.to: is required" in message and "push.body: is required" in message

    def test_null_field(self) -> None:
        assert rejection({"name": None}, models.ScheduleUpdate) == "name: must not be null"

    def test_unknown_field(self) -> None:
        assert rejection({"cid": "x"}, models.ScheduleUpdate) == "cid: is not a known field"

    def test_disable_only(self) -> None:
        assert models.parse(models.ScheduleUpdate, {"enabled": False}).enabled is False


def nested_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


class TestStorable:
    """What a parsed body may hold: what PostgreSQL stores and Python encodes without recursing too deep."""

    @staticmethod
    def refusal(data: Any) -> str:
        with pytest.raises(errors.InvalidParameter) as caught:
            models.check_storable(data)
        return caught.value.message

    def test_a_valid_body_passes(self) -> None:
        models.check_storable(valid_body())

    @pytest.mark.parametrize("number", [float("inf"), float("-inf"), json.loads("1e400"), json.loads("-1e999")])
    def test_numbers_beyond_a_double_are_refused_by_field(self, number: float) -> None:
        body = with_push("body.notification", {"alert": "a", "badge": number})
        assert self.refusal(body) == "push.body.notification.badge: must be a number between -1.8e308 and 1.8e308"

    def test_big_integers_and_tiny_floats_are_storable(self) -> None:
        models.check_storable({"a": 10**4000, "b": 1e-400, "c": 1.7e308, "d": -0.0})

    def test_nesting_is_counted_from_the_body(self) -> None:
        # The body (1), push (2), custom_args' arrays from 3 on.
        models.check_storable(with_push("custom_args", nested_list(models.MAX_JSON_DEPTH - 2)))
        too_deep = with_push("custom_args", nested_list(models.MAX_JSON_DEPTH - 1))
        assert self.refusal(too_deep) == "push.custom_args: must be nested at most 100 deep"

    def test_nesting_of_objects_names_the_path(self) -> None:
        value: Any = {}
        for _ in range(models.MAX_JSON_DEPTH):
            value = {"a": value}
        assert self.refusal(value) == "a" + ".a" * (models.MAX_JSON_DEPTH - 1) + ": must be nested at most 100 deep"

    def test_a_top_level_array_too_deep(self) -> None:
        assert self.refusal(nested_list(models.MAX_JSON_DEPTH + 1)) == "body: must be nested at most 100 deep"

    def test_nul_and_lone_surrogates_in_keys_and_values(self) -> None:
        assert self.refusal({"a\x00": 1}) == "a\x00: must not contain the NUL character (\\u0000)"
        assert self.refusal({"a": ["x", "\ud800"]}) == "a[1]: must be valid Unicode, got a lone surrogate"
