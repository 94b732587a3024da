"""What ``h3pipe serve`` allows: :class:`ServerSettings`, read once from the ``server:``
section of h3pipe.yaml (and its tokens file) and the command's options."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h3pipe.errors import ConfigError, UsageError

SCOPES = ("read", "run")  # run includes read
# Query parameters that would carry a token in a URL: refused, never read (auth.py).
URL_TOKENS = ("token", "access_token")


@dataclass(frozen=True)
class Token:
    sha256: str
    scope: str
    name: str = ""


@dataclass(frozen=True)
class ServerSettings:
    tokens: tuple[Token, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1_000_000
    max_aoi_vertices: int = 100_000
    max_concurrent_runs: int = 2
    geojson_inline_cells: int = 5_000
    map_cells: int = 100_000
    basemap: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        """No token configured: every request may read and run (the server binds to
        loopback unless told otherwise)."""
        return not self.tokens

    def scope_of(self, presented: str) -> str | None:
        """The scope of a presented bearer token, None for an unknown one. Every token is
        compared, in constant time each, so the time taken tells nothing of which matched."""
        digest = hashlib.sha256(presented.encode()).hexdigest()
        found = None
        for token in self.tokens:
            if _same(token.sha256, digest):
                found = token.scope
        return found

    @classmethod
    def of(cls, settings: dict[str, Any], root: Path, **given: Any) -> ServerSettings:
        """From h3pipe.yaml's ``server:`` (already checked against the project schema), its
        ``tokens_file`` (relative to the project) and options given on the command line."""
        section = dict(settings.get("server") or {})
        tokens = [Token(t["sha256"].lower(), t["scope"], t.get("name", ""))
                  for t in section.pop("tokens", [])]
        if "tokens_file" in section:
            tokens += _tokens_file(root / section.pop("tokens_file"))
        known = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        if "cors_origins" in known:
            known["cors_origins"] = tuple(known["cors_origins"])
        known.update({k: v for k, v in given.items() if v is not None})
        return cls(tokens=_distinct(tokens), **known)


def hash_token(token: str) -> str:
    """The value to write in h3pipe.yaml for a token (``h3pipe serve --hash-token``)."""
    if not token or any(c.isspace() for c in token):
        raise UsageError("the token read on standard input is empty or holds blanks; a "
                         "bearer token is one word",
                         hint="make one with: python -c 'import secrets; "
                         "print(secrets.token_urlsafe(32))'")
    return hashlib.sha256(token.encode()).hexdigest()


def _distinct(tokens: list[Token]) -> tuple[Token, ...]:
    """One scope per token: the same SHA-256 listed with two scopes is a mistake to fix,
    not a choice to guess (h3pipe.yaml and the tokens file may both list it)."""
    scopes: dict[str, Token] = {}
    for token in tokens:
        other = scopes.setdefault(token.sha256, token)
        if other.scope != token.scope:
            raise ConfigError(f"server tokens: the token {token.sha256[:12]}... is listed "
                              f"with scope '{other.scope}' and with scope '{token.scope}'",
                              hint="keep one line for it in 'server: tokens' or tokens_file")
    return tuple(scopes.values())


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def _tokens_file(path: Path) -> list[Token]:
    """Lines ``SCOPE SHA256 [NAME]``; ``#`` starts a comment."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"server tokens_file {path}: {exc.strerror or exc}",
                          hint="fix 'server: tokens_file:' in h3pipe.yaml") from None
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) < 2 or words[0] not in SCOPES or not _is_sha256(words[1]):
            raise ConfigError(f"{path}:{number}: expected 'SCOPE SHA256 [NAME]' with SCOPE "
                              "read or run and the token's SHA-256 in hex",
                              hint="hash a token with 'h3pipe serve --hash-token'")
        tokens.append(Token(words[1].lower(), words[0], " ".join(words[2:])))
    return tokens


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)
