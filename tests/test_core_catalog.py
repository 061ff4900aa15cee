"""core.catalog: which deployments lack their platform config, decided from the raw config and
confirmed against what LiteLLM's router resolved (pure: no proxy)."""

from __future__ import annotations

import copy

from litellm import Router

from litellm_plugins.core.catalog import Catalog, startup_line

CONFIG = {"model_list": [
    {"model_name": "demo", "litellm_params": {"model": "openai/demo", "api_key": "x", "mock_response": "hi"}},
    {"model_name": "groq-a", "litellm_params": {"model": "groq/llama-a", "api_key": "os.environ/CAT_GROQ_KEY"}},
    {"model_name": "mixed", "litellm_params": {"model": "together_ai/m", "api_key": "os.environ/CAT_TOGETHER_KEY"}},
    {"model_name": "mixed", "litellm_params": {"model": "together_ai/m", "api_key": "os.environ/CAT_TOGETHER_KEY2"}},
    {"model_name": "local", "litellm_params": {"model": "ollama_chat/llama3", "api_base": "os.environ/CAT_OLLAMA"}},
    {"model_name": "set", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/CAT_SET_KEY"}},
]}


def build(monkeypatch, resolved_extra: dict[str, str] | None = None) -> Catalog:
    for name in ("CAT_GROQ_KEY", "CAT_TOGETHER_KEY", "CAT_OLLAMA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CAT_TOGETHER_KEY2", "sk-together-platform")
    monkeypatch.setenv("CAT_SET_KEY", "sk-openai-platform")
    monkeypatch.setenv("CAT_GROQ_KEY", "")  # empty counts as unset
    router = Router(model_list=copy.deepcopy(CONFIG["model_list"]))
    for deployment in router.model_list:  # what a secret manager would have resolved
        for key, value in (resolved_extra or {}).items():
            if deployment["model_name"] == key:
                deployment["litellm_params"]["api_key"] = value
    return Catalog(router, CONFIG)


def test_missing_settings_are_found_and_classified(monkeypatch) -> None:
    cat = build(monkeypatch)
    by_group: dict[str, list] = {}
    for entry in cat.entries.values():
        by_group.setdefault(entry.group, []).append(entry)
    assert [e.status for e in by_group["demo"]] == [None]
    assert [(e.status, e.missing, e.provider) for e in by_group["groq-a"]] == [("byok_only", ("CAT_GROQ_KEY",), "groq")]
    assert sorted(e.status or "keyed" for e in by_group["mixed"]) == ["byok_only", "keyed"]
    assert [(e.status, e.missing) for e in by_group["local"]] == [("unconfigured", ("CAT_OLLAMA",))]
    assert [e.status for e in by_group["set"]] == [None]
    # a group is skipped only when *every* deployment lacks its config; unconfigured needs no provider
    assert cat.byok_only_groups == {"groq-a": frozenset({"groq"}), "local": frozenset()}


def test_keyless_for_a_caller_depends_on_their_own_keys(monkeypatch) -> None:
    cat = build(monkeypatch)
    groq_id = next(i for i, e in cat.entries.items() if e.group == "groq-a")
    local_id = next(i for i, e in cat.entries.items() if e.group == "local")
    assert cat.keyless_for(()) == cat.byok_only and groq_id in cat.byok_only
    with_groq = cat.keyless_for(frozenset({"groq"}))
    assert groq_id not in with_groq and local_id in with_groq  # a key cannot supply an endpoint
    assert local_id in cat.keyless_for(frozenset({"ollama_chat"}))


def test_a_value_the_router_resolved_after_all_is_not_missing(monkeypatch) -> None:
    cat = build(monkeypatch, resolved_extra={"groq-a": "sk-from-a-secret-manager"})
    assert "groq-a" not in cat.byok_only_groups


def test_startup_line_lists_each_once(monkeypatch) -> None:
    build(monkeypatch)
    line = startup_line(CONFIG)
    assert line is not None and line.count("\n") == 0
    assert "3 deployment(s)" in line and "groq-a (CAT_GROQ_KEY)" in line and "local (CAT_OLLAMA)" in line
    assert "demo" not in line and "CAT_SET_KEY" not in line
    monkeypatch.setenv("CAT_GROQ_KEY", "k")
    monkeypatch.setenv("CAT_TOGETHER_KEY", "k")
    monkeypatch.setenv("CAT_OLLAMA", "http://gpu:11434")
    assert startup_line(CONFIG) is None
