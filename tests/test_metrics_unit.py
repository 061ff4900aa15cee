"""Metrics without a proxy: the dashboard and alert rules name only metrics that exist, labels stay
bounded, settings are validated, money is counted in exact integer units."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from litellm_plugins.core.settings import SettingsError, parse_settings
from litellm_plugins.metrics import multiproc, record
from litellm_plugins.metrics.instruments import OTHER, SPEC, Instruments, exposed_names

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "grafana" / "litellm-plugins.json"
RULES = ROOT / "docs" / "prometheus" / "litellm-plugins-alerts.yml"
NAME = re.compile(r"\blitellm_plugins_[a-z0-9_]+")
BASE = {"database_url": "postgresql://x/y", "redis_url": "redis://x"}


@pytest.fixture
def instruments():
    inst = Instruments(cap=5, registry=CollectorRegistry(), per_account=True, max_accounts=2)
    record.install(inst)
    yield inst
    record.install(None)


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def _rule_exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_dashboard_and_alert_rules_name_only_metrics_that_exist() -> None:
    exists = exposed_names()
    exprs = _dashboard_exprs() + _rule_exprs()
    assert len(exprs) > 20
    used = {name for e in exprs for name in NAME.findall(e)}
    assert used, "no metric named at all"
    assert used <= exists, sorted(used - exists)
    # the alerts the issue asks for are there
    text = RULES.read_text()
    for needle in ("writer_oldest_unflushed_seconds", "writer_spool_bytes", 'status="402"', "circuit_state"):
        assert needle in text


def test_docs_list_every_metric() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    for short in SPEC:
        assert f"litellm_plugins_{short}" in doc, short


def test_the_static_check_catches_a_misspelt_metric() -> None:
    assert "litellm_plugins_requests_totl" not in exposed_names()
    assert "litellm_plugins_requests_total" in exposed_names()
    assert "litellm_plugins_credits_hold_seconds_bucket" in exposed_names()


def test_label_sets_are_capped_per_metric(instruments) -> None:
    for n in range(8):
        record.request("eco", "free", f"group-{n}", "success")
    text = generate_latest(instruments.registry).decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "litellm_plugins_requests_total"]
    assert len(samples) == 6  # five label sets, then everything else under _other
    other = [s for s in samples if s.labels["model_group"] == OTHER]
    assert len(other) == 1 and other[0].value == 3


def test_money_is_integer_units_published_exactly(instruments) -> None:
    record.queued({"op": "hold", "id": "a", "account": "user:a", "amount": 1_000_001})
    record.queued({"op": "hold", "id": "b", "account": "user:b", "amount": 7})
    record.queued({"op": "settle", "id": "a", "account": "user:a", "amount": 1_000_001, "charge": 333_333})
    record.publish()
    assert instruments.held._value.get() == 7
    assert instruments.charged._value.get() == 333_333
    record.queued({"op": "void", "id": "b", "account": "user:b", "amount": 7})
    record.publish()
    assert instruments.held._value.get() == 0
    assert instruments.voided._value.get() == 7
    assert instruments.charged._value.get() == 333_333  # published once, not again


def test_per_account_series_are_capped(instruments) -> None:
    for account in ("user:a", "user:b", "user:c", "user:d"):
        record.request("eco", "free", "demo", "success", account=account)
    accounts = {labels[0] for labels in instruments.account_requests.children}
    assert accounts == {"user:a", "user:b", OTHER}


def test_per_account_metrics_do_not_exist_by_default() -> None:
    inst = Instruments(registry=CollectorRegistry())
    assert "account_requests" not in inst.metrics and not inst.per_account


def test_record_is_a_no_op_until_started() -> None:
    record.install(None)
    record.request("eco", "free", "demo", "success")
    record.queued({"op": "hold", "id": "a", "account": "user:a", "amount": 5})
    record.publish()
    assert record.active() is None


def test_settings_are_validated_naming_the_key() -> None:
    with pytest.raises(SettingsError, match=r"litellm_plugins\.metrics\.max_accounts"):
        parse_settings({**BASE, "metrics": {"enabled": True, "max_accounts": 0}})
    with pytest.raises(SettingsError, match=r"litellm_plugins\.metrics\.bogus: unknown setting"):
        parse_settings({**BASE, "metrics": {"bogus": 1}})
    settings = parse_settings({**BASE, "metrics": {"enabled": True}}).metrics
    assert settings.enabled and not settings.per_account_labels and settings.max_accounts == 100


def test_enabled_metrics_without_its_hook_stop_startup() -> None:
    from litellm_plugins.core.startup import check_callbacks

    settings = parse_settings({**BASE, "metrics": {"enabled": True}})
    with pytest.raises(SettingsError, match=r"litellm_plugins\.metrics\.metrics_hook is not listed"):
        check_callbacks(settings, {"litellm_settings": {"callbacks": ["litellm_plugins.routing.routing_hook"]}})
    check_callbacks(settings, {"litellm_settings": {"callbacks": ["litellm_plugins.metrics.metrics_hook"]}})


def test_single_process_scrapes_the_process_registry(monkeypatch) -> None:
    from prometheus_client import REGISTRY

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    assert multiproc.registry() is REGISTRY
    assert multiproc.setup() is None  # not a multiprocessing child: one worker, no directory


def test_prometheus_callback_detection_matches_litellm() -> None:
    assert multiproc.prometheus_callback_listed({"litellm_settings": {"callbacks": ["x", "prometheus"]}})
    assert multiproc.prometheus_callback_listed({"litellm_settings": {"success_callback": "prometheus"}})
    assert not multiproc.prometheus_callback_listed({"litellm_settings": {"callbacks": ["x"]}})
    assert not multiproc.prometheus_callback_listed({})
