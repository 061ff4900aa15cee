"""Settings: unknown keys, wrong types and unset environment variables are refused, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from litellm_plugins.core.secrets import mask, mask_tree
from litellm_plugins.core.settings import SettingsError, load_settings, parse_settings, resolve_env

ROOT = Path(__file__).resolve().parents[1]
VALID = {"database_url": "postgresql://u@h/d", "redis_url": "redis://h:6379/0"}


def test_valid_minimal_settings_get_defaults() -> None:
    settings = parse_settings(VALID)
    assert settings.database_url == "postgresql://u@h/d"
    assert settings.migrate_on_startup is True
    assert settings.account_order == ("user", "team", "key")


@pytest.mark.parametrize(("section", "named"), [
    ({**VALID, "bogus": 1}, "litellm_plugins.bogus: unknown setting"),
    ({**VALID, "db_pool_max_size": "many"}, "litellm_plugins.db_pool_max_size:"),
    ({**VALID, "migrate_on_startup": "perhaps"}, "litellm_plugins.migrate_on_startup:"),
    ({**VALID, "account_order": ["user", "planet"]}, "litellm_plugins.account_order.1:"),
    ({"redis_url": "redis://h"}, "litellm_plugins.database_url: required setting is missing"),
    ({**VALID, "credits": {"enabled": True, "nonsense": 1}}, "litellm_plugins.credits.nonsense: unknown setting"),
    ({**VALID, "credits": {"on_redis_error": "maybe"}},
     "litellm_plugins.credits.on_redis_error: Input should be 'postgres', 'reject' or 'allow'"),
    ({**VALID, "credits": {"other_endpoints": "allow"}},
     "litellm_plugins.credits.other_endpoints: Input should be 'refuse' or 'pass'"),
])
def test_invalid_settings_name_the_key(section: dict, named: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(section)
    assert named in str(info.value)


def test_unset_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LP_TEST_UNSET", raising=False)
    with pytest.raises(SettingsError, match=r"litellm_plugins.redis_url: environment variable LP_TEST_UNSET is not set"):
        parse_settings({"database_url": "x", "redis_url": "os.environ/LP_TEST_UNSET"})
    monkeypatch.setenv("LP_TEST_SET", "redis://from-env")
    assert resolve_env({"a": ["os.environ/LP_TEST_SET"]}) == {"a": ["redis://from-env"]}


def test_section_must_be_a_mapping() -> None:
    with pytest.raises(SettingsError, match="litellm_plugins: must be a mapping"):
        parse_settings(["not", "a", "mapping"])


def test_shipped_proxy_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LITELLM_PLUGINS_DATABASE_URL", "LITELLM_PLUGINS_REDIS_URL",
                 "LITELLM_PLUGINS_BYOK_ENCRYPTION_KEYS"):
        monkeypatch.setenv(name, "x")
    settings, config = load_settings(ROOT / "proxy_config.yaml")
    assert config["general_settings"]["always_include_stream_usage"] is True
    callbacks = config["litellm_settings"]["callbacks"]
    for capability in ("routing", "byok", "credits", "health", "metrics"):
        assert f"litellm_plugins.{capability}.{capability}_hook" in callbacks
    assert settings.metrics.enabled is True
    assert settings.billing.enabled is False  # shipped off: its receivers' keys need not be set
    assert "litellm_plugins.billing.billing_hook" not in callbacks  # no LiteLLM hook: no callbacks entry


def test_config_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_list: [\n")
    with pytest.raises(SettingsError, match="is not valid YAML"):
        load_settings(bad)
    bad.write_text(yaml.safe_dump({"litellm_plugins": {"database_url": 5, "redis_url": "r"}}))
    with pytest.raises(SettingsError, match="litellm_plugins.database_url"):
        load_settings(bad)


def test_masking_keeps_only_last_four() -> None:
    assert mask("sk-abcdefghijkl1234") == "****1234"
    assert mask("short") == "*****"
    masked = mask_tree({"database_url": "postgresql://u:pw@h/db", "nested": {"api_key": "sk-123456789"},
                        "enabled": True, "name": "visible"})
    assert masked == {"database_url": "****h/db",
                      "nested": {"api_key": "****6789"}, "enabled": True, "name": "visible"}


def test_disabled_capability_does_not_need_its_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LP_UNSET_SECRET", raising=False)
    off = parse_settings({**VALID, "byok": {"enabled": False, "encryption_keys": "os.environ/LP_UNSET_SECRET"}})
    assert off.byok.enabled is False
    with pytest.raises(SettingsError, match="litellm_plugins.byok.encryption_keys: environment variable LP_UNSET_SECRET"):
        parse_settings({**VALID, "byok": {"enabled": True, "encryption_keys": "os.environ/LP_UNSET_SECRET"}})


def test_guard_must_be_the_first_of_our_callbacks_and_its_limits_are_checked() -> None:
    from litellm_plugins.core.startup import check_callbacks

    settings = parse_settings({**VALID, "guard": {"enabled": True}})
    ours = ["litellm_plugins.guard.guard_hook", "litellm_plugins.routing.routing_hook"]
    check_callbacks(settings, {"litellm_settings": {"callbacks": ["some.other.hook", *ours]}})
    with pytest.raises(SettingsError, match="guard_hook must be the first litellm_plugins entry"):
        check_callbacks(settings, {"litellm_settings": {"callbacks": list(reversed(ours))}})
    with pytest.raises(SettingsError, match="guard_hook is not listed"):
        check_callbacks(settings, {"litellm_settings": {"callbacks": ours[1:]}})
    with pytest.raises(SettingsError, match="litellm_plugins.guard.max_n:"):
        parse_settings({**VALID, "guard": {"enabled": True, "max_n": 500}})
    with pytest.raises(SettingsError, match="litellm_plugins.guard.max_body_bytes:"):
        parse_settings({**VALID, "guard": {"max_body_bytes": 10}})
    shipped = yaml.safe_load((ROOT / "proxy_config.yaml").read_text())
    assert shipped["litellm_settings"]["callbacks"][0] == "litellm_plugins.guard.guard_hook"
    assert shipped["litellm_plugins"]["guard"]["enabled"] is True
