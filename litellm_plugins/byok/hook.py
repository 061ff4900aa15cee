"""LiteLLM hooks of the byok capability: inject a caller's own provider key per deployment attempt.

Why per attempt: setting ``data["api_key"]`` in ``async_pre_call_hook`` makes LiteLLM 1.102.4's router
add a *shared* deployment carrying that key, which other callers' requests then use (upstream #17115;
1.108.7 no longer registers it, #41289, but the lowest supported release does: docs/litellm.md fact 12). ``async_pre_call_deployment_hook`` runs on a copy of one attempt's
kwargs just before the provider call, so a key set there reaches exactly one HTTP call.

Flow of one request:
  1. ``async_pre_call_hook`` (after routing chose ``data["model"]``): does the caller hold a key for
     a provider of that model group? Record ``byok_provider`` / ``byok_policy`` in the request
     context (never the secret). Policy ``prefer`` also prepends a same-group fallback entry marked
     for us, so when the user's key fails, LiteLLM retries the group once with the platform key.
  2. ``async_pre_call_deployment_hook`` (every attempt): if the attempt's deployment provider has a
     key of the caller's, set ``api_key`` (and ``client=None``, so the router's cached client with
     the platform key is not reused); ``byok_used`` says what this attempt does. On the marked
     fallback attempt of a ``prefer`` key the platform key is used (``byok_used`` False: charged).
  3. Failure of a BYOK attempt: the deployment is excluded from LiteLLM's cooldown for that failure
     (a user's bad key says nothing about the shared deployment) on both of LiteLLM's cooldown
     paths -- the attempt's failure callback and the fallback loop (see ``_UserKeyFailures``) --,
     the secret is scrubbed from the logging payload, and under ``only`` a 401/403 becomes a clear
     error naming the policy.
  4. Success: the secret is scrubbed from LiteLLM's logging payload before logging integrations see it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import UserAPIKeyAuth

from litellm_plugins.byok import store
from litellm_plugins.metrics import record as metrics
from litellm_plugins.byok.crypto import Cipher, mask
from litellm_plugins.byok.providers import configured_providers, group_providers, provider_of
from litellm_plugins.byok.store import KeyCache, StoredKey
from litellm_plugins.core import catalog
from litellm_plugins.core.context import CONTEXT_KEY, RequestContext, for_request, litellm_metadata
from litellm_plugins.core.errors import service_unavailable
from litellm_plugins.core.identity import account_id

log = logging.getLogger("litellm_plugins.byok")

# Extra key on our same-group fallback entry; popped in the per-attempt hook before the call.
FALLBACK_MARKER = "litellm_plugins_byok_fallback"
FALLBACK_CALL_TYPES = frozenset({"completion", "acompletion", "text_completion", "atext_completion",
                                 "embeddings", "aembedding", "aresponses", "responses", "anthropic_messages"})
INVALIDATION_CHANNEL = "byok:invalidate"
ACCOUNTS_SET = "byok:accounts"  # accounts holding at least one key: lets a Postgres outage spare the rest
ALL_ACCOUNTS = "*"
USE_FLUSH_INTERVAL_S = 2.0
USE_NOTE_INTERVAL_S = 60.0
# Key store down: the answer given without it (last known keys, or "no keys" from Redis) is cached
# this long, so an outage costs one Postgres attempt per account and interval, not one per request
# (each attempt is a connection attempt on the request path: refused in microseconds, but a
# blackholed host would hold every request for the pool's connect timeout) nor a log line per request.
OUTAGE_RETRY_S = 5.0
SCRUBBED = "[byok key scrubbed]"


class Vault:
    """Per-worker BYOK state: cipher, decrypted-key cache, provider map, invalidation, use notes."""

    def __init__(self, rt: Any) -> None:
        settings = rt.settings.byok
        self.rt = rt
        self.pool = rt.pool
        self.redis = rt.redis
        self.order = rt.settings.account_order  # one rule for every capability (core setting)
        self.cipher = Cipher(settings.encryption_keys)
        self.cache = KeyCache(settings.cache_ttl_s)
        self.stale: dict[str, dict[str, StoredKey]] = {}
        self.providers = configured_providers(rt.config)
        self.group_providers = group_providers(rt.config)
        self.channel = (rt.settings.redis_key_prefix + INVALIDATION_CHANNEL).encode()
        self.accounts_key = (rt.settings.redis_key_prefix + ACCOUNTS_SET).encode()
        self._uses: dict[tuple[str, str], datetime] = {}
        self._noted: dict[tuple[str, str], float] = {}

    # ---- keys ------------------------------------------------------------------------------
    async def keys_for(self, account: str) -> dict[str, StoredKey]:
        keys = self.cache.get(account)
        if keys is not None:
            return keys
        async with self.cache.lock(account):
            keys = self.cache.get(account)
            if keys is not None:
                return keys
            token = self.cache.token(account)
            try:
                keys = await store.load_account(self.pool, self.cipher, account)
            except Exception as exc:  # noqa: BLE001
                stale = self.stale.get(account)
                if stale is not None:
                    log.warning("byok: key store unavailable (%s); using last known keys", type(exc).__name__)
                    self.cache.put(account, stale, token, OUTAGE_RETRY_S)
                    return stale
                if await self._known_keyless(account):
                    # Most callers hold no key: Redis says so, serve them without Postgres.
                    self.cache.put(account, {}, token, OUTAGE_RETRY_S)
                    return {}
                log.error("byok: key store unavailable: %s", type(exc).__name__)
                # Guessing "no key" could send an `only` caller's request out on the platform key.
                service_unavailable("BYOK key store is unavailable; retry shortly", retry_after_s=2)
            if self.cache.put(account, keys, token):
                if len(self.stale) > 50_000:
                    self.stale.clear()
                self.stale[account] = keys
            return keys

    async def _known_keyless(self, account: str) -> bool:
        try:
            return not await self.redis.sismember(self.accounts_key, account.encode())
        except Exception:  # noqa: BLE001 - Redis down too: we know nothing
            return False

    async def mark_account(self, account: str, has_keys: bool) -> None:
        try:
            if has_keys:
                await self.redis.sadd(self.accounts_key, account.encode())
            else:
                await self.redis.srem(self.accounts_key, account.encode())
        except Exception as exc:  # noqa: BLE001 - only the Postgres-outage shortcut depends on it
            log.error("byok: could not update the key-holder set in Redis: %s", type(exc).__name__)

    async def sync_accounts(self) -> None:
        """Rebuild the key-holder set from Postgres (startup; Redis may have been flushed)."""
        rows = await self.pool.fetch("SELECT DISTINCT account FROM byok_keys")
        if rows:
            await self.redis.sadd(self.accounts_key, *[r["account"].encode() for r in rows])

    def invalidate_local(self, account: str) -> None:
        if account == ALL_ACCOUNTS:
            self.cache.clear()
            self.stale.clear()
        else:
            self.cache.invalidate(account)
            self.stale.pop(account, None)

    async def invalidate(self, account: str) -> None:
        """Drop ``account`` from every worker's cache (this one at once, others through Redis)."""
        self.invalidate_local(account)
        try:
            await self.redis.publish(self.channel, account.encode())
        except Exception as exc:  # noqa: BLE001 - the cache TTL still bounds staleness
            log.error("byok: could not publish cache invalidation: %s", type(exc).__name__)

    async def listen(self) -> None:
        """Supervised job: apply invalidations published by any worker of any instance."""
        from litellm_plugins.core.redis import create_client
        client = create_client(self.rt.settings.redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.channel)
            # Messages published while we were not subscribed are lost: start from a clean cache.
            self.invalidate_local(ALL_ACCOUNTS)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message and message.get("type") == "message":
                    self.invalidate_local(message["data"].decode(errors="replace"))
        finally:
            try:
                await pubsub.aclose()
                await client.aclose()
            except Exception:  # noqa: BLE001
                pass

    # ---- last use / first use per day --------------------------------------------------------
    def note_use(self, account: str, provider: str) -> None:
        """O(1) on the request path; the flush job writes ``last_used_at`` and the daily audit row."""
        key = (account, provider)
        now = time.monotonic()
        if now - self._noted.get(key, -1e9) < USE_NOTE_INTERVAL_S:
            return
        self._noted[key] = now
        self._uses[key] = datetime.now(timezone.utc)

    async def flush_uses(self) -> None:
        if not self._uses:
            return
        uses, self._uses = self._uses, {}
        try:
            await store.mark_used(self.pool, [(a, p, at) for (a, p), at in uses.items()])
        except Exception:
            for key, at in uses.items():  # keep them for the next flush
                self._uses.setdefault(key, at)
            raise

    async def flush_loop(self) -> None:
        while True:
            await asyncio.sleep(USE_FLUSH_INTERVAL_S)
            await self.flush_uses()


