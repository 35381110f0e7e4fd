"""Validation of everything a caller can pass in, in one place.

Rules follow MLflow's: metric/param/tag keys are 1-250 characters of letters, digits,
``_ - . / :`` and spaces, and must not change when normalised as a path; param values are
at most 6,000 characters and tag values 8,000; metric values are real numbers (NaN and
+/-inf are allowed and stored faithfully); timestamps and steps are integers. No text may
hold a NUL character or a lone surrogate (:func:`validate_storable`): PostgreSQL cannot
store them, so both databases refuse them alike.

Artifact paths must be relative and stay inside the run's artifact root: absolute paths,
``..`` segments and their URL-encoded, double-encoded and backslash spellings are refused.
Names are kept literally: ``100%25.txt`` is stored under that name, never URL-decoded.

Every refusal is an :class:`~tracking_plugin.errors.InvalidArgument` that names the value
and says what to do instead.
"""

from __future__ import annotations

import math
import numbers
import posixpath
import re
from typing import Any
from urllib.parse import unquote

from tracking_plugin.errors import InvalidArgument

__all__ = [
    "MAX_BATCH_METRICS",
    "MAX_BATCH_PARAMS_TAGS",
    "validate_alias",
    "validate_artifact_path",
    "validate_experiment_name",
    "validate_key",
    "validate_metric",
    "validate_model_name",
    "validate_param",
    "validate_run_id",
    "validate_storable",
    "validate_tag",
    "validate_text",
    "validate_timestamp",
]

# Column sizes of the schema (store/schema.py imports these).
NAME_LEN = 256
KEY_LEN = 250
PARAM_VALUE_LEN = 6000
TAG_VALUE_LEN = 8000
URI_LEN = 1000

# A single log_batch may hold this many items (MLflow: 1000 metrics, 100 params/tags over
# REST; we allow more because we write with one executemany, not one INSERT a row).
MAX_BATCH_METRICS = 100_000
MAX_BATCH_PARAMS_TAGS = 10_000

_KEY_RE = re.compile(r"^[/\w.\- :]+$")
_RUN_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,32}$")
_RESERVED_ALIAS_RE = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)
_ALIAS_RE = re.compile(r"^[\w\-]+$")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_storable(value: str, what: str) -> str:
    """Refuse text no database of ours can store, identically on SQLite and PostgreSQL.

    PostgreSQL refuses NUL characters in text, and no driver can send a lone surrogate
    (text that is not valid Unicode); SQLite would keep the first and fail on the second.
    Every free-text value passes here before it reaches a database.
    """
    if "\x00" in value:
        raise InvalidArgument(
            f"Invalid {what} {_short(value)}: it contains a NUL character (\\x00), which the "
            "database cannot store. Remove it."
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"Invalid {what} {_short(value)}: it is not valid Unicode (a lone surrogate at "
            f"position {exc.start}), which the database cannot store. Decode the text properly first."
        ) from exc
    return value


def validate_key(key: Any, kind: str = "key") -> str:
    """Check a metric/param/tag key; return it unchanged."""
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"Invalid {kind} name {_short(key)}: it must be a non-empty string.")
    if len(key) > KEY_LEN:
        raise InvalidArgument(
            f"Invalid {kind} name {_short(key)}: it has {len(key)} characters, "
            f"the limit is {KEY_LEN}. Use a shorter name."
        )
    if not _KEY_RE.match(key):
        raise InvalidArgument(
            f"Invalid {kind} name {_short(key)}: names may only contain letters, digits, "
            "underscores (_), dashes (-), periods (.), spaces ( ), colons (:) and slashes (/)."
        )
    normalised = posixpath.normpath(key)
    if normalised != key or key.startswith("/") or normalised == "." or normalised.split("/")[0] == "..":
        raise InvalidArgument(
            f"Invalid {kind} name {_short(key)}: names are used as file paths and must not "
            f"resolve to another path (it would be {posixpath.normpath(key)!r}). "
            "Remove '..', '.', repeated or leading/trailing slashes."
        )
    return key


