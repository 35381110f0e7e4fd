"""Permission levels, as MLflow's basic-auth app names them.

``NO_PERMISSIONS < READ < EDIT < MANAGE``: READ sees an experiment or registered model and
everything in it; EDIT also writes (log to runs, create versions, set tags); MANAGE also
deletes, grants permissions to others and moves aliases and stages (promotion). Admins
hold every permission on everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from tracking_plugin.errors import InvalidArgument

__all__ = ["Permission", "Readable"]


class Permission(str, Enum):
    NO_PERMISSIONS = "NO_PERMISSIONS"
    READ = "READ"
    EDIT = "EDIT"
    MANAGE = "MANAGE"

    @property
    def level(self) -> int:
        return _LEVELS[self]

    def allows(self, required: Permission) -> bool:
        """Whether holding ``self`` is enough for an action that needs ``required``."""
        return self.level >= required.level

    @classmethod
    def parse(cls, value: object, field: str = "permission") -> Permission:
        """A permission named by a client; an unknown name is a 400 naming the choices."""
        try:
            return cls(str(value).upper()) if isinstance(value, str) else cls(value)
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise InvalidArgument(f"Invalid value {value!r} for parameter '{field}': use one of {choices}.") from None


_LEVELS = {Permission.NO_PERMISSIONS: 0, Permission.READ: 1, Permission.EDIT: 2, Permission.MANAGE: 3}


@dataclass(frozen=True)
class Readable:
    """Which experiments (by id) or registered models (by name) one user may read: their
    explicit grants, and the default permission for everything else. Search answers and
    the UI's list pages keep only what :meth:`allows`."""

    grants: dict[str, Permission] = field(default_factory=dict)
    default_reads: bool = True

    def allows(self, key: object) -> bool:
        held = self.grants.get(str(key))
        return held.allows(Permission.READ) if held is not None else self.default_reads

    @property
    def allowed(self) -> set[str]:
        """The keys granted READ or more (all a user reads when the default does not)."""
        return {k for k, p in self.grants.items() if p.allows(Permission.READ)}

    @property
    def denied(self) -> set[str]:
        """The keys explicitly denied (all a user cannot read when the default reads)."""
        return {k for k, p in self.grants.items() if not p.allows(Permission.READ)}


EVERYTHING = Readable()  # an admin's (and everyone's without --auth)