_vault: Vault | None = None


class ByokError(HTTPException):
    """An OpenAI-shaped error LiteLLM accepts from hooks that may only raise/return ``HTTPException``.

    LiteLLM turns an ``HTTPException`` into its ``ProxyException`` and takes ``error.type`` from a
    ``type`` attribute when there is one (``proxy/common_utils/openai_error_payload.py``).
    """

    def __init__(self, status: int, message: str, type_: str) -> None:
        super().__init__(status_code=status, detail={"error": {
            "message": message, "type": type_, "param": None, "code": str(status)}})
        self.type = type_
        self.param = None


def vault() -> Vault | None:
    return _vault


def _account_from_metadata(metadata: Mapping[str, Any], order: Any) -> str | None:
    key_hash = metadata.get("user_api_key_hash") or metadata.get("user_api_key")
    return account_id(metadata.get("user_api_key_user_id"), metadata.get("user_api_key_team_id"),
                      key_hash if isinstance(key_hash, str) else None, order)


def _scrub_logging(logging_obj: Any, secret: str | None) -> None:
    """Remove the user's key from what LiteLLM hands to logging integrations."""
    details = getattr(logging_obj, "model_call_details", None)
    if isinstance(details, dict):
        _scrub(details, secret)


def _scrub(details: dict[str, Any], secret: str | None) -> None:
    """Replace ``api_key`` (top level and ``litellm_params``) with a marker; ``secret=None``: any value."""
    def replacement(value: str) -> str:
        return f"{SCRUBBED} {mask(value)}"

    value = details.get("api_key")
    if isinstance(value, str) and value and not value.startswith(SCRUBBED) and (secret is None or value == secret):
        details["api_key"] = replacement(value)
    params = details.get("litellm_params")
    if isinstance(params, dict):
        value = params.get("api_key")
        if isinstance(value, str) and value and not value.startswith(SCRUBBED) and (secret is None or value == secret):
            params["api_key"] = replacement(value)
    additional = details.get("additional_args")
    if isinstance(additional, dict) and secret:
        headers = additional.get("headers")
        if isinstance(headers, dict):
            for name, header in list(headers.items()):
                if isinstance(header, str) and secret in header:
                    headers[name] = header.replace(secret, mask(secret))


