"""The credits logic behind the hooks: hold before the call, settle or void after, usage rows.

One ``Engine`` per worker (built by ``hook.start``). The request path (``pre_call``) costs one
Redis script call -- sent without waiting for its answer when this worker holds a lease on the
account (``lease.py``), awaited otherwise: account and tier come from the auth object, the price
from a table built at startup, the Postgres hold row is queued for the writer. Only a cold account (first request, or
after Redis lost its data) reads Postgres on the request path, once, batched with the other
cold accounts of the moment (``cold.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from litellm_plugins.core import catalog, clock, context
from litellm_plugins.core.errors import plugin_error, service_unavailable
from litellm_plugins.core.identity import Caller, account_id
from litellm_plugins.core.redis_send import SendOnlyRedis
from litellm_plugins.core.runtime import Runtime
from litellm_plugins.credits import scope, store
from litellm_plugins.credits.allowance import KINDS, Allowances
from litellm_plugins.credits.cache import CreditCache
from litellm_plugins.credits.cold import ColdLoader
from litellm_plugins.credits.lease import STALE_AFTER_EXPIRY_SECONDS, Leases
from litellm_plugins.credits.money import charge_units, credits_to_units, fmt, hold_units, to_decimal
from litellm_plugins.credits.policies import postgres as pg_policy
from litellm_plugins.credits.pricing import (INPUT_ONLY_CALLS, METERED_CALLS, METERED_ROUTES, build_price_table,
                                             request_groups, spends_nothing, worst_case_usd)
from litellm_plugins.credits.settings import CreditsSettings
from litellm_plugins.credits.spool import Spool
from litellm_plugins.credits.writer import Writer
from litellm_plugins.metrics import record as metrics

log = logging.getLogger("litellm_plugins.credits")

HEADER_HELD = "x-litellm-plugins-credits-held"
HEADER_CHARGED = "x-litellm-plugins-credits-charged"
HEADER_BALANCE = "x-litellm-plugins-credits-balance"
HEADER_RESETS = "x-litellm-plugins-credits-resets-at"


class Engine:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.settings: CreditsSettings = rt.settings.credits
        self.order = tuple(rt.settings.account_order)  # one rule for every capability (core setting)
        self.prices = build_price_table(rt.config.get("model_list") or [])
        self.cache = CreditCache(rt.redis, rt.settings.redis_key_prefix, SendOnlyRedis(rt.settings.redis_url))
        self.spool = Spool(self.settings.spool_dir, rt.settings.database_url, self.settings.spool_max_bytes)
        self.starting_units = credits_to_units(self.settings.starting_grant)
        self.allowances = Allowances(self.settings)
        self._period_keys: set[str] = set()  # allowance periods seen: a new one drops this worker's leases
        # The Postgres path (policies/postgres.py): holds in the book of record while Redis is down.
        self.pg = pg_policy.PostgresHolds(rt.pool, self.cache, self.starting_units,
                                          self.settings.writer_interval_seconds) \
            if self.settings.on_redis_error == "postgres" else None
        self.writer = Writer(rt.pool, self.cache, self.spool, self.settings.writer_batch_size,
                             self.settings.writer_interval_seconds, self.settings.hold_ttl_seconds,
                             self.starting_units, pg_active=self._pg_active, allowances=self.allowances)
        self.leases = Leases(self.cache, self.settings.lease_requests, self.settings.lease_seconds,
                             self.settings.lease_headroom)
        self.cold = ColdLoader(rt.pool, self.cache, self.starting_units, self.writer.unflushed_holds,
                               self.pg.switch_back if self.pg is not None else None)
        self._closing: set[asyncio.Task[None]] = set()  # strong references to close_abandoned's tasks

    # ---- helpers -------------------------------------------------------------------------------
    def _pg_active(self) -> bool:
        return self.pg is not None and self.pg.active

    def tier_of(self, caller: Caller | None, ctx: dict[str, Any]) -> str:
        if caller is not None:
            tier = caller.metadata.get("tier") or caller.team_metadata.get("tier")
            if tier:
                return str(tier)
        return str(ctx.get("tier") or self.settings.default_tier)

    def worst_case_units(self, model_group: str, data: dict[str, Any], markup: Decimal,
                         input_only: bool = False) -> int:
        usd = worst_case_usd(self.prices.get(model_group), data, self.settings.prompt_bytes_per_token,
                             self.settings.default_max_output_tokens, input_only)
        return hold_units(usd, self.settings.credits_per_usd, markup)

    async def ensure_cached(self, account: str) -> None:
        """Rebuild a missing Redis account from Postgres, opening it first if it is new: batched and
        single-flight across this worker's requests (``cold.ColdLoader``)."""
        try:
            await self.cold.ensure(account)
        except store.UNAVAILABLE:
            service_unavailable("credits: the credit ledger is unavailable, try again shortly", 5)

    async def available_units(self, account: str) -> int | None:
        snap = await self.cache.snapshot(account)
        if snap is None:
            await self.ensure_cached(account)
            snap = await self.cache.snapshot(account)
        return None if snap is None else snap[0] - snap[1]

    # ---- request path ----------------------------------------------------------------------------
    async def pre_call(self, auth: Any, data: dict[str, Any], call_type: str) -> None:
        ctx = context.for_request(data)
        caller = Caller.from_auth(auth)
        account = ctx.get("account") or caller.account(self.order)
        if account is None:
            return
        call_type = str(getattr(call_type, "value", call_type))
        if call_type not in METERED_CALLS and not self._other_endpoint_allowed(call_type, caller, ctx):
            return
        ctx.setdefault("account", account)
        tier = self.tier_of(caller, ctx)
        markup = self.settings.markup(tier)
        hold = {"id": uuid.uuid4().hex, "account": account, "amount": 0, "tier": tier,
                "markup": str(markup), "t0": time.time(), "model": data.get("model"),
                "customer": caller.billing_customer()}
        ctx["hold"] = hold
        if ctx.get("byok_policy") == "only" and ctx.get("byok_provider"):
            hold["byok"] = True
            metrics.hold("byok")
            return
        input_only = str(call_type) in INPUT_ONLY_CALLS
        amount = max(self.worst_case_units(group, data, markup, input_only) for group in request_groups(data))
        rules = self.allowances.hold_args(tier)
        leasable = self._lease_allowed(hold, tier)
        if leasable and not self._pg_active():
            leased_balance = self.leases.take(account, hold["id"], amount)  # None: no usable lease
            if leased_balance is not None:  # carved from this worker's lease: nothing to wait for
                self._placed(hold, data, amount, leased_balance, ctx, caller)
                metrics.hold("leased")
                return
        hold["rejected"] = True  # until placed: a 503 from here on is a pre-call rejection
        sent_at = time.monotonic()
        try:
            placed = await self._place(hold, data, amount, rules, leasable)
        except Exception:  # the 503s of _place: Redis (and Postgres) unavailable
            metrics.hold("unavailable")
            raise
        hold.pop("rejected", None)
        if placed is None:  # on_redis_error: allow
            hold["unheld"] = True
            metrics.hold("unheld")
            return
        status, balance, held, cap_index, cap, in_postgres = placed
        metrics.hold("placed" if status == 1 else "refused", time.monotonic() - sent_at)
        if status == 2:
            hold["rejected"] = True
            kind = KINDS[cap_index - 1]
            resets = self.allowances.calendar.period(kind).resets_at
            raise plugin_error(
                402, f"Spend cap reached: this account may spend {fmt(cap)} credits per {kind}, and this request "
                     f"(up to {fmt(amount)} credits) would pass it; the cap resets at {resets}",
                "spend_cap_reached", headers={HEADER_RESETS: resets})
        if status != 1:
            hold["rejected"] = True
            available = max(balance - held, 0)
            raise plugin_error(
                402, f"Insufficient credits: requested up to {fmt(amount)} credits, {fmt(available)} available",
                "insufficient_credits")
        self._placed(hold, data, amount, balance, ctx, caller, queued=not in_postgres)

    def _lease_allowed(self, hold: dict[str, Any], tier: str) -> bool:
        """Note the allowance's reset time on the hold (response header); and say whether this request
        may use or take a lease. A carve skips the hold script, so a lease must not outlive the
        allowance period it was granted in: none within ``lease_seconds`` of the period's end, and
        every lease of this worker is dropped when a new period is first seen."""
        period = self.allowances.period_of(tier)
        if period is None:
            return True
        hold["resets_at"] = period.resets_at
        if period.key not in self._period_keys:
            if self._period_keys:
                self.leases.drop_all()
            self._period_keys.add(period.key)
        return period.end - clock.now() > self.settings.lease_seconds

    def _other_endpoint_allowed(self, call_type: str, caller: Caller, ctx: dict[str, Any]) -> bool:
        """A call outside the verified routes: False = serve it with no hold (it runs no model);
        True = hold and settle as usual; or refuse it with a 400 (``other_endpoints: refuse``, the
        default) so that nothing a prepaid caller can run goes uncharged. Admins and calls on the
        caller's own key (BYOK ``only``) are not refused: neither spends credits."""
        if spends_nothing(call_type):
            return False
        if (self.settings.other_endpoints == "pass" or caller.is_admin
                or (ctx.get("byok_policy") == "only" and ctx.get("byok_provider"))):
            return True
        raise plugin_error(400, f"this endpoint (LiteLLM call type '{call_type}') is not metered by the gateway's "
                                f"credits; use {METERED_ROUTES}", "unsupported_endpoint")

    async def _place(self, hold: dict[str, Any], data: dict[str, Any], amount: int, rules: list[object],
                     leasable: bool = True) -> tuple[int, int, int, int, int, bool] | None:
        """Place the hold in Redis, or in Postgres while Redis is unreachable (``on_redis_error:
        postgres``) -> (status, balance, held, cap index, cap, placed in Postgres); None: serve
        unheld (``allow``). ``rules``: the tier's allowance and caps (``Allowances.hold_args``)."""
        account = hold["account"]
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if self.pg is not None and self.pg.active and not await self._redis_back():
                wait = self.pg.ready_at - time.monotonic()
                if wait > 0:  # inside the switch grace: wait (asking Redis now and then), no Postgres call
                    await asyncio.sleep(min(wait, pg_policy.PROBE_SECONDS))
                    continue
                placed = await self._postgres_hold(hold, data, amount, rules)
                if placed is not None:
                    return (*placed, True)
                continue  # too early after the switch, or switched back meanwhile: ask again
            try:
                return (*await self._redis_hold(account, hold, amount, rules, leasable), False)
            except (RedisError, OSError) as exc:
                if self.settings.on_redis_error == "allow":
                    log.warning("credits: Redis unavailable (%s); serving without a hold", type(exc).__name__)
                    return None
                if self.pg is None:
                    service_unavailable("credits: the credit service is unavailable, try again shortly", 5)
                log.warning("credits: Redis unavailable (%s); placing holds in Postgres", type(exc).__name__)
                self.leases.drop_all()
                try:
                    await self.pg.enter()
                except store.UNAVAILABLE:  # both down: nothing can check the balance
                    service_unavailable("credits: the credit service is unavailable, try again shortly", 5)
        service_unavailable("credits: the credit service is unavailable, try again shortly", 5)

    async def _redis_back(self) -> bool:
        """On the Postgres path: is Redis answering again (asked at most every PROBE_SECONDS)? If so,
        switch back (Redis rebuilt from Postgres) before the caller uses it."""
        assert self.pg is not None
        if not self.pg.probe_due() or not await self.pg.redis_answers():
            return False
        try:
            await self.pg.switch_back()
        except store.UNAVAILABLE:
            service_unavailable("credits: the credit service is unavailable, try again shortly", 5)
        except (RedisError, OSError):
            return False
        return True

    async def _postgres_hold(self, hold: dict[str, Any], data: dict[str, Any], amount: int,
                             rules: list[object]) -> tuple[int, int, int, int, int] | None:
        assert self.pg is not None
        account = hold["account"]
        call_id = data.get("litellm_call_id") or hold["id"]
        try:
            status, balance, held, wait_ms, cap_index, cap = await self.pg.hold(
                hold["id"], call_id, account, amount, hold["t0"], self.writer.unflushed_amount(account),
                hold.get("tier"), self.allowances.ensure_args(hold.get("tier")), rules)
        except store.UNAVAILABLE:  # both down: nothing can check the balance
            service_unavailable("credits: the credit service is unavailable, try again shortly", 5)
        if status == pg_policy.TOO_EARLY:
            await asyncio.sleep(min(wait_ms / 1000, pg_policy.PROBE_SECONDS))
            return None
        if status == pg_policy.NOT_POSTGRES:  # another worker switched back: try Redis
            self.pg.active = False
            return None
        return status, balance, held, cap_index, cap

    async def _redis_hold(self, account: str, hold: dict[str, Any], amount: int, rules: list[object],
                          leasable: bool = True) -> tuple[int, int, int, int, int]:
        lease_args, generation = self.leases.exact_args(account, amount if leasable else 0)
        sent_at = time.monotonic()
        try:
            try:
                status, balance, held, granted, cap_index, cap = await self.cache.hold(
                    account, hold["id"], amount, lease_args, rules)
            except RedisConnectionError:  # a pooled connection that died with a Redis restart: once more
                status, balance, held, granted, cap_index, cap = await self.cache.hold(
                    account, hold["id"], amount, lease_args, rules)
            if status == -1:
                await self.ensure_cached(account)
                status, balance, held, granted, cap_index, cap = await self.cache.hold(
                    account, hold["id"], amount, lease_args, rules)
        finally:
            self.leases.answered(account, lease_args)
        self.leases.after_exact(account, lease_args, generation, granted, balance, sent_at)
        return status, balance, held, cap_index, cap

    def _placed(self, hold: dict[str, Any], data: dict[str, Any], amount: int, balance: int,
                ctx: dict[str, Any], caller: Caller, queued: bool = True) -> None:
        hold["amount"] = amount
        hold["balance"] = balance
        if amount > 0:
            hold["call_id"] = data.get("litellm_call_id") or hold["id"]
            scope.track(hold, ctx, caller, data.get("stream") is True)  # voided if the request ends unreported
            if not queued:  # placed in Postgres by credits_hold_pg: the row is there already
                return
            self.writer.put({"op": "hold", "id": hold["id"], "call_id": hold["call_id"],
                             "account": hold["account"], "amount": amount, "ts": hold["t0"],
                             "tier": hold.get("tier"), "at": clock.now()})

    async def response_headers(self, data: dict[str, Any], response: Any) -> dict[str, str] | None:
        ctx = context.find(data)
        if ctx is None:  # only a context our pre-call hook created
            return None
        hold = ctx.get("hold")
        if not isinstance(hold, dict) or hold.get("rejected"):
            return None
        headers = {HEADER_HELD: fmt(hold["amount"]) or "0"}
        if hold.get("resets_at"):
            headers[HEADER_RESETS] = hold["resets_at"]
        hidden = getattr(response, "_hidden_params", None) or {}
        cost = hidden.get("response_cost")
        if cost is None and isinstance(response, dict) and not data.get("stream"):
            hidden = {"model_id": ctx.get("attempt_model_id")}
            cost = litellm_cost(data, response)
        balance = hold.get("balance")
        if cost is not None and not data.get("stream"):
            charged = self._charge(ctx, hold, cost)
            headers[HEADER_CHARGED] = fmt(charged) or "0"
            if balance is not None:
                headers[HEADER_BALANCE] = fmt(balance - charged) or "0"
            await self._journal_early(ctx, hold, data, response, hidden, cost, charged)
        elif balance is not None:
            headers[HEADER_BALANCE] = fmt(balance) or "0"
        return headers

    async def _journal_early(self, ctx: dict[str, Any], hold: dict[str, Any], data: dict[str, Any],
                             response: Any, hidden: dict[str, Any], cost: Any, charge: int) -> None:
        """Journal the settle of a non-streamed success before its response leaves (one Redis call).

        LiteLLM's success callback, which queues the full records, runs some milliseconds after the
        client has its answer; a kill -9 in between would leave a served call unbilled and unlogged
        (measured: a kill right after 4 answers lost all 4 when this ran as a task instead). The
        call is handed to the kernel without awaiting anything (``CreditCache.send_journal``): the
        kill-safety needs the bytes to have left the process, and an await here let LiteLLM's
        logging of earlier requests run before this response could leave (3.0 ms median, measured).
        The records built here from the response are also the ones the success callback queues
        for Postgres (``record_success``), so that callback builds nothing on the next request's loop.
        """
        if hold.get("unheld") or not hold.get("account"):
            return
        usage = response.get("usage") if isinstance(response, dict) else getattr(response, "usage", None)
        await self._journal_success(ctx, hold, data, usage, hidden, cost, charge, stream=False)

    async def _journal_success(self, ctx: dict[str, Any], hold: dict[str, Any], data: dict[str, Any],
                               usage: Any, hidden: dict[str, Any], cost: Any, charge: int, stream: bool) -> None:
        """The settle + usage row of a success, built from what the response carries, journalled
        (sent without awaiting when the send-only connection is up) and kept on the hold for the
        success callback (``record_success``), which queues exactly these records."""
        meta = context.litellm_metadata(data) or {}
        # No "model_group" from data["model"]: after a fallback that is still the first group tried;
        # usage_row names the group that served from the deployment id (hidden params: the final attempt).
        slo = {"metadata": meta, "response_cost": cost,
               "model_id": hidden.get("model_id"), "custom_llm_provider": hidden.get("custom_llm_provider"),
               "prompt_tokens": _tokens(usage, "prompt_tokens", "input_tokens"), "stream": stream,
               "completion_tokens": _tokens(usage, "completion_tokens", "output_tokens")}
        call_id = data.get("litellm_call_id") or hold["id"]
        records = [_settle_record(hold, call_id, charge),
                   {"op": "usage", "row": self.usage_row(ctx, slo, hold, call_id, "success", charge, None, {})}]
        hold["closed"] = True  # the callback, if it runs meanwhile, settles by its own records
        if await self.writer.journal(records):
            hold["journaled"] = records

    async def stream_chunks(self, chunks: AsyncIterator[Any], data: dict[str, Any]) -> AsyncIterator[Any]:
        """Pass a streamed response through and journal its settle + usage row when the provider's
        stream has ended, *before* LiteLLM sends ``data: [DONE]``.

        LiteLLM computes a stream's cost and runs the success callback in a task it starts as the
        stream ends, so a kill -9 right after ``[DONE]`` lost the call's records (the callback had
        not run). Here the cost is LiteLLM's own calculation (``response_cost_calculator`` of the
        request's logging object, on the chunk that carries the provider's usage: the same
        deployment prices and token counts its callback prices later), and ``record_success``
        checks that the two agree. Per chunk this costs one attribute read; once per stream, the
        cost calculation and one Redis write handed to the kernel without awaiting. A Responses API
        stream is priced on its ``response.completed`` event's response. An Anthropic Messages
        stream reaches this hook as raw SSE bytes: its ``message_start`` and ``message_delta`` events
        are read into the shape of a non-streamed answer (model, usage) and priced like one (a
        substring test per chunk; the two events are parsed).
        """
        last = None
        message: dict[str, Any] | None = None  # an Anthropic Messages stream, as a non-streamed answer
        async for chunk in chunks:
            if getattr(chunk, "usage", None) is not None:  # chat / text completions: the usage chunk
                last = chunk
            elif type(chunk).__name__ == "ResponseCompletedEvent":  # the Responses API's last event:
                last = chunk.response                                # the whole response, with usage
            elif isinstance(chunk, bytes) and (b'"message_start"' in chunk or b'"message_delta"' in chunk):
                message = _anthropic_stream_message(chunk, message)
            yield chunk
        if last is None and message is not None and message["usage"].get("output_tokens") is not None:
            last = message
        if last is not None:
            try:
                await self._journal_stream_end(data, last)
            except Exception:  # noqa: BLE001 - the success callback still settles it
                log.exception("credits: could not journal a streamed success at its end")

    async def _journal_stream_end(self, data: dict[str, Any], chunk: Any) -> None:
        ctx = context.find(data)
        if ctx is None:
            return
        hold = ctx.get("hold")
        if not isinstance(hold, dict) or hold.get("rejected") or hold.get("unheld") or hold.get("closed") \
                or not hold.get("account"):
            return
        cost = litellm_cost(data, chunk)
        if cost is None:
            return
        if isinstance(chunk, dict):  # an Anthropic Messages stream: the deployment from routing's per-attempt hook
            hidden, usage = {"model_id": ctx.get("attempt_model_id")}, chunk["usage"]
        else:
            hidden, usage = getattr(chunk, "_hidden_params", None) or {}, chunk.usage
        await self._journal_success(ctx, hold, data, usage, hidden, cost, self._charge(ctx, hold, cost),
                                    stream=True)

    # ---- after the call (background) -------------------------------------------------------------
    def _facts(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
        ctx = context.from_logging(kwargs)
        slo = kwargs.get("standard_logging_object") or {}
        meta = slo.get("metadata") or {}
        call_id = kwargs.get("litellm_call_id") or slo.get("litellm_call_id") or ""
        hold = ctx.get("hold")
        if not isinstance(hold, dict):
            # Pre-call did not run (e.g. enabled after the request started): bill by the logging
            # payload, with an id derived from the call id so duplicate callbacks stay idempotent.
            account = ctx.get("account") or account_id(
                meta.get("user_api_key_user_id"), meta.get("user_api_key_team_id"),
                meta.get("user_api_key_hash"), self.order)
            auth_meta = meta.get("user_api_key_auth_metadata") or {}
            tier = str(auth_meta.get("tier") or ctx.get("tier") or self.settings.default_tier)
            hold = {"id": f"call-{call_id}", "account": account, "amount": 0, "tier": tier,
                    "markup": str(self.settings.markup(tier)), "t0": slo.get("startTime") or time.time()}
        return ctx, slo, hold, call_id

    def usage_row(self, ctx: dict[str, Any], slo: dict[str, Any], hold: dict[str, Any], call_id: str,
                  status: str, charge: int, error_type: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        meta = slo.get("metadata") or {}
        cost = slo.get("response_cost") if status == "success" else 0
        latency = None
        if slo.get("startTime") and slo.get("endTime"):
            latency = int((float(slo["endTime"]) - float(slo["startTime"])) * 1000)
        elif hold.get("t0"):
            latency = int((time.time() - float(hold["t0"])) * 1000)
        return {
            "id": hold["id"], "call_id": call_id or hold["id"], "account": hold.get("account"),
            "user_id": meta.get("user_api_key_user_id") or kwargs.get("_user_id"),
            "team_id": meta.get("user_api_key_team_id") or kwargs.get("_team_id"),
            "key_hash": meta.get("user_api_key_hash") or kwargs.get("_key_hash"),
            "requested_model": ctx.get("requested_model") or hold.get("model") or kwargs.get("_requested_model"),
            "power_level": ctx.get("power_level"),
            **_served(slo, ctx, kwargs),
            "byok": bool(ctx.get("byok_used") or hold.get("byok")),
            "prompt_tokens": int(slo.get("prompt_tokens") or 0),
            "completion_tokens": int(slo.get("completion_tokens") or 0),
            "cost_usd": str(to_decimal(cost)) if cost else "0",
            "credits_charged": charge, "latency_ms": latency,
            "stream": bool(slo.get("stream") or kwargs.get("stream")),
            "status": status, "error_type": error_type, "tier": hold.get("tier") or ctx.get("tier"),
            "billing_customer": hold.get("customer"), "ts": time.time(),
        }

    def on_success(self, kwargs: dict[str, Any]) -> None:
        """Queue the records of a success without journalling them (unit tests and benchmarks)."""
        self.writer.put_all(self.success_records(kwargs))

    async def record_success(self, kwargs: dict[str, Any]) -> None:
        """LiteLLM's success callback: journal + queue; or, when ``_journal_early`` already journalled
        this call as the response left, queue exactly those records (the callback runs on the event
        loop the next request needs, so it builds nothing it does not have to)."""
        hold = context.from_logging(kwargs).get("hold")
        early = hold.pop("journaled", None) if isinstance(hold, dict) else None
        if early and early[0]["charge"] == self._callback_charge(kwargs, hold):
            self.writer.put_all(early)
            return
        if early:  # never seen: the journalled charge is not LiteLLM's; its own replaces it (same fields)
            log.warning("credits: charge journalled as the response left (%d units) differs from LiteLLM's "
                        "response_cost; settling by the callback's", early[0]["charge"])
        await self.writer.submit(self.success_records(kwargs))

    def _callback_charge(self, kwargs: dict[str, Any], hold: dict[str, Any]) -> int:
        """The charge ``success_records`` computes from LiteLLM's ``response_cost``."""
        cost = kwargs.get("response_cost")
        if cost is None:
            cost = (kwargs.get("standard_logging_object") or {}).get("response_cost")
        return self._charge(context.from_logging(kwargs), hold, cost)

    def _charge(self, ctx: dict[str, Any], hold: dict[str, Any], cost: Any) -> int:
        """Units charged for ``cost`` (LiteLLM's USD float): 0 for a BYOK call; markup of the hold's tier."""
        if ctx.get("byok_used") or hold.get("byok"):
            return 0
        return charge_units(to_decimal(cost or 0), self.settings.credits_per_usd, Decimal(hold["markup"]))

    def success_records(self, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        ctx, slo, hold, call_id = self._facts(kwargs)
        if not hold.get("account"):
            return []
        hold["closed"] = True
        cost = kwargs.get("response_cost")
        if cost is None:
            cost = slo.get("response_cost")
        charge = self._charge(ctx, hold, cost)
        return [_settle_record(hold, call_id or hold["id"], charge),
                {"op": "usage", "row": self.usage_row(ctx, slo, hold, call_id, "success", charge, None, kwargs)}]

    def attempt_failure_records(self, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        """A failed attempt (a retry or fallback may still succeed): usage row only, no void yet."""
        ctx, slo, hold, call_id = self._facts(kwargs)
        if not hold.get("account") or hold.get("rejected") or "hold" not in ctx:
            # Rejected before the provider (by us or another hook): async_post_call_failure_hook
            # records it with the rejection's own error type.
            return []
        err = (slo.get("error_information") or {}).get("error_class") or "provider_error"
        return [{"op": "usage", "row": self.usage_row(ctx, slo, hold, call_id, "failure", 0, err, kwargs)}]

    def on_request_failure(self, data: dict[str, Any], exc: Exception, auth: Any) -> None:
        self.writer.put_all(self.request_failure_records(data, exc, auth))

    def request_failure_records(self, data: dict[str, Any], exc: Exception, auth: Any) -> list[dict[str, Any]]:
        """The whole request failed (provider after retries, or a pre-call rejection): void + usage row."""
        ctx = context.for_request(data)
        hold = ctx.get("hold")
        caller = Caller.from_auth(auth) if auth is not None else None
        if not isinstance(hold, dict):
            account = ctx.get("account") or (caller.account(self.order) if caller else None)
            call = data.get("litellm_call_id")
            hold = {"id": f"call-{call}" if call else uuid.uuid4().hex, "account": account, "amount": 0,
                    "rejected": True}
            ctx["hold"] = hold
        if not hold.get("account"):
            return []
        records: list[dict[str, Any]] = []
        call_id = data.get("litellm_call_id") or hold["id"]
        rejected = bool(hold.get("rejected")) or _is_proxy_rejection(exc)
        if not hold.get("rejected") and hold.get("amount"):
            records.append({"op": "void", "id": hold["id"], "call_id": call_id, "account": hold["account"],
                            "amount": hold["amount"], "ts": hold.get("t0") or time.time()})
        hold["closed"] = True
        extra = {"_user_id": caller.user_id if caller else None, "_team_id": caller.team_id if caller else None,
                 "_key_hash": caller.key_hash if caller else None, "stream": bool(data.get("stream")),
                 "_requested_model": _model_name(ctx.get("requested_model") or data.get("model")),
                 "_model_group": _model_name(data.get("model"))}
        error_type = getattr(exc, "type", None) or type(exc).__name__
        row = self.usage_row(ctx, {}, hold, call_id, "rejected" if rejected else "failure", 0, str(error_type),
                             extra)
        records.append({"op": "usage", "row": row})
        return records

    def close_abandoned(self, holds: list[scope.Placed]) -> None:
        """Void the holds of an ended request that no callback closed (``scope.HoldScope``).

        ``holds`` are all the request placed, in order. The last is the request's own (a usage row
        ``failure`` / ``abandoned`` records it; a success callback arriving later replaces that row
        and still settles); earlier ones were
        placed by a pre-call pass LiteLLM discarded (``ProxyRateLimitError`` fallback re-runs the
        hooks on a fresh copy of the request): void only, the request has its row already.
        """
        records: list[dict[str, Any]] = []
        left = scope.unfinished(holds)
        own_open = bool(left) and left[-1] is holds[-1]
        for hold, _, _, _ in left:
            hold["closed"] = True
            records.append({"op": "void", "id": hold["id"], "call_id": hold.get("call_id") or hold["id"],
                            "account": hold["account"],
                            "amount": hold["amount"], "ts": hold.get("t0") or time.time()})
        if own_open:
            self._abandoned_row(records, *holds[-1])
        log.info("credits: voided %d hold(s) of a request that ended without a result", len(left))
        task = asyncio.get_running_loop().create_task(self.writer.submit(records))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _abandoned_row(self, records: list[dict[str, Any]], hold: dict[str, Any], ctx: dict[str, Any],
                       caller: Caller, stream: bool) -> None:
        extra = {"_user_id": caller.user_id, "_team_id": caller.team_id, "_key_hash": caller.key_hash,
                 "stream": stream, "_requested_model": _model_name(ctx.get("requested_model") or hold.get("model")),
                 "_model_group": _model_name(hold.get("model"))}
        records.append({"op": "usage", "row": self.usage_row(ctx, {}, hold, hold.get("call_id") or hold["id"],
                                                             "failure", 0, "abandoned",
                                                             extra)})

    # ---- reconciler ----------------------------------------------------------------------------
    async def reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_seconds)
            try:
                await self.reconcile_once()
            except store.UNAVAILABLE as exc:  # Postgres down: expected, try again next round
                log.warning("credits reconciler: Postgres unavailable (%s)", type(exc).__name__)
            except (RedisError, OSError) as exc:
                log.warning("credits reconciler: Redis unavailable (%s)", type(exc).__name__)

    async def reconcile_once(self) -> dict[str, int]:
        """Write orphaned journal records, expire stale holds (Postgres and Redis) and converge Redis
        to Postgres; one runner at a time for each part."""
        report = {"recovered": 0}
        # Records a dead worker journalled but never wrote, first (so their holds are settled rather
        # than released for free), under a lease of its own: a short one, because the worker that
        # died may have held the main lease, and its records should not wait for that to expire.
        interval = self.settings.reconcile_interval_seconds
        async with self._lease("journal", max(interval * 2, 2.0)) as held:
            if held:
                report["recovered"] = await self.writer.recover_journal(
                    max(2.0, 10 * self.settings.writer_interval_seconds))
        async with self._lease("reconciler", max(interval * 2, 10)) as held:
            if not held:
                return report | {"skipped": 1}
            return report | await self._reconcile()

    @contextlib.asynccontextmanager
    async def _lease(self, name: str, ttl_seconds: float) -> AsyncIterator[bool]:
        lease = self.cache.lease_key(name)
        token = uuid.uuid4().hex
        held = bool(await self.rt.redis.set(lease, token, nx=True, px=int(ttl_seconds * 1000)))
        try:
            yield held
        finally:
            if held and await self.rt.redis.get(lease) == token.encode():
                await self.rt.redis.delete(lease)

    async def _reconcile(self) -> dict[str, int]:
        ttl = self.settings.hold_ttl_seconds
        now = int(time.time())
        report = {"expired": 0, "released": 0, "leases": 0, "refreshed": 0, "renewed": 0, "buckets_expired": 0}
        lease_stale = self.settings.lease_seconds + STALE_AFTER_EXPIRY_SECONDS
        async with self.rt.pool.acquire(timeout=5.0) as conn:
            # Allowances of idle accounts and expired buckets first: the refresh below copies them to Redis.
            report["renewed"], report["buckets_expired"] = await self.sweep_buckets(conn)
            for hold_id, account in await store.expire_old(conn, ttl):
                await self.cache.release(account, hold_id)
                report["expired"] += 1
            metrics.reconciled("expired", report["expired"])
            # Redis holds whose Postgres hold is closed (or never written and older than the TTL).
            redis = self.rt.redis
            async for key in redis.scan_iter(match=self.cache.holds_key("*"), count=500):
                account = self.cache.account_from_holds_key(key)
                entries = await redis.hgetall(key)
                old = {}
                for hid, value in entries.items():
                    amount_s, _, ts_s = value.decode().partition(":")
                    if hid.startswith(b"lease:"):  # a worker's lease (lease.py): its holds are entries of their own
                        if now - int(ts_s or 0) > lease_stale:
                            await self.cache.release(account, hid.decode())
                            report["leases"] += 1
                    elif now - int(ts_s or 0) > 10:
                        old[hid.decode()] = int(ts_s or 0)
                if not old:
                    continue
                rows = await conn.fetch("SELECT id, status FROM credit_holds WHERE id = ANY($1::text[])", list(old))
                status = {r["id"]: r["status"] for r in rows}
                local = self.writer.unflushed.get(account, {})
                for hid, ts in old.items():
                    st = status.get(hid)
                    if (st is not None and st != "pending") or (st is None and hid not in local and now - ts > ttl):
                        await self.cache.release(account, hid)
                        report["released"] += 1
                        metrics.reconciled("released", 1)
            batch: list[str] = []
            async for key in redis.scan_iter(match=self.cache.acct_key("*"), count=500):
                batch.append(self.cache.account_from_acct_key(key))
                if len(batch) >= 500:
                    report["refreshed"] += await self._refresh(conn, batch)
                    batch = []
            if batch:
                report["refreshed"] += await self._refresh(conn, batch)
        return report

    async def sweep_buckets(self, conn: Any, chunk: int = 200) -> tuple[int, int]:
        """Renew the allowance of every account whose tier has one and whose open period is an earlier
        one (idle accounts: an active one is renewed by its own records first), then expire the
        promotional / paid buckets whose time is up. Same SQL as the request path
        (``credits_ensure_allowance``), so a sweep racing a request renews once. Only accounts whose
        tier is known (recorded from their requests' records): an account's tier lives in its key's
        metadata, which the sweep cannot see; an account never seen since allowances were configured
        gets its allowance with its first request. -> (renewed, expired)."""
        renewed = expired = 0
        now = clock.now()
        for tier in self.allowances.rules:
            args = self.allowances.ensure_args(tier, now)
            if args is None:
                continue
            period, amount, end = args
            while True:
                accounts = await conn.fetch(
                    "SELECT account FROM credit_accounts WHERE tier = $1 AND (allowance_period IS NULL "
                    "OR (left(allowance_period, 10) <= left($2, 10) AND allowance_period <> $2)) ORDER BY account LIMIT $3",
                    tier, period, chunk)
                if not accounts:
                    break
                done = await conn.fetchval(
                    "SELECT count(*) FILTER (WHERE credits_ensure_allowance(a, $1, $2, $3, to_timestamp($4), $5)) "
                    "FROM unnest($6::text[]) AS a", tier, period, amount, end, self.starting_units,
                    [r["account"] for r in accounts])
                renewed += int(done or 0)
                if len(accounts) < chunk or not done:
                    break
        while True:
            rows = await conn.fetch("SELECT * FROM credits_expire_buckets($1, $2)", now, chunk)
            expired += len(rows)
            if len(rows) < 1:
                break
        return renewed, expired

    async def _refresh(self, conn: Any, accounts: list[str]) -> int:
        """Converge up to 500 cached accounts to Postgres in one query and one pipelined Redis round
        trip (one call per account made a round take ~19 s at 100k cached accounts)."""
        rows = await conn.fetch("SELECT account, balance, version, credits_state(a) AS state FROM credit_accounts a "
                                "WHERE account = ANY($1::text[])", accounts)
        if not rows:
            return 0
        async with self.rt.redis.pipeline(transaction=False) as pipe:
            for r in rows:
                await self.cache.release(r["account"], "", r["balance"], r["version"], pipe=pipe, state=r["state"])
            results = await pipe.execute()
        return sum(1 for result in results if result == 2)


def _served(slo: dict[str, Any], ctx: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Group, deployment and provider of the attempt that produced this outcome, plus routing's first
    choice. The deployment id is the ground truth (LiteLLM sets it per attempt); its group and
    provider come from the router's catalog, so a fallback is recorded as what actually served."""
    model_id = slo.get("model_id") or None
    cat = catalog.snapshot()
    entry = cat.entries.get(str(model_id)) if cat is not None and model_id is not None else None
    first = ctx.get("model_group") or kwargs.get("_model_group")
    return {
        "model_group": (entry.group if entry else None) or slo.get("model_group") or first,
        "deployment": model_id,
        "provider": (entry.provider if entry else None) or slo.get("custom_llm_provider") or None,
        "first_choice_group": first,
    }


def _anthropic_stream_message(chunk: bytes, message: dict[str, Any] | None) -> dict[str, Any] | None:
    """Fold an Anthropic Messages SSE chunk's ``message_start`` / ``message_delta`` events into the
    non-streamed answer they describe: ``message_start`` carries the model and the input usage,
    ``message_delta`` the output tokens so far (cumulative, as Anthropic sends them)."""
    for line in chunk.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        try:
            event = json.loads(line[5:])
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            start = event["message"]
            message = {"id": start.get("id"), "type": "message", "role": "assistant", "model": start.get("model"),
                       "content": [], "stop_reason": None, "stop_sequence": None,
                       "usage": {k: v for k, v in (start.get("usage") or {}).items() if k != "output_tokens"}}
        elif event.get("type") == "message_delta" and message is not None:
            message["usage"].update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            message["stop_reason"] = (event.get("delta") or {}).get("stop_reason")
    return message


def litellm_cost(data: dict[str, Any], result: Any) -> float | None:
    """LiteLLM's cost of ``result``, asked of the request's logging object before the response leaves.

    LiteLLM prices a call in its success callback, after the response: too late for a journal that
    must be written before the last byte (docs/credits.md "Journal"). Its logging object's calculator
    gives the same number earlier, from the same deployment prices and the provider's token counts:
    on a stream's chunk that carries ``usage`` (fact 34), and on a non-streamed ``/v1/messages``
    answer, a plain dict that reaches the headers hook without its hidden params (fact 30; LiteLLM's
    own ``x-litellm-response-cost`` header is computed the same way). One run of LiteLLM's cost
    calculation (~0.1-0.3 ms, BENCHMARKS.md) on those paths only. None when it cannot say: the
    success callback settles then, as before.
    """
    logging_obj = data.get("litellm_logging_obj")
    # 1.108 names it response_cost_calculator (keeping the old name as an alias); 1.102.4 has only
    # _response_cost_calculator, which its own /v1/messages cost header calls too.
    calculate = (getattr(logging_obj, "response_cost_calculator", None)
                 or getattr(logging_obj, "_response_cost_calculator", None))
    if calculate is None:
        return None
    try:
        cost = calculate(result=result)
    except Exception:  # noqa: BLE001 - no early journal then; the success callback settles it
        log.debug("credits: LiteLLM could not price a response before it left", exc_info=True)
        return None
    return cost if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None


def _tokens(usage: Any, *names: str) -> int:
    """A token count of a response's usage, by the first of ``names`` it has: chat's
    ``prompt_tokens`` / ``completion_tokens``, the Responses API's ``input_tokens`` / ``output_tokens``."""
    for name in names:
        value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def _settle_record(hold: dict[str, Any], call_id: str, charge: int) -> dict[str, Any]:
    return {"op": "settle", "id": hold["id"], "call_id": call_id, "account": hold["account"],
            "amount": hold.get("amount", 0), "ts": hold.get("t0") or time.time(), "charge": charge,
            "tier": hold.get("tier"), "at": clock.now()}  # at: calendar time the call ended (allowance period)


def _model_name(value: Any) -> str | None:
    """A model name fit for a usage row: a rejected request may have sent anything as ``model``."""
    return value[:256] if isinstance(value, str) and value else None


def _is_proxy_rejection(exc: Exception) -> bool:
    """Raised by a hook (ProxyException / HTTPException) rather than by a provider call."""
    from fastapi import HTTPException
    from litellm.proxy._types import ProxyException

    return isinstance(exc, ProxyException | HTTPException)
