"""The model being served, and how it is replaced when its registry alias moves.

:class:`ModelHolder` keeps the current :class:`~serving_tasks._served_model.ServedModel`.
For ``models:/name@alias`` a :class:`~serving_tasks._registry_poller.RegistryPoller` asks it
to check the registry every few seconds (and can be woken early, e.g. by the
``mlops.model.promoted`` listener in :mod:`serving_tasks._promotion_listener`); when the
alias points at a new version it loads that version beside the old one, checks it on its
own input example, and swaps the reference in one assignment. Requests already holding the
old model finish on it; no request fails because of the swap. A version that fails to load
or fails its input example is refused and remembered; the old one stays.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable



from serving_tasks._registry_poller import RegistryPoller
from serving_tasks._served_model import ModelPredictError, RefusedVersion, ServedModel

__all__ = ["ModelHolder"]

logger = logging.getLogger("serving_tasks")


# The holder ----------------------------------------------------------------------------


def _default_loader(uri: str, *, allow_pickle: bool = False) -> Any:
    from tracking_plugin.models import load_model

    return load_model(uri, allow_pickle=allow_pickle)


class ModelHolder:
    """Loads the model behind ``model_uri`` and, for ``models:/name@alias``, follows the alias.

    ``loader`` turns a model URI into a loaded model (default: ``tracking_plugin.models.load_model``,
    with ``allow_pickle``).
    Call :meth:`load` once, then :meth:`start` to poll every ``poll_interval`` seconds
    (``None`` or 0: never). :meth:`refresh` does one check now; :meth:`wake` asks the
    polling thread to check at once (used by the event listener).
    """

    def __init__(
        self,
        model_uri: str,
        *,
        poll_interval: float | None = 5.0,
        loader: Callable[[str], Any] | None = None,
        allow_pickle: bool = False,
    ) -> None:
        from tracking_plugin.models import parse_model_uri

        self.model_uri = model_uri
        self.poll_interval = poll_interval
        self._loader = loader or functools.partial(_default_loader, allow_pickle=allow_pickle)
        parsed = parse_model_uri(model_uri)
        self._kind = getattr(parsed, "kind", None)
        self.name: str | None = getattr(parsed, "name", None) if self._kind == "models" else None
        self.alias: str | None = getattr(parsed, "alias", None) if self._kind == "models" else None
        self._stage = getattr(parsed, "stage", None) if self._kind == "models" else None
        self._version = getattr(parsed, "version", None) if self._kind == "models" else None
        self._current: ServedModel | None = None
        self._client: Any = None
        self._refused: dict[int, RefusedVersion] = {}
        self._swap_lock = threading.Lock()  # one refresh at a time (poll thread vs wake)
        self._poller = RegistryPoller(self.refresh, interval=poll_interval, what=model_uri)
        self.last_error: str | None = None  # last registry error seen while polling

    # state ---------------------------------------------------------------------------

    @property
    def follows_alias(self) -> bool:
        return self.alias is not None

    @property
    def current(self) -> ServedModel:
        current = self._current
        if current is None:
            raise RuntimeError("no model loaded yet; call ModelHolder.load() first")
        return current

    @property
    def loaded(self) -> bool:
        return self._current is not None

    @property
    def refused(self) -> list[RefusedVersion]:
        return sorted(self._refused.values(), key=lambda r: r.version)

    # loading -------------------------------------------------------------------------

    def _registry(self) -> Any:
        if self._client is None:
            from tracking_plugin.client import TrackingClient

            self._client = TrackingClient()
        return self._client

    def _resolve_version(self) -> int | None:
        """The registry version the URI designates right now (None outside the registry)."""
        if self.name is None:
            return None
        if self.alias is not None:
            return int(self._registry().get_model_version_by_alias(self.name, self.alias).version)
        if self._version is not None and str(self._version).isdigit():
            return int(self._version)
        client = self._registry()
        stages = None if self._stage in (None, "latest") else [self._stage]
        getter = getattr(client, "get_latest_versions", None)
        if getter is None:
            return None
        versions = getter(self.name, stages=stages) if stages else getter(self.name)
        return max((int(v.version) for v in versions), default=None)

    def _load_version(self, version: int | None) -> ServedModel:
        uri = f"models:/{self.name}/{version}" if version is not None else self.model_uri
        model = self._loader(uri)
        return ServedModel.wrap(model, uri, name=self.name, version=version, alias=self.alias)

    def load(self) -> ServedModel:
        """Load the model now (blocking). Raises if it cannot be loaded at all."""
        version = self._resolve_version()
        # For alias/stage URIs, load the exact version resolved, so a move between the
        # lookup and the load cannot give a model labelled with the wrong version.
        served = self._load_version(version if self.name is not None else None)
        try:
            served.check_input_example()
        except Exception as exc:  # serve it anyway: the user asked for this very model
            logger.warning("model %s fails its own input example: %s", served.source_uri, exc)
        self._current = served
        logger.info("serving %s (version %s)", served.source_uri, served.version)
        return served

    def refresh(self) -> bool:
        """Check the alias once; load, verify and swap in a new version. True if swapped."""
        if not self.follows_alias:
            return False
        with self._swap_lock:
            try:
                version = self._resolve_version()
            except Exception as exc:
                # Registry unreachable or alias deleted: keep serving what we have.
                message = f"{type(exc).__name__}: {exc}"
                if message != self.last_error:
                    logger.warning("cannot resolve %s: %s; still serving the current version", self.model_uri, message)
                self.last_error = message
                return False
            self.last_error = None
            current = self._current
            if version is None or (current is not None and current.version == version) or version in self._refused:
                return False
            reason = None
            try:
                candidate = self._load_version(version)
            except Exception as exc:
                reason = f"failed to load: {type(exc).__name__}: {exc}"
            else:
                try:
                    candidate.check_input_example()
                except Exception as exc:
                    detail = exc.message if isinstance(exc, ModelPredictError) else f"{type(exc).__name__}: {exc}"
                    reason = f"failed its own input example: {detail}"
            if reason is not None:
                self._refused[version] = RefusedVersion(version, reason, time.time())
                logger.error(
                    "not swapping in %s version %s (alias %r moved to it): it %s; still serving version %s",
                    self.name,
                    version,
                    self.alias,
                    reason,
                    current.version if current else None,
                )
                return False
            self._current = candidate  # the swap: one reference assignment
            logger.info("alias %s@%s moved: now serving version %s", self.name, self.alias, version)
            return True

    # polling -------------------------------------------------------------------------

    def start(self) -> None:
        """Start polling the registry (no-op unless following an alias)."""
        if self.follows_alias:
            self._poller.start()

    def wake(self) -> None:
        """Check the registry now instead of at the next poll."""
        self._poller.wake()

    def stop(self) -> None:
        self._poller.stop()