def _guard_pre_call(logging_obj: Any, secret: str) -> None:
    """Keep the user's key out of LiteLLM's *pre*-call logging (``log_pre_api_call`` integrations).

    The provider handler calls ``logging_obj.pre_call(input, api_key, model, additional_args)``
    just before the HTTP request, with the key and the request headers; ``pre_call`` only records
    and dispatches them to logging callbacks. This wraps that one request's logging object (never
    the class) so those arguments, and ``litellm_params["api_key"]`` while callbacks run, carry a
    masked value. The HTTP request itself already has its headers.
    """
    if logging_obj is None:
        return
    guard = getattr(logging_obj, "_litellm_plugins_byok_secrets", None)
    if isinstance(guard, set):
        guard.add(secret)
        return
    secrets: set[str] = {secret}
    original = logging_obj.pre_call

    def guarded(input: Any, api_key: Any, model: Any = None, additional_args: Any = None) -> Any:  # noqa: A002
        args = dict(additional_args or {})
        headers = args.get("headers")
        if isinstance(headers, dict):
            args["headers"] = {k: _mask_in(v, secrets) for k, v in headers.items()}
        details = getattr(logging_obj, "model_call_details", None)
        params = details.get("litellm_params") if isinstance(details, dict) else None
        saved = params.get("api_key") if isinstance(params, dict) else None
        if isinstance(saved, str) and saved in secrets:
            params["api_key"] = f"{SCRUBBED} {mask(saved)}"
        try:
            return original(input, _mask_in(api_key, secrets), model, args)
        finally:
            if isinstance(saved, str) and saved in secrets:
                params["api_key"] = saved
            if isinstance(details, dict):
                details["api_key"] = _mask_in(details.get("api_key"), secrets)

    try:
        logging_obj.pre_call = guarded
        logging_obj._litellm_plugins_byok_secrets = secrets
    except (AttributeError, TypeError):  # a logging object we do not know: post-call scrubbing still applies
        pass


def _mask_in(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, f"{SCRUBBED} {mask(secret)}")
    return value


