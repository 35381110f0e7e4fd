"""Where a run came from: git commit and dirty flag, user, host, Python and package versions.

Also what went in: :func:`flatten_params` turns bound arguments into param strings,
summarising data (DataFrames, arrays) as shape, dtypes and a content digest.

Everything about the environment is computed once per process (and per source directory for git) and
cached, because the Prefect decorator stamps these tags on every run and must stay cheap.
Nothing here raises: lineage is best effort, a missing ``git`` or a directory outside a
repository simply leaves the tag out.
"""

from __future__ import annotations

import enum
import functools
import getpass
import hashlib
import json
import os
import platform
import re
import socket
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any

__all__ = [
    "TAG_GIT_COMMIT",
    "TAG_GIT_DIRTY",
    "TAG_HOST",
    "TAG_PYTHON_VERSION",
    "TAG_SOURCE_NAME",
    "TAG_SOURCE_TYPE",
    "TAG_USER",
    "TRACKED_PACKAGES",
    "flatten_params",
    "git_info",
    "lineage_tags",
    "package_versions",
    "summarize_value",
    "user_name",
]

from tracking_plugin.tags import (  # noqa: E402 - the names this module writes
    PACKAGE_TAG_PREFIX,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_HOST,
    TAG_PYTHON_VERSION,
    TAG_SOURCE_NAME,
    TAG_SOURCE_TYPE,
    TAG_USER,
)

# Distributions whose versions decide whether a run can be reproduced.
TRACKED_PACKAGES = ("prefect-mlops", "prefect", "scikit-learn", "numpy", "pandas")

_GIT_TIMEOUT_S = 5.0


@functools.cache
def user_name() -> str:
    """The OS user running this process (``mlflow.user``), or ``"unknown"``."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return os.environ.get("USER") or "unknown"


@functools.cache
def _host() -> str:
    return socket.gethostname()


@functools.cache
def package_versions() -> dict[str, str]:
    """Installed versions of :data:`TRACKED_PACKAGES` (missing ones are left out)."""
    found: dict[str, str] = {}
    for name in TRACKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def git_info(directory: str | None = None) -> tuple[str, bool] | None:
    """``(commit sha, dirty)`` of the repository holding ``directory`` (default: cwd).

    ``dirty`` is True when tracked files differ from the commit (untracked files are
    ignored: they do not change what the commit reproduces). None outside a repository.
    """
    cwd = Path(directory) if directory else Path.cwd()
    if not cwd.is_dir():
        cwd = cwd.parent
    commit = _git(["rev-parse", "HEAD"], cwd)
    if not commit:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return commit, bool(status)


def lineage_tags(source_file: str | None = None) -> dict[str, str]:
    """Tags describing who ran what where; ``source_file`` is the flow/task's file.

    >>> tags = lineage_tags()
    >>> tags["mlflow.user"] != ""
    True
    """
    tags = {
        TAG_USER: user_name(),
        TAG_HOST: _host(),
        TAG_PYTHON_VERSION: platform.python_version(),
    }
    for name, version in package_versions().items():
        tags[PACKAGE_TAG_PREFIX + name] = version
    if source_file:
        tags[TAG_SOURCE_NAME] = source_file
    info = git_info(str(Path(source_file).parent) if source_file else os.getcwd())
    if info is not None:
        tags[TAG_GIT_COMMIT] = info[0]
        tags[TAG_GIT_DIRTY] = "true" if info[1] else "false"
    return tags


# ------------------------------------------------------------------ inputs

_DIGEST_CHARS = 16
_MAX_FLATTEN_DEPTH = 3


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]


def _frame_summary(frame: Any) -> str:
    import pandas as pd

    hashed = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    if isinstance(frame, pd.DataFrame):
        dtypes = ", ".join(f"{col}: {dtype}" for col, dtype in frame.dtypes.items())
        return f"DataFrame(shape={frame.shape}, dtypes={{{dtypes}}}, sha256={_digest(hashed.tobytes())})"
    return f"Series(name={frame.name!r}, shape={frame.shape}, dtype={frame.dtype}, sha256={_digest(hashed.tobytes())})"


def _array_summary(array: Any) -> str:
    import numpy as np

    contiguous = np.ascontiguousarray(array)
    if contiguous.dtype.hasobject:
        digest = _digest(repr(contiguous.tolist()).encode())
    else:
        digest = _digest(contiguous.tobytes())
    return f"ndarray(shape={array.shape}, dtype={array.dtype}, sha256={digest})"


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    suffix = f"... ({len(text)} chars, sha256={_digest(text.encode('utf-8', 'replace'))})"
    return text[: limit - len(suffix)] + suffix


def summarize_value(value: Any, *, limit: int = 6000) -> str:
    """A param-sized text for ``value``: scalars as themselves, data as a fingerprint.

    DataFrames, Series and arrays become shape, dtypes and a content digest (never the
    data); long text is cut with its length and digest; anything else is ``repr``-ed.
    Never raises.

    >>> summarize_value(0.1)
    '0.1'
    >>> import numpy as np
    >>> summarize_value(np.zeros((2, 3))).split(", sha256=")[0]
    'ndarray(shape=(2, 3), dtype=float64'
    """
    try:
        if value is None or isinstance(value, (bool, int, float, str)):
            text = str(value)
        elif isinstance(value, enum.Enum):
            text = str(value.value)
        elif isinstance(value, PurePath):
            text = str(value)
        elif type(value).__module__.startswith("pandas") and type(value).__name__ in ("DataFrame", "Series"):
            text = _frame_summary(value)
        elif type(value).__module__ == "numpy" and type(value).__name__ == "ndarray":
            text = _array_summary(value)
        elif type(value).__module__ == "numpy" and hasattr(value, "item"):
            text = str(value.item())  # numpy scalar
        elif isinstance(value, (list, tuple, dict, set, frozenset)):
            try:
                text = json.dumps(
                    sorted(value) if isinstance(value, (set, frozenset)) else value,
                    default=str,
                    separators=(",", ":"),
                )
            except (TypeError, ValueError):
                text = repr(value)
        elif hasattr(value, "model_dump_json"):  # pydantic models
            text = value.model_dump_json()
        elif hasattr(value, "get_params") and hasattr(value, "fit"):  # sklearn estimators
            text = type(value).__name__
        else:
            text = repr(value)
            if " at 0x" in text:  # default object repr: the address means nothing later
                text = f"<{type(value).__module__}.{type(value).__qualname__}>"
        return _truncate(text, limit)
    except Exception:  # noqa: BLE001 - a summary must never break the caller's run
        return f"<unrecordable {type(value).__name__}>"


_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def _clean_key(key: Any) -> str:
    return _BAD_KEY_CHARS.sub("_", str(key))[:250] or "_"


def flatten_params(params: Mapping[str, Any], *, limit: int = 6000) -> dict[str, str]:
    """Param name -> summary; nested mappings become dotted names (``config.lr``).

    >>> flatten_params({"config": {"lr": 0.1, "depth": 3}, "n": 5})
    {'config.lr': '0.1', 'config.depth': '3', 'n': '5'}
    """
    flat: dict[str, str] = {}

    def visit(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, Mapping) and value and depth < _MAX_FLATTEN_DEPTH:
            for key, inner in value.items():
                visit(f"{prefix}.{_clean_key(key)}", inner, depth + 1)
        else:
            flat[prefix] = summarize_value(value, limit=limit)

    for key, value in params.items():
        visit(_clean_key(key), value, 0)
    return flat
