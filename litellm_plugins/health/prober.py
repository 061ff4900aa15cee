"""Active probes: one prober at a time across all workers and instances, under a Redis lease.

Every worker runs :func:`Prober.run_forever` (supervised); only the lease holder probes. The lease is
``SET NX PX`` with a per-worker owner token and is renewed every tick (a third of its TTL at most), so
when the holder dies another worker takes over within ``lease_ttl_s``. The next-round time lives in
Redis too, so a new holder keeps the schedule instead of probing at once.

A probe is ``GET {api_base}/models`` (Anthropic: ``/v1/models``; Ollama: ``/api/tags``) with the
deployment's *platform* key — free, no tokens, and it proves DNS, TLS, the endpoint and the key.
Deployments sharing an endpoint and key are probed once per round. Never a user's BYOK key.
Outcome: ok when the endpoint answers below 500 and not 401/403/429.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

import asyncpg
import httpx

from litellm_plugins.core.lease import RELEASE as _RELEASE
from litellm_plugins.core.lease import RENEW as _RENEW
from litellm_plugins.health import store
from litellm_plugins.metrics import record as metrics
from litellm_plugins.health.circuit import effective_state, now_ms
from litellm_plugins.health.deployments import Deployment
from litellm_plugins.health.service import HealthService

log = logging.getLogger("litellm_plugins.health")


BAD_PROBE_STATUSES = frozenset({401, 403, 429})


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_ms: int | None
    status_code: int | None
    error: str | None


async def probe_once(client: httpx.AsyncClient, deployment: Deployment, timeout: float) -> ProbeResult:
    assert deployment.probe_url is not None
    started = time.perf_counter()
    try:
        response = await client.get(deployment.probe_url, headers=dict(deployment.probe_headers),
                                    timeout=timeout)
    except httpx.TimeoutException:
        return ProbeResult(False, None, None, f"timeout after {timeout:g}s")
    except Exception as exc:  # noqa: BLE001 - any failure (bad URL, TLS, DNS...) is a failed probe
        return ProbeResult(False, None, None, type(exc).__name__)
    latency = int(round((time.perf_counter() - started) * 1000))
    status = response.status_code
    ok = status < 500 and status not in BAD_PROBE_STATUSES
    # Status only: a provider's error body can echo the key it was given.
    return ProbeResult(ok, latency if ok else None, status, None if ok else f"HTTP {status}")


class Prober:
    def __init__(self, service: HealthService) -> None:
        self.service = service
        self.settings = service.settings
        prefix = service.rt.settings.redis_key_prefix
        self.lease_key = f"{prefix}health:prober"
        self.due_key = f"{prefix}health:probe_due"
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        redis = service.rt.redis
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self.holding = False
        self._seen: set[str] = set()
        self._last_prune = 0.0

    @property
    def tick_s(self) -> float:
        return min(1.0, self.settings.lease_ttl_s / 3)

    async def acquire(self) -> bool:
        """Take or keep the lease; True while this worker is the prober."""
        redis = self.service.rt.redis
        ttl = int(self.settings.lease_ttl_s * 1000)
        if self.holding and await self._renew(keys=[self.lease_key], args=[self.token, ttl]):
            return True
        self.holding = bool(await redis.set(self.lease_key, self.token, nx=True, px=ttl))
        if self.holding:
            log.info("health: this worker (%s) is now the prober", self.token)
        return self.holding

    async def release(self) -> None:
        if self.holding:
            await self._release(keys=[self.lease_key], args=[self.token])
            self.holding = False

    async def run_forever(self) -> None:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            try:
                while True:
                    if self.settings.probe_enabled and await self.acquire():
                        await self.tick(client)
                    await asyncio.sleep(self.tick_s)
            finally:
                await asyncio.shield(self.release())

    async def tick(self, client: httpx.AsyncClient) -> None:
        deployments = self.service.reload_catalog() or list(self.service.deployments.values())
        if not deployments:
            return
        await self._first_seen(deployments)
        # open -> half_open once cooled down; probe-opened ones get their trial probe right away
        moved = await self.service.circuits.tick([d.model_id for d in deployments], self.settings.cooldown_s)
        trial: list[Deployment] = []
        if moved:
            states = await self.service.circuits.read(moved)
            for model_id in moved:
                forced = states[model_id].get("forced", "")
                await self.service.record_change(model_id, effective_state("open", forced),
                                                 effective_state("half_open", forced), "cool-down over: trial")
                if states[model_id].get("opened_by") == "probe":
                    trial.append(self.service.deployments[model_id])
        redis = self.service.rt.redis
        due = await redis.get(self.due_key)
        now = now_ms()
        if due is None or now >= int(due):
            await redis.set(self.due_key, now + int(self.settings.probe_interval_s * 1000))
            await self.probe_round(client, deployments)
        elif trial:
            await self.probe_round(client, trial)
        if time.monotonic() - self._last_prune > 3600:
            self._last_prune = time.monotonic()
            try:
                await store.prune(self.service.rt.pool, self.settings.history_retention_days)
            except Exception:  # noqa: BLE001 - retried next hour
                self._last_prune -= 3000
                log.exception("health: pruning history failed")

    async def _first_seen(self, deployments: list[Deployment]) -> None:
        """Start the uptime timeline of deployments this prober measures. One it never probes gets
        no "first seen: up" row: its uptime stays unknown (null) rather than an unearned 100%."""
        excluded = frozenset(self.settings.probe_exclude_model_groups)
        new = [d for d in deployments if d.model_id not in self._seen and d.not_probed_reason(excluded) is None]
        if new:
            try:
                await store.record_first_seen(self.service.rt.pool,
                                              [(d.model_id, d.model_group, d.provider) for d in new])
            except Exception:  # noqa: BLE001 - Postgres down: keep probing (Redis is what routes)
                log.exception("health: could not record first-seen deployments; retrying next tick")
                return
            self._seen.update(d.model_id for d in new)

    async def probe_round(self, client: httpx.AsyncClient, deployments: list[Deployment]) -> None:
        excluded = set(self.settings.probe_exclude_model_groups)
        targets: dict[tuple[str, tuple[tuple[str, str], ...]], list[Deployment]] = defaultdict(list)
        for d in deployments:
            if d.probe_url and d.model_group not in excluded and not d.byok_only:
                targets[(d.probe_url, d.probe_headers)].append(d)
        if not targets:
            return
        groups = list(targets.values())
        results = await asyncio.gather(*(probe_once(client, g[0], self.settings.probe_timeout_s)
                                         for g in groups))
        at = now_ms()
        rows = []
        for group, result in zip(groups, results):
            metrics.probe(group[0].provider, group[0].model_group, result.ok,
                          None if result.latency_ms is None else result.latency_ms / 1000)
            for d in group:
                await self.service.circuits.record_probe(d.model_id, result.ok, result.latency_ms,
                                                         result.error or "", at)
                await self.service.observe(d.model_id, result.ok, source="probe",
                                           reason=f"probe: {result.error}" if result.error else "")
                rows.append((d.model_id, d.model_group, d.provider, result.ok, result.latency_ms,
                             result.status_code, result.error))
        try:
            await store.record_probes(self.service.rt.pool, self.token, rows)
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
            # Postgres down: one line per round, not a traceback (the fault suite's 10-minute outage
            # logged one per probe round on every proxy); the circuits above already have the result.
            log.warning("health: could not record %d probe results: Postgres unavailable (%s)",
                        len(rows), type(exc).__name__)
        except Exception:  # noqa: BLE001 - history only; the circuits above already have the result
            log.exception("health: could not record %d probe results", len(rows))
