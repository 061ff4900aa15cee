"""Settings of the metrics capability (``litellm_plugins.metrics`` in proxy_config.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MetricsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    sample_interval_seconds: float = Field(
        default=5.0, ge=0.1, le=300,
        description="How often each worker samples its gauges (writer queue, spool bytes, journal length, "
                    "oldest unflushed record): one Redis HLEN and one directory listing per interval, off the "
                    "request path.")
    max_label_values: int = Field(
        default=500, ge=10, le=100_000,
        description="Most distinct label sets one metric keeps per worker; later ones are counted under "
                    "label value `_other` (model groups, deployments and providers come from the config, "
                    "so this is only a safety net).")
    per_account_labels: bool = Field(
        default=False,
        description="Opt-in: also count requests and charged credits per account "
                    "(litellm_plugins_account_*), at most `max_accounts` accounts per worker.")
    max_accounts: int = Field(
        default=100, ge=1, le=10_000,
        description="Cap of per-account series per worker (with per_account_labels); further accounts are "
                    "counted as account `_other`.")
