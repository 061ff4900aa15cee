"""Helpers other capabilities may call: which providers a caller holds a usable key for.

Routing asks this before it picks a model group when some deployments are BYOK-only
(``core.catalog``): a group whose every deployment lacks its platform key serves only callers who
hold a key for one of its providers. The answer comes from the same per-worker key cache the
per-attempt injection uses (a dictionary lookup once warm; one Postgres read per account per
``cache_ttl_s`` otherwise, which this request's own BYOK pre-call hook would have paid anyway).
Empty when BYOK is off. Never returns a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litellm_plugins.byok import hook
from litellm_plugins.core.identity import account_id

NONE: frozenset[str] = frozenset()


def _usable(keys: Mapping[str, Any]) -> frozenset[str]:
    # An undecryptable key cannot be injected: it does not make a BYOK-only deployment usable.
    return frozenset(p for p, k in keys.items() if getattr(k, "secret", None))


async def providers_for_auth(auth: Any) -> frozenset[str]:
    """Providers the caller behind ``auth`` (LiteLLM's ``UserAPIKeyAuth``) has a usable key for."""
    return await providers_for(auth.user_id, auth.team_id, auth.token or auth.api_key)


async def providers_for(user_id: str | None, team_id: str | None, key_hash: str | None) -> frozenset[str]:
    """The same, from the caller's identity (``core.identity.Caller`` on our routes)."""
    v = hook.vault()
    if v is None:
        return NONE
    account = account_id(user_id, team_id, key_hash, v.order)
    if account is None:
        return NONE
    return _usable(await v.keys_for(account))


async def providers_for_metadata(metadata: Mapping[str, Any]) -> frozenset[str]:
    """The same, from a request's LiteLLM metadata (router filter, per-attempt hooks)."""
    v = hook.vault()
    if v is None:
        return NONE
    account = hook._account_from_metadata(metadata, v.order)
    if account is None:
        return NONE
    keys = v.cache.get(account)
    if keys is None:
        keys = await v.keys_for(account)
    return _usable(keys)
