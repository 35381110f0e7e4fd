"""Writing and reading model objects: skops by default, pickle formats only on opt-in.

skops stores an object as data (a zip of JSON and numpy arrays) and, when loading, only
rebuilds types it is told to trust. At save we record the types the object needs
(``skops.io.get_untrusted_types``) in the flavor config under ``skops_trusted_types``, the
key MLflow uses, so MLflow loads our files without asking. At load we pass exactly that list,
which the manifest has verified; models without a manifest (saved by MLflow) may only
trust types from scikit-learn, numpy and scipy.

Auditing a skops file and rebuilding the object takes tens of milliseconds for a forest,
so objects loaded (or saved and checked) in this process are kept in a small cache keyed
by the file's sha256 and the trusted-type list: the same verified bytes are audited once,
and each load still gets its own copy.
"""

from __future__ import annotations

import pickle
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

from tracking_plugin.errors import InvalidArgument, ModelLoadRefused

FORMATS = ("skops", "cloudpickle", "pickle")
PICKLE_FORMATS = ("cloudpickle", "pickle")
SKOPS_FILE_SUFFIX = ".skops"
PICKLE_FILE_SUFFIX = ".pkl"
# Types a model without a manifest (e.g. saved by MLflow) may ask us to trust.
FOREIGN_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")


def check_format(serialization_format: Any) -> str:
    if serialization_format not in FORMATS:
        raise InvalidArgument(
            f"Unknown serialization_format {serialization_format!r}: use 'skops' (the safe default), "
            "or 'cloudpickle' / 'pickle' if you accept that loading the model runs code from its file."
        )
    return str(serialization_format)


def file_name(stem: str, serialization_format: str) -> str:
    return stem + (SKOPS_FILE_SUFFIX if serialization_format == "skops" else PICKLE_FILE_SUFFIX)


def require_pickle_opt_in(serialization_format: str, allow_pickle: bool, where: str) -> None:
    if serialization_format in PICKLE_FORMATS and not allow_pickle:
        raise ModelLoadRefused(
            f"Refusing to load the model at {where!r}: it is serialized with {serialization_format}, "
            "and unpickling runs whatever code the file contains. If you trust where it comes from, "
            "pass load_model(..., allow_pickle=True); better, re-save it with "
            "serialization_format='skops', which loads without running code."
        )


# ---------------------------------------------------------------------------- cache


class _ObjectCache:
    """Bounded LRU of pickled objects; hands out a fresh copy on every hit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._blobs: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any | None:
        with self._lock:
            blob = self._blobs.get(key)
            if blob is None:
                return None
            self._blobs.move_to_end(key)
        # Safe: these bytes were pickled in this process from an object built by skops.
        return pickle.loads(blob)

    def put(self, key: tuple[Any, ...], obj: Any) -> None:
        try:
            blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an object pickle cannot copy is simply not cached
            return
        if len(blob) > self.max_bytes:
            return
        with self._lock:
            old = self._blobs.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._blobs[key] = blob
            self._size += len(blob)
            while self._size > self.max_bytes:
                _, evicted = self._blobs.popitem(last=False)
                self._size -= len(evicted)

    def clear(self) -> None:
        with self._lock:
            self._blobs.clear()
            self._size = 0


# 256 MiB of pickled estimators: a few dozen forests; larger objects are simply not cached.
_CACHE = _ObjectCache(max_bytes=256 * 2**20)


def clear_cache() -> None:
    """Forget objects kept from earlier loads (tests, memory pressure)."""
    _CACHE.clear()


# ---------------------------------------------------------------------------- write


def dump(obj: Any, path: Path, serialization_format: str, *, sha256_of: Any) -> list[str] | None:
    """Write ``obj`` to ``path``; for skops return the trusted types it needs.

    A skops file is loaded back once (with exactly the recorded types) so a model that
    cannot be restored fails now, at save, not in production. ``sha256_of(path)`` gives
    the digest under which the restored object is cached.
    """
    if serialization_format == "skops":
        import skops.io
        from skops.io.exceptions import UnsupportedTypeException

        try:
            skops.io.dump(obj, path)
        except (UnsupportedTypeException, TypeError, AttributeError, pickle.PicklingError) as exc:
            raise InvalidArgument(
                f"The model cannot be saved with skops ({type(exc).__name__}: {exc}). skops stores "
                "data, not code: lambdas and classes defined in __main__ or inside functions are not "
                "supported. Move custom code into an importable module, or opt in to "
                "serialization_format='cloudpickle' (loading it will then need allow_pickle=True)."
            ) from exc
        trusted = sorted(skops.io.get_untrusted_types(file=path))
        try:
            restored = skops.io.load(path, trusted=trusted)
        except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
            raise InvalidArgument(
                f"The model was written with skops but cannot be read back ({type(exc).__name__}: "
                f"{exc}). Opt in to serialization_format='cloudpickle' for this model."
            ) from exc
        _CACHE.put(("skops", sha256_of(path), tuple(trusted)), restored)
        return trusted
    with open(path, "wb") as fh:
        if serialization_format == "cloudpickle":
            import cloudpickle

            cloudpickle.dump(obj, fh)
        else:
            pickle.dump(obj, fh, protocol=pickle.DEFAULT_PROTOCOL)
    return None


# ---------------------------------------------------------------------------- read


def check_foreign_trusted_types(trusted: Iterable[str], where: str) -> None:
    """A model without a manifest may only ask to trust scikit-learn/numpy/scipy types."""
    foreign = sorted(t for t in trusted if not t.startswith(FOREIGN_TRUSTED_PREFIXES))
    if foreign:
        raise ModelLoadRefused(
            f"Refusing to load the model at {where!r}: it has no sha256 manifest, and its MLmodel "
            f"asks to trust type(s) {', '.join(map(repr, foreign))} outside scikit-learn, numpy and "
            "scipy. Re-save it with tracking_plugin.models.save_model (which writes a manifest) from a "
            "trusted copy."
        )


def load(path: Path, serialization_format: str, *, trusted: list[str] | None, sha256: str, where: str) -> Any:
    """Read an object written by :func:`dump` (or by MLflow). Pickle opt-in is checked by the caller."""
    if serialization_format == "skops":
        key = ("skops", sha256, tuple(sorted(trusted or ())))
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        import skops.io
        from skops.io.exceptions import UntrustedTypesFoundException

        try:
            obj = skops.io.load(path, trusted=list(trusted or ()))
        except UntrustedTypesFoundException as exc:
            raise ModelLoadRefused(
                f"Refusing to load {path.name!r} of the model at {where!r}: it contains types that "
                f"were not recorded as trusted when it was saved ({exc}). The file was changed or "
                "written by another tool; re-save the model from a trusted copy."
            ) from exc
        except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError) as exc:
            raise ModelLoadRefused(
                f"Model file {path.name!r} at {where!r} is corrupt or truncated ({type(exc).__name__}: "
                f"{exc}). Re-download or re-save the model."
            ) from exc
        _CACHE.put(key, obj)
        return obj
    data = path.read_bytes()
    try:
        if serialization_format == "cloudpickle":
            import cloudpickle

            return cloudpickle.loads(data)
        return pickle.loads(data)
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as exc:
        raise ModelLoadRefused(
            f"Model file {path.name!r} at {where!r} is corrupt or truncated ({type(exc).__name__}: "
            f"{exc}). Re-download or re-save the model."
        ) from exc