def validate_timestamp(value: Any, what: str = "timestamp") -> int:
    """Check integer milliseconds since the epoch (64-bit); return it as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgument(
            f"Invalid {what} {_short(value)}: it must be an integer number of milliseconds "
            "since the epoch (e.g. int(time.time() * 1000))."
        )
    value = int(value)
    if not -(2**63) <= value < 2**63:
        raise InvalidArgument(f"Invalid {what} {value}: it must fit in 64 bits.")
    return value


def validate_text(value: Any, what: str, *, limit: int = NAME_LEN) -> str:
    """Check a short free-text field (run name, user id, ...): a string of at most ``limit`` chars."""
    if not isinstance(value, str):
        raise InvalidArgument(f"Invalid {what} {_short(value)}: it must be a string.")
    if len(value) > limit:
        raise InvalidArgument(
            f"Invalid {what} {_short(value)}: it has {len(value)} characters, the limit is {limit}."
        )
    return validate_storable(value, what)


def validate_metric(key: Any, value: Any, timestamp: Any, step: Any) -> tuple[str, float, int, int]:
    """Check one metric point; return (key, float value, int timestamp, int step)."""
    validate_key(key, "metric")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidArgument(
            f"Invalid value {_short(value)} for metric {key!r}: a metric value must be a real "
            "number (int or float; NaN and infinities are allowed). Log text as a param or tag."
        )
    if isinstance(timestamp, bool) or not isinstance(timestamp, numbers.Integral):
        raise InvalidArgument(
            f"Invalid timestamp {_short(timestamp)} for metric {key!r}: it must be an integer "
            "number of milliseconds since the epoch."
        )
    if not -(2**63) <= int(timestamp) < 2**63:
        raise InvalidArgument(f"Invalid timestamp {int(timestamp)} for metric {key!r}: it must fit in 64 bits.")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise InvalidArgument(
            f"Invalid step {_short(step)} for metric {key!r}: it must be an integer."
        )
    step_i = int(step)
    if not -(2**63) <= step_i < 2**63:
        raise InvalidArgument(f"Invalid step {step_i} for metric {key!r}: it must fit in 64 bits.")
    return key, float(value), int(timestamp), step_i


def validate_param(key: Any, value: Any) -> tuple[str, str]:
    """Check one param; values are stored as strings (``str(value)``), at most 6,000 chars."""
    validate_key(key, "param")
    text = value if isinstance(value, str) else str(value)
    if len(text) > PARAM_VALUE_LEN:
        raise InvalidArgument(
            f"Param {key!r} has a value of {len(text)} characters, the limit is "
            f"{PARAM_VALUE_LEN}. Log long values as an artifact (log_text / log_dict)."
        )
    return key, validate_storable(text, f"value of param {key!r}")


def validate_tag(key: Any, value: Any) -> tuple[str, str]:
    """Check one tag; values are stored as strings, at most 8,000 chars."""
    validate_key(key, "tag")
    text = value if isinstance(value, str) else str(value)
    if len(text) > TAG_VALUE_LEN:
        raise InvalidArgument(
            f"Tag {key!r} has a value of {len(text)} characters, the limit is "
            f"{TAG_VALUE_LEN}. Log long values as an artifact (log_text / log_dict)."
        )
    return key, validate_storable(text, f"value of tag {key!r}")


def validate_experiment_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument(
            f"Invalid experiment name {_short(name)}: it must be a non-empty string."
        )
    if len(name) > NAME_LEN:
        raise InvalidArgument(
            f"Experiment name {_short(name)} has {len(name)} characters, the limit is {NAME_LEN}."
        )
    return validate_storable(name, "experiment name")


def validate_model_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument(f"Invalid model name {_short(name)}: it must be a non-empty string.")
    if len(name) > NAME_LEN:
        raise InvalidArgument(
            f"Model name {_short(name)} has {len(name)} characters, the limit is {NAME_LEN}."
        )
    if "/" in name or "@" in name or ":" in name:
        raise InvalidArgument(
            f"Invalid model name {name!r}: '/', '@' and ':' are not allowed because the name "
            "is part of models:/<name>/<version> and models:/<name>@<alias> URIs."
        )
    return validate_storable(name, "model name")


def validate_alias(alias: Any) -> str:
    """Aliases are letters, digits, '_' and '-'; ``latest`` and ``v<digits>`` are reserved."""
    if not isinstance(alias, str) or not alias or len(alias) > KEY_LEN or not _ALIAS_RE.match(alias):
        raise InvalidArgument(
            f"Invalid alias {_short(alias)}: use 1-{KEY_LEN} letters, digits, '_' or '-'."
        )
    if _RESERVED_ALIAS_RE.match(alias):
        raise InvalidArgument(
            f"Alias {alias!r} is reserved ('latest' and 'v<number>' already mean a version "
            "in models:/ URIs). Choose another name, e.g. 'champion' or 'challenger'."
        )
    return alias


def validate_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise InvalidArgument(
            f"Invalid run id {_short(run_id)}: run ids are 1-32 letters, digits, '-' or '_' "
            "(the run_id of a Run returned by start_run or get_run)."
        )
    return run_id


def _decode_fully(path: str) -> str:
    """Undo URL-encoding repeatedly so double-encoded '..' (%252e%252e) is seen too."""
    for _ in range(5):
        decoded = unquote(path)
        if decoded == path:
            return decoded
        path = decoded
    return path


# Longest file or folder name: NAME_MAX of common filesystems (ext4, xfs, APFS), in UTF-8 bytes.
ARTIFACT_NAME_MAX_BYTES = 255
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def validate_artifact_path(path: Any) -> str | None:
    """Check a relative artifact path (``artifact_path=`` / ``artifact_file=``).

    Returns the path with its names kept literally (``100%25.txt`` stays ``100%25.txt``,
    ``a%2Fb.txt`` stays one file), only '/' separators tidied: no leading, trailing or
    repeated slashes, no ``.`` segments; None for the root. Refused, whatever reads the path
    later (a filesystem, S3, a server that URL-decodes it): absolute paths, ``..`` segments
    in any spelling (backslash, URL-encoded, double-encoded), control characters, text that
    is not valid Unicode, and names longer than 255 bytes.
    """
    if path is None:
        return None
    if not isinstance(path, str):
        raise InvalidArgument(f"Invalid artifact path {_short(path)}: it must be a string.")
    if path in ("", "."):
        return None
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"Invalid artifact path {path!r}: it is not valid Unicode ({exc.reason}); use plain text names."
        ) from exc
    # The path is stored as given; these are the readings other tools may make of it.
    for spelling in dict.fromkeys((path, _decode_fully(path))):
        if _CONTROL_RE.search(spelling):
            raise InvalidArgument(
                f"Invalid artifact path {path!r}: control characters (NUL, newline, tab, ...) are "
                "not allowed in artifact names, also URL-encoded."
            )
        unified = spelling.replace("\\", "/")
        if unified.startswith("/") or re.match(r"^[a-zA-Z]:", unified) or "://" in unified:
            raise InvalidArgument(
                f"Invalid artifact path {path!r}: it must be relative to the run's artifact root "
                "(e.g. 'plots/roc.png'), not absolute."
            )
        if ".." in unified.split("/"):
            raise InvalidArgument(
                f"Invalid artifact path {path!r}: '..' segments (in any encoding) are not allowed; "
                "artifacts must stay inside the run's artifact root."
            )
    names = [name for name in path.split("/") if name not in ("", ".")]
    for name in names:
        if len(name.encode("utf-8")) > ARTIFACT_NAME_MAX_BYTES:
            raise InvalidArgument(
                f"Invalid artifact path {_short(path)}: the name {_short(name)} is "
                f"{len(name.encode('utf-8'))} bytes long, the limit is {ARTIFACT_NAME_MAX_BYTES} "
                "(a file system's limit). Use a shorter file or folder name."
            )
    return "/".join(names) or None
