"""Pydantic models of the v4 wire objects, and the rendering of their errors into one clear message.

The push object is validated here but stored and forwarded exactly as the client sent it: unknown inner
fields are kept (`extra="allow"`), and the models are only a check, never a re-serialization.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Annotated, Any, ClassVar

import pydantic
from dateutil.relativedelta import relativedelta
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from service.domain import cron, errors, interval, periodical, timing

MAX_NAME_BYTES = 255
MAX_FREQUENCY = 100
TIME_UNITS = ("day", "week", "month")
MAX_CID_BYTES = 255
# Extensions (issue 12): a task's description, in characters, and its max_failures (0: never disable).
MAX_DESCRIPTION_CHARS = 1000
MAX_MAX_FAILURES = 1000
MAX_PAYLOAD_BYTES = 4000
MAX_TIME_TO_LIVE = 1_296_000
PLATFORMS = ("android", "ios", "hmos", "web")
CONTENT_FIELDS = ("notification", "message", "live_activity", "voip")
# Objects and arrays within objects and arrays, the body itself counted: far beyond any real push, far below
# the depth at which encoding or decoding it (json, asyncpg, the response) would hit Python's recursion limit.
MAX_JSON_DEPTH = 100

# Letters of any script (CJK included), digits and underscore, with spaces allowed only between them:
# the seed's own examples ("schedule push example") use inner spaces.
_NAME_SHAPE = re.compile(r"[^\W]([^\W]| )*", re.UNICODE)
_MONTH_DAY = re.compile(r"0[1-9]|[12][0-9]|3[01]")


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid", message)


def _check_name(value: str) -> str:
    size = len(value.encode("utf-8"))
    if size == 0:
        raise _invalid("must not be empty")
    if size > MAX_NAME_BYTES:
        raise _invalid(f"must be at most {MAX_NAME_BYTES} UTF-8 bytes, got {size}")
    if not _NAME_SHAPE.fullmatch(value) or value.endswith(" "):
        raise _invalid(
            f'may hold only letters, digits, underscores and inner spaces, got "{value}"'
        )
    return value


def _check_cid(value: str) -> str:
    size = len(value.encode("utf-8"))
    if not 1 <= size <= MAX_CID_BYTES:
        raise _invalid(f"must be 1..{MAX_CID_BYTES} UTF-8 bytes, got {size}")
    return value


def _check_description(value: str) -> str:
    if len(value) > MAX_DESCRIPTION_CHARS:
        raise _invalid(f"must be at most {MAX_DESCRIPTION_CHARS} characters, got {len(value)}")
    return value


def _check_max_failures(value: int) -> int:
    if not 0 <= value <= MAX_MAX_FAILURES:
        raise _invalid(f"must be an integer from 0 (never) to {MAX_MAX_FAILURES}, got {value}")
    return value


Description = Annotated[str, AfterValidator(_check_description)]
MaxFailures = Annotated[int, AfterValidator(_check_max_failures)]


def _check_wall_time(value: str) -> str:
    try:
        timing.parse_wall_time(value)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    return value


_CLOCK_TIME_SHAPE = re.compile(r"\d{2}:\d{2}:\d{2}", re.ASCII)


def _check_clock_time(value: str) -> str:
    if not _CLOCK_TIME_SHAPE.fullmatch(value):
        raise _invalid(f'must be hh:mm:ss, got "{value}"')
    try:
        dt.datetime.strptime(value, "%H:%M:%S")
    except ValueError:
        raise _invalid(f'is not a real time of day, got "{value}"') from None
    return value


Name = Annotated[str, AfterValidator(_check_name)]
WallTime = Annotated[str, AfterValidator(_check_wall_time)]
ClockTime = Annotated[str, AfterValidator(_check_clock_time)]
StringList = list[str]


class _Wire(BaseModel):
    """An optional field is absent or a value of its type: JSON null is refused, because the spec makes no
    field nullable and a null forwarded to the push API would fail only at send time. (A required field's
    own check already refuses null, with its own message.)"""

    nullable_fields: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            declared = {field.alias or name for name, field in cls.model_fields.items() if not field.is_required()}
            for key, value in data.items():
                if value is None and key in declared and key not in cls.nullable_fields:
                    raise PydanticCustomError("null", "must not be null", {"field": key})
        return data


class _Strict(_Wire):
    """Wire objects we own: no unknown fields, no type coercion ("1" is not 1, 1 is not true)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Open(_Wire):
    """Push objects: checked strictly but open, because unknown inner fields are forwarded to the push API."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)


def _check_zone_type(value: int) -> int:
    if value not in (1, 2):
        raise _invalid(f"must be 1 (app time zone) or 2 (terminal time zone), got {value}")
    return value


ZoneType = Annotated[int, AfterValidator(_check_zone_type)]


class SingleTrigger(_Strict):
    time: WallTime
    zone_type: ZoneType = 1


class PeriodicalTrigger(_Strict):
    """The app-push v4 / JPush v3 periodical form. Fields are validated in order, so later checks can
    rely on earlier fields (end on start, point on time_unit)."""

    start: WallTime
    end: WallTime
    time: ClockTime
    time_unit: str
    frequency: int
    point: list[str] | None = Field(default=None, validate_default=True)  # checked even when absent
    zone_type: ZoneType = 1

    @field_validator("end")
    @classmethod
    def _end_after_start_within_a_year(cls, value: str, info: ValidationInfo) -> str:
        if "start" not in info.data:
            return value
        start, end = timing.parse_wall_time(info.data["start"]), timing.parse_wall_time(value)
        if end <= start:
            raise _invalid(f'must be after start ("{info.data["start"]}"), got "{value}"')
        if end > start + relativedelta(years=1):
            raise _invalid(f'must be at most one year after start ("{info.data["start"]}"), got "{value}"')
        return value

    @field_validator("time_unit")
    @classmethod
    def _known_unit(cls, value: str) -> str:
        if value.lower() not in TIME_UNITS:
            raise _invalid(f'must be day, week or month (any case), got "{value}"')
        return value  # echoed as given

    @field_validator("frequency")
    @classmethod
    def _frequency_range(cls, value: int) -> int:
        if not 1 <= value <= MAX_FREQUENCY:
            raise _invalid(f"must be 1..{MAX_FREQUENCY} (every Nth day, week or month), got {value}")
        return value

    @field_validator("point")
    @classmethod
    def _points_fit_the_unit(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        unit = str(info.data.get("time_unit", "")).lower()
        if unit == "day" and value:
            raise _invalid("must be absent when time_unit is day")
        if unit == "week" and (not value or any(point.upper() not in periodical.WEEKDAYS for point in value)):
            raise _invalid(f"must be a non-empty list of MON..SUN when time_unit is week, got {json.dumps(value)}")
        if unit == "month" and (not value or any(not _MONTH_DAY.fullmatch(point) for point in value)):
            raise _invalid(f'must be a non-empty list of "01".."31" when time_unit is month, got {json.dumps(value)}')
        return value


def _check_cron_expression(value: str) -> str:
    try:
        cron.normalize(value)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    return value


def _end_after_start(value: str | None, info: ValidationInfo) -> str | None:
    start = info.data.get("start")
    if value is not None and start is not None and timing.parse_wall_time(value) <= timing.parse_wall_time(start):
        raise _invalid(f'must be after start ("{start}"), got "{value}"')
    return value


class CronTrigger(_Strict):
    """Extension: a five-field crontab, read in wall-clock time (service.domain.cron)."""

    expression: Annotated[str, AfterValidator(_check_cron_expression)]
    start: WallTime | None = None
    end: WallTime | None = None
    zone_type: ZoneType = 1

    check_end = field_validator("end")(_end_after_start)


class IntervalTrigger(_Strict):
    """Extension: every N minutes, hours or days from start (service.domain.interval); zone_type 1 only."""

    start: WallTime
    every: int
    unit: str
    end: WallTime | None = None

    @field_validator("every")
    @classmethod
    def _every_range(cls, value: int) -> int:
        if not 1 <= value <= interval.MAX_EVERY:
            raise _invalid(f"must be 1..{interval.MAX_EVERY}, got {value}")
        return value

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, value: str) -> str:
        if value not in interval.UNITS:
            raise _invalid(f'must be minute, hour or day, got "{value}"')
        return value

    check_end = field_validator("end")(_end_after_start)


TRIGGER_KINDS = ("single", "periodical", "cron", "interval")


class Trigger(_Strict):
    single: SingleTrigger | None = None
    periodical: PeriodicalTrigger | None = None
    cron: CronTrigger | None = None
    interval: IntervalTrigger | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Trigger:
        if sum(getattr(self, kind) is not None for kind in TRIGGER_KINDS) != 1:
            raise _invalid(f"must hold exactly one of {', '.join(TRIGGER_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in TRIGGER_KINDS if getattr(self, kind) is not None)

    def to_wire(self) -> dict[str, Any]:
        """The trigger as stored and echoed: the fields as sent, zone_type always present (absent means 1),
        except on interval triggers, which have none."""
        inner: BaseModel = getattr(self, self.kind)
        fields = inner.model_dump(exclude_unset=True)
        zone_type = getattr(inner, "zone_type", None)
        if zone_type is not None:
            fields["zone_type"] = zone_type
        return {self.kind: fields}


class TriggerPreview(_Strict):
    """The body of POST /v4/schedules/preview: a trigger not yet stored."""

    trigger: Trigger


class Audience(_Open):
    registration_id: Annotated[StringList, Field(max_length=1000)] | None = None
    alias: Annotated[StringList, Field(max_length=1000)] | None = None
    tag: Annotated[StringList, Field(max_length=20)] | None = None
    tag_and: Annotated[StringList, Field(max_length=20)] | None = None
    tag_not: Annotated[StringList, Field(max_length=20)] | None = None
    seg: Any = None
    live_activity_id: str | None = None

    @field_validator("seg")
    @classmethod
    def _segment(cls, value: Any) -> Any:
        if value is None or isinstance(value, (dict, str)):
            return value
        raise _invalid(f"must be a segment object or id string, got {json.dumps(value)}")

    @model_validator(mode="after")
    def _some_target(self) -> Audience:
        targets = ("registration_id", "alias", "tag", "tag_and", "tag_not", "seg", "live_activity_id")
        if not any(getattr(self, name) for name in targets):
            raise _invalid(f"must hold at least one non-empty of {', '.join(targets)}")
        return self


class PushOptions(_Open):
    time_to_live: Annotated[int, Field(ge=0, le=MAX_TIME_TO_LIVE)] | None = None


class PushBody(_Open):
    platform: Any
    notification: dict[str, Any] | None = None
    message: dict[str, Any] | None = None
    live_activity: dict[str, Any] | None = None
    voip: dict[str, Any] | None = None
    options: PushOptions | None = None

    @field_validator("platform")
    @classmethod
    def _known_platform(cls, value: Any) -> Any:
        if value in ("all", "web"):
            return value
        if isinstance(value, list) and value and all(item in PLATFORMS for item in value):
            return value
        raise _invalid(
            f'must be "all", "web" or a non-empty list of {", ".join(PLATFORMS)}, got {json.dumps(value)}'
        )

    @model_validator(mode="after")
    def _has_content_within_size(self) -> PushBody:
        if not any(getattr(self, name) for name in CONTENT_FIELDS):
            raise _invalid(f"must hold at least one non-empty of {', '.join(CONTENT_FIELDS)}")
        size = sum(
            len(json.dumps(getattr(self, name), ensure_ascii=False, separators=(",", ":")).encode())
            for name in ("notification", "message")
            if getattr(self, name) is not None
        )
        if size > MAX_PAYLOAD_BYTES:
            raise _invalid(
                f"notification plus message must be at most {MAX_PAYLOAD_BYTES} bytes serialized, got {size}"
            )
        return self


class Push(_Open):
    to: Any
    body: PushBody
    from_: str | None = Field(default=None, alias="from")
    request_id: str | None = None
    custom_args: Any = None

    nullable_fields = frozenset({"custom_args"})  # any JSON value, forwarded as given

    @field_validator("to")
    @classmethod
    def _audience(cls, value: Any) -> Any:
        if value == "all":
            return value
        if isinstance(value, dict):
            Audience.model_validate(value)  # its errors surface under push.to
            return value
        raise _invalid(f'must be "all" or an audience object, got {json.dumps(value)}')


class ScheduleCreate(_Strict):
    name: Name
    enabled: bool
    trigger: Trigger
    push: Push
    cid: Annotated[str, AfterValidator(_check_cid)] | None = None
    description: Description | None = None
    max_failures: MaxFailures | None = None
    # Extension (issue 13): names and default strings the push may use as {{name}}; its rules are
    # service.domain.params', applied with the push's (service.domain.schedules).
    params: dict[str, Any] | None = None

    @field_validator("enabled")
    @classmethod
    def _enabled_on_create(cls, value: bool) -> bool:
        if not value:
            raise _invalid("must be true when a task is created")
        return value


class ScheduleUpdate(_Strict):
    """A PUT body: any non-empty subset of the fields, each whole and valid."""

    name: Name | None = None
    enabled: bool | None = None
    trigger: Trigger | None = None
    push: Push | None = None
    description: Description | None = None
    max_failures: MaxFailures | None = None
    params: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _non_empty(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data:
            raise _invalid(
                "must hold at least one of name, enabled, trigger, push, description, max_failures, params"
            )
        return data


# What pydantic's error types mean, said the way our messages say things.
_PHRASES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be an array",
}


def _describe(error: Any, where: str) -> str:
    kind = error["type"]
    context = error.get("ctx") or {}
    if kind == "null":  # raised by the object holding the field: name the field itself
        field = context["field"]
        return f"{where}.{field}: must not be null" if where else f"{field}: must not be null"
    if kind == "too_long":
        phrase = f"must have at most {context.get('max_length')} items"
    elif kind in ("greater_than_equal", "less_than_equal"):
        phrase = f"must be between 0 and {MAX_TIME_TO_LIVE}, got {error['input']}"
    else:
        phrase = _PHRASES.get(kind, error["msg"])
    return f"{where}: {phrase}" if where else phrase


def _path(location: tuple[Any, ...], prefix: str) -> str:
    where = prefix
    for part in location:
        if isinstance(part, int):
            where += f"[{part}]"
        else:
            where = f"{where}.{part}" if where else str(part)
    return where.replace(".from_", ".from")


def validation_message(exc: pydantic.ValidationError, prefix: str = "") -> str:
    """One message naming each wrong field: `trigger.single.time: must be yyyy-mm-dd hh:mm:ss, got "..."`."""
    messages = []
    for error in exc.errors(include_url=False):
        location = tuple(error["loc"])
        # Errors of the nested audience check arrive wrapped; unwrap them to name the inner field.
        if error["type"] == "value_error" and isinstance(error.get("ctx", {}).get("error"), pydantic.ValidationError):
            messages.append(validation_message(error["ctx"]["error"], _path(location, prefix)))
            continue
        messages.append(_describe(error, _path(location, prefix)))
    return "; ".join(dict.fromkeys(messages))


def _field_of(path: str) -> str:
    """The named field a path is in: `push.custom_args[0][0]` -> `push.custom_args`."""
    return re.sub(r"(\[\d+\])+$", "", path) or "body"


def check_storable(data: Any) -> None:
    """Refuse, naming the field, what a parsed body holds that PostgreSQL cannot store or the service cannot
    handle: NUL characters and lone surrogates (text and jsonb refuse them), numbers beyond a double (JSON
    allows `1e400`, which Python reads as infinity and jsonb refuses), and nesting deeper than
    MAX_JSON_DEPTH (whose encoding and decoding would recurse past Python's limit).

    Walks the body with an explicit stack, so a deeply nested body cannot exhaust recursion here.
    """
    pending: list[tuple[str, Any, int]] = [("", data, 1)]
    while pending:
        where, value, depth = pending.pop()
        if isinstance(value, (dict, list)) and depth > MAX_JSON_DEPTH:
            raise errors.InvalidParameter(f"{_field_of(where)}: must be nested at most {MAX_JSON_DEPTH} deep")
        if isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{key}" if where else str(key)
                pending.extend(((path, key, depth), (path, item, depth + 1)))
        elif isinstance(value, list):
            pending.extend((f"{where}[{index}]", item, depth + 1) for index, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            # NaN and Infinity never get here (the body parser refuses them): only overflowed numbers.
            raise errors.InvalidParameter(f"{where or 'body'}: must be a number between -1.8e308 and 1.8e308")
        elif isinstance(value, str):
            if "\x00" in value:
                raise errors.InvalidParameter(f"{where or 'body'}: must not contain the NUL character (\\u0000)")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise errors.InvalidParameter(
                    f"{where or 'body'}: must be valid Unicode, got a lone surrogate"
                ) from None


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate `data` against `model`; every failure becomes InvalidParameter naming the fields."""
    if not isinstance(data, dict):
        raise errors.InvalidParameter("body: must be a JSON object")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise errors.InvalidParameter(validation_message(exc)) from None
