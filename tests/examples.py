"""The EngageLab page's own create example (seeds/003), the body most tests start from and vary."""

from __future__ import annotations

from typing import Any


def seed_schedule(time: str, zone_type: int | None = 1, **overrides: Any) -> dict[str, Any]:
    """The seed's request body at `time` (zone_type left out when None), with top-level fields replaced."""
    single: dict[str, Any] = {"time": time}
    if zone_type is not None:
        single["zone_type"] = zone_type
    body: dict[str, Any] = {
        "name": "schedule push example",
        "enabled": True,
        "trigger": {"single": single},
        "push": {
            "from": "push",
            "to": {"registration_id": ["1a0018970ab49abda3e", "100d85590955c1d2793"]},
            "body": {
                "platform": "web",
                "notification": {"alert": "Api web timed task", "web": {"title": "t", "extras": {"key1": "value1"}}},
                "message": {},
                "options": {"time_to_live": 60},
            },
            "request_id": "12345",
            "custom_args": "business info",
        },
    }
    body.update(overrides)
    return body
