"""The sha256 manifest of a model directory: written last at save, checked first at load.

``manifest.json`` lists every other file of the model with its size and sha256::

    {"format": "prefect-mlops-manifest/1", "algorithm": "sha256",
     "files": {"MLmodel": {"size": 713, "sha256": "9f2c..."}, "model.skops": {...}}}

MLflow ignores the file, so models stay loadable there. At load a missing, added, resized
or changed file raises :class:`~tracking_plugin.errors.ModelLoadRefused` naming the file.
The manifest detects corruption, truncated uploads and edits made without rewriting it; it
is not a signature (whoever can rewrite the files can rewrite the manifest too).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tracking_plugin.errors import ModelLoadRefused
from tracking_plugin.models._paths import check_model_tree, model_path

__all__ = ["MANIFEST_FILE", "file_sha256", "verify_manifest", "write_manifest"]

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "prefect-mlops-manifest/1"


def file_sha256(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _model_files(root: Path) -> dict[str, Path]:
    """Relative POSIX path -> file, for every file under ``root`` except the manifest."""
    files: dict[str, Path] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            relative = path.relative_to(root).as_posix()
            if relative != MANIFEST_FILE:
                files[relative] = path
    return files


def write_manifest(root: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Hash every file under ``root`` and write ``manifest.json``; return the entries."""
    base = Path(root)
    entries = {
        relative: {"size": path.stat().st_size, "sha256": file_sha256(path)}
        for relative, path in sorted(_model_files(base).items())
    }
    document = {"format": MANIFEST_FORMAT, "algorithm": "sha256", "files": entries}
    (base / MANIFEST_FILE).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    return entries


def read_manifest(root: str | os.PathLike[str]) -> dict[str, dict[str, Any]] | None:
    """The manifest's entries, or None when the model has none (e.g. saved by MLflow)."""
    path = model_path(root, MANIFEST_FILE, what="manifest")
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
        entries = document["files"]
        if document.get("algorithm") != "sha256" or not isinstance(entries, dict):
            raise ValueError("unknown algorithm or malformed file list")
        for relative, entry in entries.items():
            if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("size"), int):
                raise ValueError(f"malformed entry for {relative!r}")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ModelLoadRefused(
            f"The model at {os.fspath(root)!r} has an unreadable {MANIFEST_FILE} ({exc}); its files "
            "cannot be verified. Re-save or re-download the model."
        ) from exc
    return entries


def verify_manifest(root: str | os.PathLike[str], entries: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Check every file under ``root`` against ``entries``; return relative path -> sha256.

    Sizes are compared before hashing, so a truncated file is reported as such cheaply.
    """
    base = Path(root)
    check_model_tree(base)
    actual = _model_files(base)
    where = os.fspath(root)
    missing = sorted(set(entries) - set(actual))
    if missing:
        raise ModelLoadRefused(
            f"Model at {where!r} is incomplete: file(s) {', '.join(map(repr, missing))} listed in "
            f"its {MANIFEST_FILE} are missing. Re-download or re-save the model; do not load it as is."
        )
    added = sorted(set(actual) - set(entries))
    if added:
        raise ModelLoadRefused(
            f"Model at {where!r} has file(s) {', '.join(map(repr, added))} that are not in its "
            f"{MANIFEST_FILE}: they were added after the model was saved. Remove them or re-save the model."
        )
    digests: dict[str, str] = {}
    for relative, entry in entries.items():
        path = actual[relative]
        size = path.stat().st_size
        if size != entry["size"]:
            kind = "truncated" if size < entry["size"] else "changed"
            raise ModelLoadRefused(
                f"Model file {relative!r} at {where!r} is {kind}: it has {size} bytes, "
                f"{entry['size']} were saved. Re-download or re-save the model."
            )
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise ModelLoadRefused(
                f"Model file {relative!r} at {where!r} was changed after it was saved: its sha256 "
                f"is {digest}, the manifest records {entry['sha256']}. Do not load it; re-download "
                "or re-save the model from a trusted copy."
            )
        digests[relative] = digest
    return digests
