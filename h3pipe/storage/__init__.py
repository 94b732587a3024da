"""Where run state and results live. The embedded store is :class:`EmbeddedStore`."""

from h3pipe.storage.embedded import EmbeddedStore

__all__ = ["EmbeddedStore"]
