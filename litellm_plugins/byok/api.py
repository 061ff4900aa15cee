"""HTTP API under ``/plugins/byok``: a caller manages their own provider keys.

Only the owner (the caller's account, resolved with ``account_order``) adds, replaces, tests or
deletes a key; an admin may list every account's key *metadata* and audit trail, never a secret.
Request bodies are parsed by hand rather than through a pydantic body model: FastAPI's 422
validation errors echo the offending input, and the input here is a secret.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Query, Request

from litellm_plugins.byok import store
from litellm_plugins.byok.hook import Vault, vault
from litellm_plugins.byok.providers import ProviderInfo
from litellm_plugins.core.errors import bad_request, forbidden, not_found, plugin_error, service_unavailable
from litellm_plugins.core.identity import Caller
from litellm_plugins.core.routes import current_caller

# Printable ASCII without spaces: what every provider's key format uses, and what is safe in a header.
KEY_PATTERN = re.compile(r"^[\x21-\x7e]+$")
MAX_BODY_BYTES = 16_384
PROVIDER_REFUSED = "the provider refused the key"


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        bad_request(f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        bad_request("request body must be a JSON object")
    if not isinstance(body, dict):
        bad_request("request body must be a JSON object")
    return body


# Non-object JSON bodies are refused before auth by core.routes.current_caller (json_object_body).
router = APIRouter(prefix="/plugins/byok", tags=["litellm-plugins: byok"])


def _vault() -> Vault:
    v = vault()
    if v is None:
        service_unavailable("BYOK is not started in this worker")
    return v


def _owner(caller: Caller, v: Vault) -> str:
    account = caller.account(v.order)
    if account is None:
        forbidden("this key has no user, team or key id to own BYOK keys")
    return account


def _provider(v: Vault, provider: str) -> ProviderInfo:
    info = v.providers.get(provider)
    if info is None:
        bad_request(f"unknown provider '{provider[:64]}': configured providers are "
                    f"{', '.join(sorted(v.providers))}", param="provider")
    return info


def _secret(body: dict[str, Any], max_length: int) -> str:
    value = body.get("key", body.get("api_key"))
    if not isinstance(value, str):
        bad_request("field 'key' (the provider API key) is required and must be a string", param="key")
    if not value.strip():
        bad_request("the key is empty or only whitespace", param="key")
    value = value.strip()
    if len(value) > max_length:
        bad_request(f"the key is longer than {max_length} characters", param="key")
    if len(value) < 8:
        bad_request("the key is shorter than 8 characters", param="key")
    if not KEY_PATTERN.match(value):
        bad_request("the key contains whitespace or characters that are not printable ASCII", param="key")
    return value


def _policy(body: dict[str, Any], default: str) -> str:
    policy = body.get("policy", default)
    if policy not in store.POLICIES:
        bad_request("policy must be 'prefer' (fall back to the platform key) or 'only' (never use the "
                    "platform key for this provider)", param="policy")
    return policy


def _auth_headers(provider: str, secret: str) -> dict[str, str]:
    if provider == "anthropic":
        return {"x-api-key": secret, "anthropic-version": "2023-06-01"}
    return {"Authorization": f"Bearer {secret}"}


async def check_with_provider(info: ProviderInfo, secret: str, timeout_s: float) -> tuple[bool, int | None]:
    """One cheap authenticated call (``GET {api_base}/models``); (accepted, status).

    Raises a 502 ``ProxyException`` when the provider cannot be reached or answers with neither
    success nor an auth refusal; the message never contains the key.
    """
    if not info.api_base:
        raise plugin_error(502, f"cannot validate the key: no api_base known for provider '{info.name}'",
                           "provider_unreachable")
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            response = await client.get(info.api_base + "/models", headers=_auth_headers(info.name, secret))
    except httpx.HTTPError as exc:
        raise plugin_error(502, f"cannot validate the key: provider '{info.name}' is unreachable "
                                f"({type(exc).__name__})", "provider_unreachable") from None
    if response.status_code in (401, 403):
        return False, response.status_code
    if response.is_success:
        return True, response.status_code
    raise plugin_error(502, f"cannot validate the key: provider '{info.name}' answered "
                            f"{response.status_code}", "provider_unreachable")


@router.get("/providers")
async def providers(caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    v = _vault()
    return {"providers": sorted(v.providers)}


@router.get("/keys")
async def list_keys(account: str | None = Query(default=None, max_length=512),
                    caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    """Own keys, masked; an admin sees every account's (or ``?account=``'s) metadata."""
    v = _vault()
    if caller.is_admin:
        rows = await store.list_keys(v.pool, account)
    else:
        own = _owner(caller, v)
        if account is not None and account != own:
            forbidden("you can only list your own keys")
        rows = await store.list_keys(v.pool, own)
    return {"data": [row.public() for row in rows]}


async def _put(request: Request, caller: Caller, provider: str | None) -> dict[str, Any]:
    v = _vault()
    settings = v.rt.settings.byok
    body = await _body(request)
    if provider is None:
        provider = body.get("provider")
        if not isinstance(provider, str) or not provider:
            bad_request("field 'provider' is required", param="provider")
    info = _provider(v, provider)
    secret = _secret(body, settings.max_key_length)
    policy = _policy(body, settings.default_policy)
    account = _owner(caller, v)
    validate = body.get("validate", settings.validate_on_add)
    if not isinstance(validate, bool):
        bad_request("validate must be true or false", param="validate")
    if validate:
        accepted, status = await check_with_provider(info, secret, settings.validation_timeout_s)
        if not accepted:
            bad_request(f"{PROVIDER_REFUSED} (provider '{provider}' answered {status})", param="key")
    info_row, replaced = await store.put_key(v.pool, v.cipher, account, provider, secret, policy, account)
    await v.mark_account(account, True)
    await v.invalidate(account)
    return {**info_row.public(), "replaced": replaced, "validated": validate}


@router.post("/keys")
async def add_key(request: Request, caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    """Add or replace: ``{"provider": "openai", "key": "sk-…", "policy": "prefer", "validate": true}``."""
    return await _put(request, caller, None)


@router.put("/keys/{provider}")
async def put_key(provider: str, request: Request, caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    return await _put(request, caller, provider)


@router.patch("/keys/{provider}")
async def patch_key(provider: str, request: Request, caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    """Change the policy only: ``{"policy": "only"}``."""
    v = _vault()
    _provider(v, provider)
    body = await _body(request)
    if "policy" not in body:
        bad_request("field 'policy' is required", param="policy")
    policy = _policy(body, v.rt.settings.byok.default_policy)
    account = _owner(caller, v)
    row = await store.set_policy(v.pool, account, provider, policy, account)
    if row is None:
        not_found(f"you have no key for provider '{provider}'", param="provider")
    await v.invalidate(account)
    return row.public()


@router.delete("/keys/{provider}")
async def delete_key(provider: str, caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    v = _vault()
    _provider(v, provider)
    account = _owner(caller, v)
    deleted = await store.delete_key(v.pool, account, provider, account)
    if deleted and not await store.list_keys(v.pool, account):
        await v.mark_account(account, False)
    await v.invalidate(account)
    if not deleted:
        not_found(f"you have no key for provider '{provider}'", param="provider")
    return {"provider": provider, "deleted": True}


@router.post("/check")
async def check_candidate(request: Request, caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    """Test a key *before* saving it (the console's wizard): ``{"provider": "openai", "key": "sk-…"}``.
    Same provider call as ``validate`` on add; nothing is stored or audited, the key is never echoed."""
    v = _vault()
    body = await _body(request)
    provider = body.get("provider")
    if not isinstance(provider, str) or not provider:
        bad_request("field 'provider' is required", param="provider")
    info = _provider(v, provider)
    secret = _secret(body, v.rt.settings.byok.max_key_length)
    _owner(caller, v)
    accepted, status = await check_with_provider(info, secret, v.rt.settings.byok.validation_timeout_s)
    return {"provider": provider, "ok": accepted, "status": status,
            "message": "the provider accepted the key" if accepted else PROVIDER_REFUSED}


@router.post("/keys/{provider}/test")
async def test_key(provider: str, caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    """Check the stored key against the provider now; records the result (and an audit row)."""
    v = _vault()
    info = _provider(v, provider)
    account = _owner(caller, v)
    try:
        secret = await store.load_secret(v.pool, v.cipher, account, provider)
    except Exception as exc:  # noqa: BLE001 - VaultKeyError: encryption key no longer configured
        raise plugin_error(409, f"your stored key for '{provider}' cannot be decrypted with the configured "
                                "encryption keys; add it again", "byok_key_undecryptable") from exc
    if secret is None:
        not_found(f"you have no key for provider '{provider}'", param="provider")
    try:
        accepted, status = await check_with_provider(info, secret, v.rt.settings.byok.validation_timeout_s)
    except Exception:
        await store.record_test(v.pool, account, provider, False, account, None)
        raise
    await store.record_test(v.pool, account, provider, accepted, account, status)
    return {"provider": provider, "ok": accepted, "status": status,
            "message": "the provider accepted the key" if accepted else PROVIDER_REFUSED}


@router.get("/audit")
async def audit(account: str | None = Query(default=None, max_length=512),
                limit: int = Query(default=100, ge=1, le=1000),
                caller: Caller = Depends(current_caller)) -> dict[str, Any]:
    v = _vault()
    if not caller.is_admin:
        own = _owner(caller, v)
        if account is not None and account != own:
            forbidden("you can only read your own audit trail")
        account = own
    return {"data": await store.audit_rows(v.pool, account, limit)}
