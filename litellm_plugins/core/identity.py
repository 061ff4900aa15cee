"""Who is calling: the account a request belongs to, from LiteLLM's own auth object.

One account per caller — ``user_id``, else team, else key hash — in an order the operator may
change. Hooks (from ``UserAPIKeyAuth`` or the logging payload) and routes resolve it the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # litellm is imported lazily: the CLI uses this module without it
    from litellm.proxy._types import UserAPIKeyAuth

log = logging.getLogger("litellm_plugins.identity")

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


BILLING_CUSTOMER_KEY = "billing_customer_id"
BILLING_CUSTOMER_MAX_LENGTH = 255
_warned_billing_customer: list[bool] = [False]


def billing_customer(key_metadata: dict[str, Any], team_metadata: dict[str, Any]) -> str | None:
    """The customer id a billing system knows this caller by (docs/billing.md, Mappings): the key's
    metadata ``billing_customer_id``, else the team's; None means "the account id".

    A value that is not a non-empty string of at most 255 characters is ignored (warned once per
    process, without the value: metadata is operator input, never worth a crash or a log flood)."""
    for metadata in (key_metadata, team_metadata):
        value = metadata.get(BILLING_CUSTOMER_KEY)
        if value is None or value == "":
            continue
        if isinstance(value, str) and len(value) <= BILLING_CUSTOMER_MAX_LENGTH:
            return value
        if not _warned_billing_customer[0]:
            _warned_billing_customer[0] = True
            log.warning("metadata %s ignored: not a string of at most %d characters (%s); "
                        "billing uses the account id", BILLING_CUSTOMER_KEY, BILLING_CUSTOMER_MAX_LENGTH,
                        type(value).__name__)
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

    def billing_customer(self) -> str | None:
        """The key's, else the team's metadata ``billing_customer_id``: two dict reads (request path)."""
        return billing_customer(self.metadata, self.team_metadata)
