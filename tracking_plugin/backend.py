"""Which backend a call uses, and the stores behind it: the one resolver.

Every default client goes through :func:`resolve_settings`: ``TrackingClient()``,
``RegistryClient()``, the fluent API, ``@track``, the registry and serving tasks and model
URIs. The first of these that is given wins:

1. an explicit tracking URI (``TrackingClient(uri)``, ``@track(tracking_uri=...)``) or
   block (``@track(block=...)``, ``MlopsBackend.get_client()``);
2. :func:`set_tracking_uri` in this process (``tracking_plugin.set_tracking_uri``);
3. the active run's backend, or the tracked Prefect flow's (asked first by
   :func:`tracking_plugin.fluent.current_client`: a run lives where it was created);
4. the saved ``MlopsBackend`` block named by ``PREFECT_MLOPS_BLOCK``;
5. the ``PREFECT_MLOPS_*`` environment; 6. the defaults (``sqlite:///mlops.db``,
   ``./mlops-artifacts``).

With a tracking server's ``http(s)://`` URL the artifact root defaults to the server's
proxy (``mlflow-artifacts:/``) instead of ``./mlops-artifacts``.

A tracking URI's scheme picks the store (:data:`STORE_SCHEMES`): ``sqlite`` and
``postgresql`` are the SQL store, ``http``/``https`` a tracking server's REST API
(:class:`~tracking_plugin.store.rest.RestStore`); a new kind of store is one more entry
there and nowhere else. An unknown scheme raises
:class:`~tracking_plugin.errors.InvalidArgument` naming the supported ones.

Caches, all per process and bounded; a forked child starts with none of its parent's
(keys carry the process id, so a child builds its own engines and connections):

- stores: one per (tracking URI, database password) and process, shared by the clients
  that use it and counted: the last client's ``close()`` disposes the store's connection
  pool. At most ``_STORE_LIMIT`` unused stores are kept.
- default clients (:func:`tracking_plugin.client.default_client`): at most 64, keyed by
  everything their settings are read from (our environment variables, the URI set in
  code, the working directory); the oldest is closed when a new one would exceed that.
- saved blocks: loaded from the Prefect API once per name and process (at most 64).
- per client: artifact repositories by run (at most 256). ``@track``: tracking run ids by
  Prefect run id (at most 10,000) and experiment ids by name.

Passwords stay secret until the engine is built: the block's ``database_password`` travels
as a ``SecretStr`` in :class:`~tracking_plugin.settings.MlopsSettings` and is put into the
URL only inside :class:`~tracking_plugin.store.db.Database`. Printed URIs go through
:func:`tracking_plugin.urls.redact_uri`.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

from tracking_plugin.errors import InvalidArgument
from tracking_plugin.settings import MlopsSettings, get_settings
from tracking_plugin.urls import absolute_sqlite_uri, redact_uri, uri_scheme

if TYPE_CHECKING:
    from tracking_plugin.store.base import Store

__all__ = [
    "SERVER_ARTIFACT_ROOT",
    "STORE_SCHEMES",
    "acquire_store",
    "get_store",
    "get_tracking_uri_override",
    "release_store",
    "reset_caches",
    "resolve_settings",
    "set_block_loader",
    "set_tracking_uri",
    "settings_of_block",
]

StoreFactory = Callable[[str, MlopsSettings], "Store"]


def _sql_store(uri: str, settings: MlopsSettings) -> Store:
    from tracking_plugin.store.db import Database  # SQLAlchemy: loaded when first used
    from tracking_plugin.store.sql import SqlStore

    store = SqlStore(
        Database(
            uri,
            busy_timeout=settings.sqlite_busy_timeout,
            password=settings.database_password,
            retry_deadline=settings.retry_deadline,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
    )
    store.db.ensure_schema()
    return store


def _rest_store(uri: str, settings: MlopsSettings) -> Store:
    from tracking_plugin.store.rest import RestStore  # httpx: loaded when first used
    from tracking_plugin.store.rest_session import RestSession

    session = RestSession(
        uri,
        retry_deadline=settings.retry_deadline,
        username=settings.tracking_username,
        password=settings.tracking_password,
        token=settings.tracking_token,
    )
    return RestStore(uri, session=session)


# Tracking URI scheme (without the driver, ``postgresql+psycopg`` -> ``postgresql``) -> store.
STORE_SCHEMES: dict[str, StoreFactory] = {
    "sqlite": _sql_store,
    "postgresql": _sql_store,
    "postgres": _sql_store,
    "http": _rest_store,  # a prefect-mlops tracking server (tracking_plugin.store.rest)
    "https": _rest_store,
}


# ------------------------------------------------------------------ the URI set in code

_override: list[str | None] = [None]


def set_tracking_uri(uri: str | os.PathLike[str] | None) -> None:
    """Use ``uri`` for every default client of this process from now on (None: back to the
    configured backend). An unsupported URI is refused when first used."""
    if uri is not None and not isinstance(uri, (str, os.PathLike)):
        raise InvalidArgument(f"Invalid tracking URI {uri!r}: pass a string such as 'sqlite:///mlops.db'.")
    _override[0] = None if uri is None else os.fspath(uri)


def get_tracking_uri_override() -> str | None:
    """The URI given to :func:`set_tracking_uri`, or None."""
    return _override[0]


# ---------------------------------------------------------------------- blocks

BlockLoader = Callable[[str], MlopsSettings]
_block_loader: list[BlockLoader | None] = [None]
_BLOCKS: OrderedDict[str, MlopsSettings] = OrderedDict()
_BLOCKS_LOCK = threading.Lock()


def set_block_loader(loader: BlockLoader) -> None:
    """Install the function that turns a saved block's name into settings.

    ``tracking_plugin`` installs :func:`tracking_plugin.blocks.settings_of_block` (which
    imports Prefect) when it is imported; this module stays free of Prefect.
    """
    _block_loader[0] = loader


def settings_of_block(name: str) -> MlopsSettings:
    """The backend settings of the saved block ``name`` (loaded once per process; logging
    options still come from the environment of the moment)."""
    settings = _BLOCKS.get(name)
    if settings is None:
        loader = _block_loader[0]
        if loader is None:
            raise InvalidArgument(
                f"Cannot load the MlopsBackend block {name!r}: no block loader is installed. "
                "Import tracking_plugin (it installs Prefect's) before naming a block."
            )
        settings = loader(name)
        with _BLOCKS_LOCK:
            if len(_BLOCKS) >= 64:
                _BLOCKS.popitem(last=False)
            _BLOCKS[name] = settings
    logging_options = get_settings().model_dump(
        include={
            "async_logging",
            "async_batch_size",
            "async_flush_interval",
            "sqlite_busy_timeout",
            "retry_deadline",
        }
    )
    return settings.model_copy(update=logging_options)


# -------------------------------------------------------------------- resolving


def resolve_settings(
    tracking_uri: str | os.PathLike[str] | None = None,
    artifact_root: str | os.PathLike[str] | None = None,
    *,
    block: str | None = None,
    settings: MlopsSettings | None = None,
) -> MlopsSettings:
    """The settings a client built with these arguments uses (see the module's order).

    ``settings`` is a whole backend given explicitly; ``tracking_uri`` / ``artifact_root``
    replace its (or the resolved backend's) URI and root. An explicit URI is the backend:
    only the default follows ``set_tracking_uri()`` and ``PREFECT_MLOPS_BLOCK``.
    """
    if settings is None:
        if tracking_uri is not None:
            settings = get_settings()
        elif block:
            settings = settings_of_block(block)
        else:
            settings = get_settings()
            if settings.block:
                settings = settings_of_block(settings.block)
            tracking_uri = _override[0]
    updates: dict[str, object] = {}
    if tracking_uri is not None:
        updates["tracking_uri"] = os.fspath(tracking_uri)
        # A password belongs to the URI it came with (a block's), not to one given instead.
        updates["database_password"] = None
    if artifact_root is not None:
        updates["artifact_root"] = os.fspath(artifact_root)
    elif _serves_artifacts(updates.get("tracking_uri", settings.tracking_uri), settings.artifact_root):
        updates["artifact_root"] = SERVER_ARTIFACT_ROOT
    return settings.model_copy(update=updates) if updates else settings


# With a tracking server's URL and no artifact root of one's own, artifacts go through the
# server's proxy: a worker needs no storage credentials.
SERVER_ARTIFACT_ROOT = "mlflow-artifacts:/"
_DEFAULT_ARTIFACT_ROOT = MlopsSettings.model_fields["artifact_root"].default


def _serves_artifacts(tracking_uri: str, artifact_root: str) -> bool:
    return artifact_root == _DEFAULT_ARTIFACT_ROOT and uri_scheme(tracking_uri) in ("http", "https")


def store_factory(uri: str) -> StoreFactory:
    """The store implementation for ``uri``'s scheme; ``InvalidArgument`` naming the
    supported schemes when there is none."""
    factory = STORE_SCHEMES.get(uri_scheme(uri))
    if factory is None:
        supported = ", ".join(f"{s}://" for s in STORE_SCHEMES)
        raise InvalidArgument(
            f"Unsupported tracking URI {redact_uri(uri)!r}: supported schemes are {supported} "
            "(e.g. sqlite:///mlops.db or postgresql+psycopg://user@host/db)."
        )
    return factory


# ---------------------------------------------------------------------- stores

_STORE_LIMIT = 32
# (pid, absolute URI, password) -> [store, number of clients using it]
_STORES: OrderedDict[tuple[int, str, str | None], list] = OrderedDict()  # type: ignore[type-arg]
_STORES_LOCK = threading.Lock()


def _store_key(settings: MlopsSettings) -> tuple[int, str, str | None]:
    # The secrets are part of the key (two blocks on one server with different tokens get
    # two stores), hashed: the key never holds a secret in clear.
    secrets = [settings.database_password, settings.tracking_password, settings.tracking_token]
    digest = None
    if settings.tracking_username is not None or any(value is not None for value in secrets):
        material = "\0".join(
            [settings.tracking_username or "", *(v.get_secret_value() if v is not None else "" for v in secrets)]
        )
        digest = hashlib.sha256(material.encode()).hexdigest()
    return (os.getpid(), absolute_sqlite_uri(settings.tracking_uri), digest)


def acquire_store(settings: MlopsSettings) -> Store:
    """The process's store for ``settings``' database (built and migrated on first use),
    counted as used until :func:`release_store`."""
    key = _store_key(settings)
    with _STORES_LOCK:
        entry = _STORES.get(key)
        if entry is None:
            factory = store_factory(key[1])
            entry = _STORES[key] = [factory(key[1], settings), 0]
        entry[1] += 1
        _STORES.move_to_end(key)
        _evict_unused()
        return entry[0]  # type: ignore[no-any-return]


def get_store(settings: MlopsSettings) -> Store:
    """The process's store for ``settings``' database, for code that does not own it (it
    stays open for the process: the store of a default client)."""
    key = _store_key(settings)
    entry = _STORES.get(key)
    if entry is not None:
        return entry[0]  # type: ignore[no-any-return]
    store = acquire_store(settings)
    return store


def release_store(store: Store) -> None:
    """One client less uses ``store``; the last one out disposes its connections."""
    with _STORES_LOCK:
        for key, entry in list(_STORES.items()):
            if entry[0] is store and key[0] == os.getpid():
                entry[1] -= 1
                if entry[1] <= 0:
                    del _STORES[key]
                    _close(store)
                return


def _evict_unused() -> None:
    unused = [key for key, entry in _STORES.items() if entry[1] <= 0]
    while len(_STORES) > _STORE_LIMIT and unused:
        _close(_STORES.pop(unused.pop(0))[0])


def _close(store: Store) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()


def reset_caches(*, dispose: bool = True) -> None:
    """Forget the loaded blocks and (``dispose``) every cached store, closing its
    connections. For tests and long-lived processes that change backends; a client whose
    store was closed reconnects on use."""
    with _BLOCKS_LOCK:
        _BLOCKS.clear()
    if not dispose:
        return
    with _STORES_LOCK:
        stores = [entry[0] for entry in _STORES.values()]
        _STORES.clear()
    for store in stores:
        try:
            _close(store)
        except Exception:  # noqa: BLE001 - a store already gone needs no closing
            pass


def _after_fork_in_child() -> None:
    # The parent's engines are not ours to close; drop them, the child builds its own.
    global _STORES_LOCK, _BLOCKS_LOCK
    _STORES_LOCK = threading.Lock()
    _BLOCKS_LOCK = threading.Lock()
    _STORES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