def _no_cooldown(logging_obj: Any) -> None:
    """Make LiteLLM's failure callback skip the cooldown for this one failed attempt.

    ``Router.deployment_callback_on_failure`` reads ``cooldown_time`` from the attempt's
    ``litellm_params.model_info`` first; 0 makes ``_should_run_cooldown_logic`` return False
    (litellm/router_utils/cooldown_handlers.py). A *copy* of model_info is replaced: the
    deployment's own dict is shared by every request.
    """
    details = getattr(logging_obj, "model_call_details", None)
    params = details.get("litellm_params") if isinstance(details, dict) else None
    if isinstance(params, dict):
        info = params.get("model_info")
        params["model_info"] = {**(info if isinstance(info, dict) else {}), "cooldown_time": 0}


# Deployment ids that failed with the caller's own key during the current request. Set (to a fresh,
# mutable set) by the request's pre-call hook, so tasks LiteLLM spawns for the request share it.
_user_key_failures: ContextVar[set[str] | None] = ContextVar("litellm_plugins_byok_failures", default=None)


class _UserKeyFailures(list):  # noqa: FURB189 - must stay a list: LiteLLM appends to it
    """``Router.provider_default_deployment_ids`` that also "contains" this request's user-key failures.

    When a fallback hop fails, LiteLLM's fallback loop cools the hop's deployment down through
    ``fallback_event_handlers._trigger_cooldown_for_failed_deployment``, which reads the cooldown
    time from the shared deployment, never from the attempt (so ``_no_cooldown`` cannot reach it).
    The one per-request question that path asks is ``_should_run_cooldown_logic``'s
    ``deployment in router.provider_default_deployment_ids`` ("never cool this one down"): answering
    yes for a deployment that just failed *with this caller's key* keeps a user's bad key from
    cooling down the deployment everyone else shares. Other requests (other contexts) see the
    router's own list unchanged.
    """

    def __contains__(self, item: object) -> bool:
        if list.__contains__(self, item):
            return True
        failed = _user_key_failures.get()
        return failed is not None and item in failed


def _guard_router_cooldowns() -> None:
    """Install ``_UserKeyFailures`` on the proxy's router (again after a config reload rebuilt it)."""
    try:
        from litellm.proxy import proxy_server
    except Exception:  # noqa: BLE001 - no proxy (unit tests, benchmarks)
        return
    router = getattr(proxy_server, "llm_router", None)
    ids = getattr(router, "provider_default_deployment_ids", None)
    if isinstance(ids, list) and not isinstance(ids, _UserKeyFailures):
        router.provider_default_deployment_ids = _UserKeyFailures(ids)


def _note_user_key_failure(request_data: Mapping[str, Any]) -> None:
    info = request_data.get("model_info")
    deployment_id = info.get("id") if isinstance(info, Mapping) else None
    if not isinstance(deployment_id, str) or not deployment_id:
        return
    failed = _user_key_failures.get()
    if failed is None:
        failed = set()
        _user_key_failures.set(failed)
    failed.add(deployment_id)


