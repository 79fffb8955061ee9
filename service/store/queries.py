"""The named SQL blocks of queries.sql, loaded once: `queries.SQL["get_app"]`."""

from __future__ import annotations

import pathlib
import re

_BLOCK_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load(text: str) -> dict[str, str]:
    """Split `-- name: X` blocks into {X: statement}; comment lines inside a block are kept (harmless)."""
    parts = _BLOCK_NAME.split(text)
    blocks = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in blocks:
            raise ValueError(f"query {name} is defined twice")
        blocks[name] = body.strip()
    return blocks


SQL: dict[str, str] = load((pathlib.Path(__file__).parent / "queries.sql").read_text(encoding="utf-8"))
