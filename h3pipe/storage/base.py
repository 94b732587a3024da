"""Provisional: replaced by the Store protocol of the storage branch."""

from __future__ import annotations

from typing import Any

Store = Any
