"""Containment of a model's files: every path read from a model stays inside its directory.

A model directory is data from somewhere else (a run, a bucket, a colleague's folder), and
its ``MLmodel`` names the files to read: the serialized model, the input example, custom
artifacts, environment files, code. Each such path goes through :func:`model_path`, the
one check used everywhere a model's file is opened, and :func:`check_model_paths` checks
all of them at once when a model is loaded or registered. Refused, with
:class:`~tracking_plugin.errors.ModelLoadRefused` naming the path and the reason:

- absolute paths (``/etc/passwd``, ``C:\\x``) and ``..`` segments in any spelling;
- symlinks (the file itself or a folder on the way) that lead outside the directory;
- anything that is not a regular file or folder (FIFOs, devices: reading them may block).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from tracking_plugin.errors import InvalidArgument, ModelLoadRefused
from tracking_plugin.validation import validate_artifact_path

if TYPE_CHECKING:
    from tracking_plugin.models._mlmodel import ModelMetadata

__all__ = ["check_model_paths", "check_model_tree", "model_path", "referenced_paths"]

# Keys of a flavor's configuration whose values are paths inside the model (MLflow's names).
_FLAVOR_PATH_KEYS = ("data", "code", "model_path", "pickled_model", "python_model", "model_code_path", "conda", "virtualenv")
_EXAMPLE_PATH_KEYS = ("artifact_path", "serving_input_path")


def _refuse(where: str, what: str, relative: Any, why: str) -> ModelLoadRefused:
    return ModelLoadRefused(
        f"Refusing the model at {where!r}: its {what} {relative!r} {why}. A model may only read "
        "files inside its own directory; re-save the model from a trusted copy."
    )


def relative_model_path(relative: Any, *, where: str, what: str) -> str:
    """The POSIX form of a path named by a model's files; refused unless relative and inside."""
    if not isinstance(relative, str) or not relative.strip():
        raise _refuse(where, what, relative, "is not a file name")
    try:
        cleaned = validate_artifact_path(relative)
    except InvalidArgument as exc:
        raise _refuse(where, what, relative, f"is not a path inside the model directory ({exc.message})") from exc
    if not cleaned:
        raise _refuse(where, what, relative, "names the model directory itself, not a file in it")
    return cleaned


def model_path(model_dir: str | os.PathLike[str], relative: Any, *, where: str | None = None, what: str = "file") -> Path:
    """``model_dir/relative``, resolved, for a path read from a model's files.

    Refuses absolute paths, ``..`` (any spelling) and symlinks leading outside ``model_dir``.
    The returned path may not exist; callers decide whether a missing file is an error.
    """
    shown = where or os.fspath(model_dir)
    cleaned = relative_model_path(relative, where=shown, what=what)
    base = Path(model_dir).resolve()
    target = (base / cleaned).resolve()
    if not target.is_relative_to(base):
        raise _refuse(shown, what, relative, f"leads outside the model directory through a symlink (to {str(target)!r})")
    if target.exists() and not (target.is_file() or target.is_dir()):
        raise _refuse(shown, what, relative, "is not a regular file")
    return target


def referenced_paths(meta: ModelMetadata) -> Iterator[tuple[str, Any]]:
    """(description, path) for every path the ``MLmodel`` names."""
    for flavor, conf in meta.flavors.items():
        if not isinstance(conf, Mapping):
            continue
        for key in _FLAVOR_PATH_KEYS:
            if conf.get(key) is not None:
                yield f"flavors.{flavor}.{key}", conf[key]
        env = conf.get("env")
        if isinstance(env, Mapping):
            for key, value in env.items():
                yield f"flavors.{flavor}.env.{key}", value
        elif env is not None:
            yield f"flavors.{flavor}.env", env
        artifacts = conf.get("artifacts")
        if isinstance(artifacts, Mapping):
            for name, info in artifacts.items():
                yield f"flavors.{flavor}.artifacts.{name}", info.get("path") if isinstance(info, Mapping) else info
        elif artifacts is not None:
            yield f"flavors.{flavor}.artifacts", artifacts
    info = meta.saved_input_example_info
    if isinstance(info, Mapping):
        for key in _EXAMPLE_PATH_KEYS:
            if info.get(key) is not None:
                yield f"saved_input_example_info.{key}", info[key]
    elif info is not None:
        yield "saved_input_example_info", info


def check_model_paths(model_dir: str | os.PathLike[str] | None, meta: ModelMetadata, *, where: str) -> None:
    """Check every path the ``MLmodel`` names; with ``model_dir`` (a local copy) symlinks too."""
    for what, relative in referenced_paths(meta):
        label = f"MLmodel entry {what}"
        if model_dir is None:
            relative_model_path(relative, where=where, what=label)
        else:
            model_path(model_dir, relative, where=where, what=label)


def check_model_tree(model_dir: str | os.PathLike[str], *, where: str | None = None) -> None:
    """Refuse a model folder holding a symlink that leads outside it, or a special file."""
    base = Path(model_dir).resolve()
    shown = where or os.fspath(model_dir)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            relative = path.relative_to(base).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = path.resolve()
                if not target.is_relative_to(base):
                    raise _refuse(shown, "file", relative, f"is a symlink leading outside the model directory (to {str(target)!r})")
                mode = target.stat().st_mode if target.exists() else stat.S_IFREG
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise _refuse(shown, "file", relative, "is not a regular file (a FIFO, socket or device)")