class ByokHook(CustomLogger):
    """Hook methods must be defined on this class itself: LiteLLM skips inherited overrides."""

    async def async_pre_call_hook(self, user_api_key_dict: UserAPIKeyAuth, cache: Any, data: dict,
                                  call_type: Any) -> dict | None:
        v = _vault
        if v is None:
            return None
        group = data.get("model")
        providers = v.group_providers.get(group) if isinstance(group, str) else None
        if not providers:
            return None
        account = account_id(user_api_key_dict.user_id, user_api_key_dict.team_id,
                             user_api_key_dict.token or user_api_key_dict.api_key, v.order)
        if account is None:
            return None
        keys = await v.keys_for(account)
        if not keys:
            return None
        matching = [keys[p] for p in sorted(providers) if p in keys]
        if not matching:
            return None
        # A group mixing providers: an `only` key anywhere in it is the stricter promise.
        key = next((k for k in matching if k.policy == "only"), matching[0])
        ctx = for_request(data)
        ctx["byok_provider"] = key.provider
        ctx["byok_policy"] = key.policy
        ctx["byok_used"] = False
        _user_key_failures.set(set())
        _guard_router_cooldowns()
        if key.policy == "prefer" and str(call_type) in FALLBACK_CALL_TYPES and _has_platform_key(group):
            _add_platform_fallback(data, group)
        return data

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict | None:
        v = _vault
        if v is None:
            return None
        fallback_for = kwargs.pop(FALLBACK_MARKER, None)
        metadata = litellm_metadata(kwargs)  # "litellm_metadata" on /v1/responses, /v1/messages
        if metadata is None:
            return kwargs
        account = _account_from_metadata(metadata, v.order)
        if account is None:
            return kwargs
        keys = v.cache.get(account)
        if keys is None:
            keys = await v.keys_for(account)
        ctx = metadata.get(CONTEXT_KEY)
        if not keys and not ctx:
            return kwargs
        provider = provider_of(kwargs.get("model"), kwargs.get("custom_llm_provider"))
        key = keys.get(provider) if provider else None
        if not isinstance(ctx, dict):
            ctx = metadata[CONTEXT_KEY] = {}
        if key is None:
            if ctx.get("byok_policy") == "only" and ctx.get("byok_provider") == provider:
                # The key was deleted while this request was in flight: still never the platform key.
                ctx["byok_used"] = False
                raise ByokError(400, f"your BYOK key for provider '{provider}' was removed during this "
                                     "request (policy 'only': the platform key is not used)", "byok_key_missing")
            ctx["byok_used"] = False
            return kwargs
        if (fallback_for is not None and key.policy == "prefer"
                and fallback_for == metadata.get("model_group")):
            ctx["byok_used"] = False
            ctx["byok_fallback"] = True
            return kwargs
        if key.secret is None:
            # Stored but undecryptable (encryption key removed too early): `prefer` uses the
            # platform key, `only` refuses rather than silently spending the platform's key.
            ctx["byok_used"] = False
            if key.policy == "only":
                raise ByokError(503, f"your BYOK key for provider '{provider}' cannot be decrypted by this "
                                     "proxy (policy 'only': the platform key is not used); the operator must "
                                     "restore the encryption key, or add your key again", "byok_key_undecryptable")
            return kwargs
        kwargs["api_key"] = key.secret
        kwargs["client"] = None
        _guard_pre_call(kwargs.get("litellm_logging_obj"), key.secret)
        ctx["byok_used"] = True
        ctx["byok_provider"] = provider
        ctx["byok_policy"] = key.policy
        v.note_use(account, provider)
        metrics.byok_injected(provider)
        return kwargs

    async def async_post_call_success_deployment_hook(self, request_data: dict, response: Any,
                                                      call_type: Any) -> Any:
        if _vault is None:
            return None
        ctx = _ctx_of(request_data)
        if ctx.get("byok_used"):
            _scrub_logging(request_data.get("litellm_logging_obj"), _str(request_data.get("api_key")))
        return None

    async def async_post_call_failure_deployment_hook(self, request_data: Mapping[str, object],
                                                      exception: Exception, call_type: Any,
                                                      fallback_depth: int | None = None) -> None:
        if _vault is None:
            return
        ctx = _ctx_of(request_data)
        if ctx.get("byok_used"):
            logging_obj = request_data.get("litellm_logging_obj")
            _no_cooldown(logging_obj)
            _note_user_key_failure(request_data)
            _scrub_logging(logging_obj, _str(request_data.get("api_key")))
            ctx["byok_failed_status"] = getattr(exception, "status_code", None)

    async def async_post_call_failure_hook(self, request_data: dict, original_exception: Exception,
                                           user_api_key_dict: UserAPIKeyAuth,
                                           traceback_str: str | None = None) -> HTTPException | None:
        if _vault is None:
            return None
        ctx = _ctx_of(request_data)
        status = getattr(original_exception, "status_code", None)
        if ctx.get("byok_used") and ctx.get("byok_policy") == "only" and status in (401, 403):
            provider = ctx.get("byok_provider")
            message = (f"provider '{provider}' refused your BYOK key (policy 'only': the platform key is not "
                       "used for this provider). Replace or test it under /plugins/byok/keys.")
            # /v1/messages renders the original exception and ignores the one a hook returns
            # (docs/litellm.md fact 35): the provider's words are replaced in place there too.
            if isinstance(getattr(original_exception, "message", None), str):
                original_exception.message = message
            return ByokError(status, message, "byok_key_rejected")
        return None

    async def async_post_call_response_headers_hook(self, data: dict, user_api_key_dict: UserAPIKeyAuth,
                                                    response: Any, request_headers: dict | None = None,
                                                    litellm_call_info: dict | None = None) -> dict | None:
        if _vault is None:
            return None
        return {"x-litellm-plugins-byok": "true" if _ctx_of(data).get("byok_used") else "false"}

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        # Streaming responses skip the success deployment hook; scrub here, before credits/health
        # and any integration listed after us see the payload.
        if _vault is not None and isinstance(kwargs, dict) and _ctx_of_logging(kwargs).get("byok_used"):
            _scrub(kwargs, None)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        if _vault is not None and isinstance(kwargs, dict):
            ctx = _ctx_of_logging(kwargs)
            if ctx.get("byok_used"):
                _scrub(kwargs, None)
                metrics.byok_failed(ctx.get("byok_provider"))


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _ctx_of(data: Mapping[str, Any]) -> dict[str, Any]:
    for name in ("metadata", "litellm_metadata"):
        metadata = data.get(name)
        if isinstance(metadata, dict):
            ctx = metadata.get(CONTEXT_KEY)
            if isinstance(ctx, RequestContext):
                return ctx
    for name in ("metadata", "litellm_metadata"):  # a context the per-attempt hook had to create
        metadata = data.get(name)
        if isinstance(metadata, dict) and isinstance(metadata.get(CONTEXT_KEY), dict):
            return metadata[CONTEXT_KEY]
    return {}


