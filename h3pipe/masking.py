"""What may be shown of a store or broker location, and of any text that may quote one:
:func:`shown` and :func:`scrub`, the one owner of password masking.

A location carries a password in three forms, and each is masked: the userinfo of a URL
(``postgresql://u:pw@host/db``, ``amqp://u:pw@mq//``), a query parameter
(``?password=pw``, ``?sslpassword=pw``, which libpq accepts) and a libpq keyword string
(``host=db password=pw``). Any other parameter that names a secret (``*password``,
``*secret``, ``*token``, ``api_key``, ``sig``) is masked as well. Errors of the database and
broker libraries may quote a location in their own words, so :func:`scrub` also replaces
every password :func:`remember` was given, wherever it stands, as written or
percent-encoded.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
# Shorter passwords are masked where their form shows them, not searched for as text:
# 'guest' or 'postgres' would blank every word that happens to be the same.
_SHORTEST_REMEMBERED = 8

_KEY = r"(?:[a-z_]*(?:password|passwd|secret|token)|pwd|api_?key)"
_USERINFO = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/?#@\s]*):(?P<pw>[^@\s]*)@", re.I)
# key=value in a URL's query (ends at & or #) or a keyword string (ends at a blank, or a
# quoted value); also 'key': 'value' as a Python dict of connection arguments prints it.
# In a query, also a signed URL's signature (Azure's 'sig').
_QUERY = re.compile(rf"(?P<head>[?&;](?:{_KEY}|sig)=)(?P<pw>[^&#\s]*)", re.I)
_KEYWORD = re.compile(
    rf"(?P<head>(?<![\w?&;])['\"]?{_KEY}['\"]?\s*[=:]\s*)"
    r"(?P<pw>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|(?!\*\*\*(?:[\s,}&#]|$))[^\s,}]+)", re.I)
# A keyword string starts with one of libpq's connection keywords.
_DSN_WORD = re.compile(r"^\s*(?:host|hostaddr|port|dbname|user|password|passfile|service|"
                       r"sslmode|connect_timeout|application_name|options|target_session_attrs)"
                       r"\s*=", re.I)

_remembered: set[str] = set()


def shown(location: str) -> str:
    """``location`` as it may be printed, logged or recorded: every password masked."""
    return scrub(location)


def scrub(text: str) -> str:
    """``text`` with every password in it masked: those of any URL or keyword string it
    quotes, and every remembered one, as written or percent-encoded."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _KEYWORD.sub(lambda m: f"{m['head']}{MASK}", text)
    for secret in sorted(_remembered, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, MASK)
    return text


def remember(location: str) -> str:
    """Note the passwords ``location`` carries, so :func:`scrub` masks them in any text
    (a library's error may quote them on their own); returns ``location``."""
    for pattern in (_USERINFO, _QUERY, _KEYWORD):
        for m in pattern.finditer(location):
            secret = unquote(m["pw"].strip("'\""))
            if len(secret) >= _SHORTEST_REMEMBERED:
                _remembered.add(secret)
    return location


def is_keyword_dsn(location: str) -> bool:
    """A libpq keyword string (``host=db dbname=h3 ...``) rather than a URL or a path."""
    return "://" not in location and bool(_DSN_WORD.match(location))


__all__ = ["MASK", "is_keyword_dsn", "remember", "scrub", "shown"]
