"""The ``litellm_plugins:`` section of ``proxy_config.yaml``: loading, env resolution, validation.

Settings are validated once per worker at startup; a bad value stops the proxy with a message that
names the key (``litellm_plugins.credits.starting_grant: ...``) instead of failing on first use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from litellm_plugins.billing.settings import BillingSettings
from litellm_plugins.byok.settings import ByokSettings
from litellm_plugins.console.settings import ConsoleSettings
from litellm_plugins.core.errors import SettingsError
from litellm_plugins.core.identity import DEFAULT_ORDER, AccountSource
from litellm_plugins.credits.settings import CreditsSettings
from litellm_plugins.guard.settings import GuardSettings
from litellm_plugins.health.settings import HealthSettings
from litellm_plugins.metrics.settings import MetricsSettings
from litellm_plugins.routing.settings import RoutingSettings

__all__ = ["PluginSettings", "SettingsError", "StrictModel", "load_settings", "parse_settings"]

SECTION = "litellm_plugins"
ENV_PREFIX = "os.environ/"


class StrictModel(BaseModel):
    """Base for every settings model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique_sources(value: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(value)) != len(value):
        raise ValueError("account_order lists a source twice")
    return value


class PluginSettings(StrictModel):
    database_url: str = Field(description="Postgres DSN for our own schema (never LiteLLM's `public`).")
    redis_url: str = Field(description="Redis URL shared by every worker and instance.")
    redis_key_prefix: str = Field(default="litellm_plugins:", min_length=1, max_length=64,
                                  description="Prefix of every Redis key we write (several deployments can share one Redis).")
    account_order: tuple[AccountSource, ...] = Field(
        default=DEFAULT_ORDER, min_length=1,
        description="Which identity owns a request's account (credits, BYOK keys): first one present wins.")
    migrate_on_startup: bool = True

    _account_order_unique = field_validator("account_order")(_unique_sources)
    db_pool_min_size: int = Field(default=1, ge=0, le=100)
    db_pool_max_size: int = Field(default=10, ge=1, le=500)
    guard: GuardSettings = GuardSettings()
    credits: CreditsSettings = CreditsSettings()
    routing: RoutingSettings = RoutingSettings()
    byok: ByokSettings = ByokSettings()
    health: HealthSettings = HealthSettings()
    console: ConsoleSettings = ConsoleSettings()
    metrics: MetricsSettings = MetricsSettings()
    billing: BillingSettings = BillingSettings()


def resolve_env(value: Any, path: str = SECTION) -> Any:
    """Replace ``os.environ/NAME`` strings, as LiteLLM does for its own sections.

    An unset variable is an error naming both the key and the variable, because an empty secret
    silently accepted is how a proxy ends up running without encryption or a database.
    """
    if isinstance(value, dict):
        return {k: resolve_env(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX):]
        resolved = os.environ.get(name)
        if resolved is None or resolved == "":
            raise SettingsError(f"{path}: environment variable {name} is not set")
        return resolved
    return value


CAPABILITY_SECTIONS = ("guard", "routing", "byok", "credits", "health", "metrics", "billing")


def _resolve_section(section: dict[str, Any]) -> dict[str, Any]:
    """Resolve env references, except inside a disabled capability: turning BYOK off must not still
    demand its encryption key (its values are validated for shape, never used)."""
    resolved: dict[str, Any] = {}
    for key, value in section.items():
        path = f"{SECTION}.{key}"
        if key in CAPABILITY_SECTIONS and isinstance(value, dict):
            enabled = resolve_env(value.get("enabled", False), f"{path}.enabled")
            if enabled is not True:
                resolved[key] = {**value, "enabled": enabled}
                continue
        resolved[key] = resolve_env(value, path)
    return resolved


def _describe(error: dict[str, Any]) -> str:
    key = ".".join([SECTION, *(str(part) for part in error["loc"])])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown setting"
    if error["type"] == "missing":
        return f"{key}: required setting is missing"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def parse_settings(section: Any) -> PluginSettings:
    """Validate a raw ``litellm_plugins:`` mapping (env references are resolved first)."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise SettingsError(f"{SECTION}: must be a mapping, got {type(section).__name__}")
    try:
        return PluginSettings.model_validate(_resolve_section(section))
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors(include_url=False)]
        raise SettingsError("invalid plugin settings:\n  " + "\n  ".join(lines)) from None


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise SettingsError(f"config file {path} must be a mapping")
    return config


def config_path_from_environment() -> Path:
    """Find the config file the proxy was started with.

    ``litellm --config X`` stores ``{"config": X}`` in ``WORKER_CONFIG``; container setups often use
    ``CONFIG_FILE_PATH``, which LiteLLM itself prefers. We follow the same order.
    """
    explicit = os.environ.get("CONFIG_FILE_PATH")
    if explicit:
        return Path(explicit)
    worker = os.environ.get("WORKER_CONFIG")
    if worker:
        try:
            data = json.loads(worker)
        except json.JSONDecodeError:
            data = worker
        candidate = data.get("config") if isinstance(data, dict) else data
        if isinstance(candidate, str) and candidate:
            return Path(candidate)
    raise SettingsError(
        "cannot find the proxy config: start the proxy with `litellm --config proxy_config.yaml` "
        "or set CONFIG_FILE_PATH"
    )


def load_database_url(path: str | os.PathLike[str] | None = None) -> str:
    """Only ``litellm_plugins.database_url``: what ``litellm-plugins migrate`` needs.

    A migration job (CI/CD, an init container) should not need every runtime secret — e.g. the BYOK
    encryption key — just to create tables; the proxy still validates everything at startup.
    """
    config = load_config_file(path or config_path_from_environment())
    section = config.get(SECTION) or {}
    if not isinstance(section, dict):
        raise SettingsError(f"{SECTION}: must be a mapping, got {type(section).__name__}")
    if "database_url" not in section:
        raise SettingsError(f"{SECTION}.database_url: required setting is missing")
    url = resolve_env(section["database_url"], f"{SECTION}.database_url")
    if not isinstance(url, str) or not url:
        raise SettingsError(f"{SECTION}.database_url: must be a non-empty string")
    return url


def load_settings(path: str | os.PathLike[str] | None = None) -> tuple[PluginSettings, dict[str, Any]]:
    """Load and validate settings; returns them with the whole config (capabilities read `model_list`)."""
    config = load_config_file(path or config_path_from_environment())
    return parse_settings(config.get(SECTION)), config
