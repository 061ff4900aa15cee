"""Settings of the byok capability (`litellm_plugins.byok` in proxy_config.yaml).

The encryption keys are the one secret this capability owns. They come from the environment
(``encryption_keys: os.environ/LITELLM_PLUGINS_BYOK_ENCRYPTION_KEYS``, comma-separated Fernet keys,
newest first) and are held as ``SecretStr`` so no repr, log line or validation error prints them.
With BYOK enabled and no valid key, startup is refused: the old system generated a temporary key
instead and lost every stored provider key at the next restart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from litellm_plugins.core.errors import SettingsError

KEY = "litellm_plugins.byok"


class ByokSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    encryption_keys: tuple[SecretStr, ...] = Field(
        default=(), description="Fernet keys, newest first; a comma-separated string or a list.")
    validate_on_add: bool = Field(
        default=True, description="Check a new key with one authenticated GET {api_base}/models.")
    validation_timeout_s: float = Field(default=5.0, gt=0, le=60)
    max_key_length: int = Field(default=512, ge=16, le=8192)
    cache_ttl_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="Upper bound on how long a decrypted key lives in a worker if an invalidation "
                    "message is lost; deletes and replacements normally propagate through Redis in ms.")
    default_policy: Literal["prefer", "only"] = "prefer"

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def check_config(self, config: dict) -> None:
        """Refuse to start without a usable encryption key (never invent a temporary one)."""
        if not self.encryption_keys:
            raise SettingsError(
                f"{KEY}.encryption_keys: BYOK is enabled but no encryption key is set; set "
                "encryption_keys: os.environ/LITELLM_PLUGINS_BYOK_ENCRYPTION_KEYS and export one "
                "Fernet key (python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')")
        from litellm_plugins.byok.crypto import invalid_key_indexes
        bad = invalid_key_indexes(self.encryption_keys)
        if bad:
            raise SettingsError(
                f"{KEY}.encryption_keys[{bad[0]}]: not a valid Fernet key (32 url-safe base64-encoded "
                "bytes); the value is not shown")
        from litellm_plugins.byok.providers import configured_providers
        if not configured_providers(config):
            raise SettingsError(f"{KEY}.enabled: model_list has no provider a user could bring a key for")
