"""Settings of the health capability (`litellm_plugins.health` in proxy_config.yaml).

Defaults are production-minded: a probe round per minute (the old system's 5 minutes let an outage
run for minutes before anyone noticed; real traffic is the faster detector anyway), a circuit that
opens after 5 consecutive real failures and retries after 30 s.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from litellm_plugins.core.errors import SettingsError

KEY = "litellm_plugins.health"


class HealthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False

    # ---- active probes ------------------------------------------------------------------------
    probe_enabled: bool = Field(default=True, description="Run the background prober at all.")
    probe_interval_s: float = Field(default=60.0, ge=0.2, le=3600,
                                    description="Seconds between probe rounds (one GET /models per endpoint).")
    probe_timeout_s: float = Field(default=5.0, gt=0, le=60, description="Timeout of one probe call.")
    probe_failure_threshold: int = Field(default=2, ge=1, le=100,
                                         description="Consecutive failed probes that open a circuit.")
    probe_exclude_model_groups: tuple[str, ...] = Field(
        default=(), description="Model groups never probed (e.g. metered endpoints without a free call).")
    lease_ttl_s: float = Field(default=15.0, ge=1, le=600,
                               description="Prober lease in Redis; a dead prober is replaced within this time.")

    # ---- passive signals + circuit breaker ------------------------------------------------------
    failure_threshold: int = Field(default=5, ge=1, le=1000,
                                   description="Consecutive counted traffic failures that open a circuit.")
    cooldown_s: float = Field(default=30.0, ge=0.1, le=3600,
                              description="Seconds a circuit stays open before a half-open trial.")
    ewma_alpha: float = Field(default=0.2, gt=0, le=1,
                              description="Weight of the newest sample in error-rate/latency EWMAs.")

    # ---- state distribution ---------------------------------------------------------------------
    refresh_interval_s: float = Field(default=0.5, ge=0.05, le=10,
                                      description="How often each worker copies circuit states from Redis to memory.")
    stale_after_s: float = Field(default=15.0, ge=1, le=600,
                                 description="If Redis cannot be read this long, stop excluding anything (fail open).")

    # ---- history ----------------------------------------------------------------------------------
    history_retention_days: int = Field(default=35, ge=31, le=3650,
                                        description="Probe rows and status changes older than this are pruned.")

    def check_config(self, config: dict[str, Any]) -> None:
        groups = {m.get("model_name") for m in config.get("model_list") or [] if isinstance(m, dict)}
        for i, group in enumerate(self.probe_exclude_model_groups):
            if group not in groups:
                raise SettingsError(f"{KEY}.probe_exclude_model_groups[{i}]: model group {group!r} "
                                    "is not in model_list")
        if self.lease_ttl_s <= self.probe_timeout_s:
            raise SettingsError(f"{KEY}.lease_ttl_s: must be longer than probe_timeout_s "
                                f"({self.lease_ttl_s} <= {self.probe_timeout_s}), or a slow probe round "
                                "would lose the lease and two workers would probe at once")
