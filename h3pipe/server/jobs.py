"""Where runs submitted over HTTP execute: :class:`Jobs` (to be written)."""

from __future__ import annotations

from typing import Any


class Jobs:
    @classmethod
    def start(cls, project: Any, *, workers: int, queue: str | None) -> Jobs:
        return cls()

    def close(self) -> None: ...
