"""Settings of the tracking server's authentication (environment, prefix ``PREFECT_MLOPS_AUTH_``).

    PREFECT_MLOPS_AUTH=true                       # same as `prefect-mlops server --auth`
    PREFECT_MLOPS_AUTH_ADMIN_USERNAME=admin       # the first admin, created on first start
    PREFECT_MLOPS_AUTH_ADMIN_PASSWORD=...         # required with --auth until an admin exists
    PREFECT_MLOPS_AUTH_DEFAULT_PERMISSION=READ    # what users hold where nothing was granted
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving_tasks.tracking_server.auth.permissions import Permission

__all__ = ["AuthSettings"]


class AuthSettings(BaseSettings):
    """Whether the server asks for credentials, and how it treats them."""

    model_config = SettingsConfigDict(env_prefix="PREFECT_MLOPS_AUTH_", extra="ignore")

    enabled: bool = Field(
        default=False,
        validation_alias=AliasChoices("PREFECT_MLOPS_AUTH", "enabled"),
        description="Require credentials on every request except /health, /version and server-info.",
    )
    admin_username: str | None = Field(default=None, description="The first admin, created if missing at start.")
    admin_password: SecretStr | None = Field(default=None, description="Password of the first admin.")
    default_permission: Permission = Field(
        default=Permission.READ, description="Permission of a user on an experiment or model with no grant."
    )
    credential_cache_seconds: float = Field(
        default=10.0, ge=0, le=300,
        description="How long a verified credential, and a user's grant on an experiment or model, are "
        "trusted without a new check (also the longest a password change, token revocation or grant change "
        "made on another replica or directly in the database takes to apply here).",
    )
    max_failed_logins: int = Field(default=5, ge=1, description="Failed logins per user and address before 429.")
    lockout_seconds: int = Field(default=60, ge=1, description="Window of the failed-login count, and the lockout.")
