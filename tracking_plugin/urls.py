"""Tracking URIs: the one rule for printing them, and the one for making them absolute.

Every repr, log line, tag, error message, Prefect artifact and CLI line that shows a
tracking URI (or any URL that may carry credentials) passes it through
:func:`redact_uri`, so a database password never reaches a screen or a log::

    >>> redact_uri("postgresql+psycopg://mlops:s3cret@db.internal:5432/mlops")
    'postgresql+psycopg://mlops:***@db.internal:5432/mlops'
    >>> redact_uri("postgresql+psycopg://db/mlops?user=mlops&password=s3cret")
    'postgresql+psycopg://db/mlops?user=mlops&password=***'
    >>> redact_uri("connecting to http://ana:tok@mlops.internal failed")
    'connecting to http://ana:***@mlops.internal failed'

:func:`absolute_sqlite_uri` turns a relative SQLite path into an absolute one, so a store
keeps pointing at the same file after a later ``os.chdir``. :func:`uri_scheme` is the
scheme the backend resolver (:mod:`tracking_plugin.backend`) maps to a store.

This module imports nothing of ours: every layer may use it.
"""

from __future__ import annotations

import os
import re

__all__ = ["REDACTED", "absolute_sqlite_uri", "redact_uri", "uri_scheme"]

REDACTED = "***"

# ``scheme://user:password@host``: the password runs to the last ``@`` of the authority (a
# password may contain ``@`` or ``/``; over-hiding is the safe side).
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)(?P<secret>[^\s'\"]*?)(?P<at>@)(?=[^@\s'\"]*(?:[/?#\s'\"]|$))"
)
# ``?password=...`` / ``&sslpassword=...`` and friends in a query string.
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&](?:[A-Za-z_]*password|[A-Za-z_]*secret[A-Za-z_]*|token|access_token)=)(?P<secret>[^&#\s'\"]*)",
    re.IGNORECASE,
)


def redact_uri(text: str) -> str:
    """``text`` with every URL password (userinfo or a ``password=`` query parameter)
    replaced by ``***``; works on a bare URI or on a message that contains URIs."""
    if not isinstance(text, str):
        text = str(text)
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m["head"] + REDACTED + m["at"] if m["secret"] else m[0], text)
    return _QUERY_SECRET.sub(lambda m: m["head"] + REDACTED if m["secret"] else m[0], text)


def uri_scheme(uri: str) -> str:
    """The backend part of a URI's scheme, lowercased: ``postgresql+psycopg://`` ->
    ``postgresql``, ``sqlite:///x.db`` -> ``sqlite``, ``https://h`` -> ``https``; ``""``
    when ``uri`` has no scheme."""
    scheme, sep, _ = uri.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        return ""
    return scheme.split("+", 1)[0].lower()


def absolute_sqlite_uri(uri: str) -> str:
    """Make a relative SQLite path absolute (against the current directory); every other
    URI comes back unchanged.

    >>> absolute_sqlite_uri("postgresql+psycopg://h/db")
    'postgresql+psycopg://h/db'
    >>> absolute_sqlite_uri("sqlite:////srv/mlops.db")
    'sqlite:////srv/mlops.db'
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path, sep, query = uri[len(prefix) :].partition("?")
        if path and path != ":memory:" and not path.startswith("file:") and not os.path.isabs(path):
            return prefix + os.path.abspath(os.path.expanduser(path)) + sep + query
    return uri