def _ctx_of_logging(kwargs: dict[str, Any]) -> dict[str, Any]:
    params = kwargs.get("litellm_params")
    if isinstance(params, dict):
        ctx = _ctx_of(params)
        if ctx:
            return ctx
    return _ctx_of(kwargs)


def _has_platform_key(group: str) -> bool:
    """False when every deployment of ``group`` is BYOK-only (``core.catalog``): retrying it "with the
    platform key" could only fail, slowly."""
    cat = catalog.snapshot()
    return cat is None or group not in cat.byok_only_groups


def _add_platform_fallback(data: dict[str, Any], group: str) -> None:
    """Prepend "same group again, with the platform key" to the request's client-side fallbacks.

    LiteLLM skips a fallback naming the group that just failed and does not retry a 401 on a
    single-deployment group, so the entry carries our marker: that makes it a distinct fallback
    target (``fallback_attempt_key`` hashes the whole entry) and tells the per-attempt hook to use
    the platform key. Client-side fallbacks must be all strings or all dicts; strings become
    ``{"model": name}``, which LiteLLM treats exactly like the bare name.
    """
    entry = {"model": group, FALLBACK_MARKER: group}
    existing = data.get("fallbacks")
    if existing is None:
        # A request-level list replaces the router's configured fallbacks: carry those over.
        data["fallbacks"] = [entry, *({"model": g} for g in _configured_fallbacks(group))]
    elif isinstance(existing, list) and all(isinstance(item, (str, dict)) for item in existing):
        normalised = [{"model": item} if isinstance(item, str) else item for item in existing]
        if all(isinstance(item, dict) and not _is_standard_mapping(item) for item in normalised):
            data["fallbacks"] = [entry, *normalised]


def _configured_fallbacks(group: str) -> list[str]:
    """``router_settings.fallbacks`` for ``group`` (``[{"group": ["a", "b"]}, {"*": [...]}]``)."""
    try:
        from litellm.proxy.proxy_server import llm_router
    except Exception:  # noqa: BLE001 - no proxy (unit tests, benchmarks)
        return []
    configured = getattr(llm_router, "fallbacks", None) or []
    generic: list[str] = []
    for item in configured if isinstance(configured, list) else []:
        if isinstance(item, dict):
            if isinstance(item.get(group), list):
                return [g for g in item[group] if isinstance(g, str) and g != group]
            if isinstance(item.get("*"), list):
                generic = [g for g in item["*"] if isinstance(g, str) and g != group]
    return generic


def _is_standard_mapping(item: dict[str, Any]) -> bool:
    """``{"gpt-4": ["gpt-3.5"]}`` (router-config format) rather than a client-side entry."""
    return "model" not in item and any(isinstance(v, list) for v in item.values())


byok_hook = ByokHook()


async def start(rt: Any) -> None:
    """Called once per worker by core.startup when BYOK is enabled."""
    global _vault
    from litellm_plugins.core.errors import SettingsError
    try:
        v = Vault(rt)
    except ValueError as exc:
        raise SettingsError(f"litellm_plugins.byok.encryption_keys: {exc}") from None
    _vault = v
    try:
        await v.sync_accounts()
    except Exception as exc:  # noqa: BLE001 - an optimisation for outages; never a reason not to start
        log.error("byok: could not sync the key-holder set to Redis: %s", type(exc).__name__)
    rt.tasks.start("byok-invalidation", v.listen)
    rt.tasks.start("byok-last-used", v.flush_loop)
    rt.tasks.on_stop(v.flush_uses)
