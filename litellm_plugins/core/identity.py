"""Who is calling: the account a request belongs to, from LiteLLM's own auth object.

One account per caller — ``user_id``, else team, else key hash — in an order the operator may
change. Hooks (from ``UserAPIKeyAuth`` or the logging payload) and routes resolve it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # litellm is imported lazily: the CLI uses this module without it
    from litellm.proxy._types import UserAPIKeyAuth

AccountSource = Literal["user", "team", "key"]
DEFAULT_ORDER: tuple[AccountSource, ...] = ("user", "team", "key")


def account_id(user_id: str | None, team_id: str | None, key_hash: str | None,
               order: Sequence[AccountSource] = DEFAULT_ORDER) -> str | None:
    values = {"user": user_id, "team": team_id, "key": key_hash}
    for source in order:
        value = values[source]
        if value:
            return f"{source}:{value}"
    return None


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one of our HTTP routes or hooks."""

    user_id: str | None
    team_id: str | None
    key_hash: str | None
    is_admin: bool
    metadata: dict[str, Any]
    team_metadata: dict[str, Any]
    models: tuple[str, ...]

    @classmethod
    def from_auth(cls, auth: UserAPIKeyAuth) -> Caller:
        from litellm.proxy._types import LitellmUserRoles
        role = auth.user_role.value if isinstance(auth.user_role, LitellmUserRoles) else auth.user_role
        return cls(
            user_id=auth.user_id,
            team_id=auth.team_id,
            key_hash=auth.token or auth.api_key,
            is_admin=role == LitellmUserRoles.PROXY_ADMIN.value,
            metadata=dict(auth.metadata or {}),
            team_metadata=dict(auth.team_metadata or {}),
            models=tuple(auth.models or ()),
        )

    def account(self, order: Sequence[AccountSource] = DEFAULT_ORDER) -> str | None:
        return account_id(self.user_id, self.team_id, self.key_hash, order)
