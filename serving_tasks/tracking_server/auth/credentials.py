"""From an ``Authorization`` header to a user: parsing, a short cache, failed-login limits.

The mlflow client sends ``Basic base64(user:password)`` (``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``) or ``Bearer <token>`` (``MLFLOW_TRACKING_TOKEN``). argon2
takes tens of milliseconds per check on purpose, so a verified header is trusted for
``credential_cache_seconds``: the cache is keyed by the sha256 of the header (the header
itself is never kept), and cleared for a user when this process changes their password,
admin role or tokens. Other replicas drop it when the entry expires, so a change applies
everywhere within that many seconds. An expired Basic entry is renewed without argon2
when the user's stored password hash is still the one it was verified against (one
indexed read; for up to an hour), so a client sending Basic pays the slow hash once, not
once per cache period (on a loaded machine that was a 0.5-2 s request every 10 s).

Failed logins are counted per (username, client address) in the backend database
(``auth_failed_logins``, one upserted row per hashed pair), so the limit holds across
``--workers N`` and replicas: after ``max_failed_logins`` within ``lockout_seconds`` of the
first failure the next attempts get 429 with ``Retry-After`` without a password check,
and a success clears the count. Only uncached logins touch the table (a read, plus a
write on failure or after a failure), never the cached per-request path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from serving_tasks.tracking_server.auth.errors import TooManyAttempts, Unauthenticated
from serving_tasks.tracking_server.auth.store import TOKEN_PREFIX, AuthStore, User

__all__ = ["Authenticator", "BasicCredentials", "BearerCredentials", "parse_authorization"]

MAX_HEADER_CHARS = 4096
_CACHE_SIZE = 10_000
# How long a Basic header verified once may be renewed by comparing stored password hashes
# instead of hashing the password again (see Authenticator.authenticate).
_RENEW_SECONDS = 3600.0


@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"BasicCredentials(username={self.username!r}, password='***')"


@dataclass(frozen=True)
class BearerCredentials:
    token: str

    def __repr__(self) -> str:
        return "BearerCredentials(token='***')"


def parse_authorization(header: str | None) -> BasicCredentials | BearerCredentials:
    """The credentials of an ``Authorization`` header; :class:`Unauthenticated` naming what is
    wrong with it (never its content) when missing or malformed."""
    if not header:
        raise Unauthenticated(
            "Authentication required: send HTTP Basic credentials (MLFLOW_TRACKING_USERNAME / "
            "MLFLOW_TRACKING_PASSWORD) or an API token (MLFLOW_TRACKING_TOKEN)."
        )
    if len(header) > MAX_HEADER_CHARS:
        raise Unauthenticated(f"Malformed Authorization header: longer than {MAX_HEADER_CHARS} characters.")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        if not value or " " in value:
            raise Unauthenticated("Malformed Authorization header: 'Bearer' must be followed by one token.")
        return BearerCredentials(value)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError):
            raise Unauthenticated(
                "Malformed Authorization header: Basic credentials must be base64 of UTF-8 'username:password'."
            ) from None
        username, colon, password = decoded.partition(":")
        if not colon:
            raise Unauthenticated("Malformed Authorization header: Basic credentials have no ':' between "
                                  "username and password.")
        if not username or not password:
            raise Unauthenticated("Malformed Authorization header: Basic credentials with an empty username or password.")
        return BasicCredentials(username, password)
    raise Unauthenticated(
        f"Unsupported Authorization scheme {scheme[:20]!r}: use 'Basic' (username and password) or 'Bearer' (API token)."
    )


def _cache_key(header: str) -> str:
    return hashlib.sha256(header.encode("utf-8", "surrogatepass")).hexdigest()


class _FailedLogins:
    """Failed logins per (username, client address), counted in the database so every
    worker (``--workers N``) and replica shares one count; keys are hashed."""

    def __init__(self, store: AuthStore, limit: int, window: float) -> None:
        self.store = store
        self.limit = limit
        self.window = window

    @staticmethod
    def _key(key: tuple[str, str]) -> str:
        return hashlib.sha256("\x00".join(key).encode("utf-8", "surrogatepass")).hexdigest()

    def check(self, key: tuple[str, str]) -> bool:
        """Raise :class:`TooManyAttempts` when locked out; else whether failures are on record."""
        retry = self.store.login_retry_after(self._key(key), self.limit, self.window)
        if retry:
            raise TooManyAttempts(f"Too many failed logins for this user from this address; retry in {retry} s.", retry)
        return retry is not None

    def failed(self, key: tuple[str, str]) -> None:
        self.store.record_failed_login(self._key(key), self.window)

    def succeeded(self, key: tuple[str, str], had_failures: bool) -> None:
        if had_failures:  # a success clears the count (no write when there is none)
            self.store.clear_failed_logins(self._key(key))


class Authenticator:
    """Turns a request's ``Authorization`` header into a :class:`User`."""

    def __init__(self, store: AuthStore, *, cache_seconds: float, max_failed_logins: int, lockout_seconds: float) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self._cache: OrderedDict[str, tuple[float, User]] = OrderedDict()
        # sha256(header) -> (until, the password hash it was verified against)
        self._verified: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._failures = _FailedLogins(store, max_failed_logins, lockout_seconds)

    def cached(self, header: str | None) -> User | None:
        """The user of a header verified within the cache time (no I/O), else None."""
        if not header or len(header) > MAX_HEADER_CHARS:
            return None
        return self._cached(_cache_key(header))

    def authenticate(self, header: str | None, client: str) -> User:
        credentials = parse_authorization(header)
        assert header is not None
        key = _cache_key(header)
        cached = self._cached(key)
        if cached is not None:
            return cached
        trust_until = time.monotonic() + self.cache_seconds
        if isinstance(credentials, BasicCredentials):
            renewed = self._renewed(key, credentials.username)
            if renewed is not None:
                self._remember(key, renewed, trust_until)
                return renewed
            limit_key = (credentials.username, client)
            had_failures = self._failures.check(limit_key)
            found = self.store.verify_password_hash(credentials.username, credentials.password)
            if found is None:
                self._failures.failed(limit_key)
                raise Unauthenticated("Invalid username or password.")
            self._failures.succeeded(limit_key, had_failures)
            user = found[0]
            with self._lock:
                self._verified[key] = (time.monotonic() + _RENEW_SECONDS, found[1])
                self._verified.move_to_end(key)
                while len(self._verified) > _CACHE_SIZE:
                    self._verified.popitem(last=False)
        else:
            limit_key = ("<token>", client)
            had_failures = self._failures.check(limit_key)
            found = self.store.verify_token(credentials.token) if credentials.token.startswith(TOKEN_PREFIX) else None
            if found is None:
                self._failures.failed(limit_key)
                raise Unauthenticated("Invalid API token: unknown, revoked or expired. Create one with "
                                      "`prefect-mlops tokens create`.")
            self._failures.succeeded(limit_key, had_failures)
            user, expiry_ms = found
            if expiry_ms is not None:  # never trusted past its expiry
                trust_until = min(trust_until, time.monotonic() + (expiry_ms / 1000 - time.time()))
        self._remember(key, user, trust_until)
        return user

    def _renewed(self, key: str, username: str) -> User | None:
        """A Basic header verified before (within _RENEW_SECONDS) whose user still has the
        password hash it was verified against: trusted again without argon2 (one indexed
        read), so a client sending Basic does not pay a slow hash every cache period."""
        with self._lock:
            entry = self._verified.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return None
        current = self.store.password_hash(username)
        if current is None or not hmac.compare_digest(current[1], entry[1]):
            with self._lock:
                self._verified.pop(key, None)
            return None
        return current[0]

    def _cached(self, key: str) -> User | None:
        if self.cache_seconds <= 0:
            return None
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            expires, user = entry
            if expires <= time.monotonic():
                del self._cache[key]
                return None
            return user

    def _remember(self, key: str, user: User, until: float) -> None:
        if self.cache_seconds <= 0:
            return
        with self._lock:
            self._cache[key] = (until, user)
            self._cache.move_to_end(key)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)

    def forget_user(self, user_id: int) -> None:
        """Drop this process's cached verifications of a user (password, role or tokens changed)."""
        with self._lock:
            for key in [k for k, (_, u) in self._cache.items() if u.id == user_id]:
                del self._cache[key]
