"""The supported LiteLLM range: declared once (pyproject.toml = litellm_plugins.core.versions),
the default install at its newest end, and a proxy outside it refused at startup with one line."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from litellm_plugins.core.versions import (
    LOWEST_TESTED, NEWEST_TESTED, SUPPORTED_LITELLM, UnsupportedLiteLLM, check_litellm)
from tests.support.proxy import ROOT

ALL_OFF = {cap: {"enabled": False} for cap in ("routing", "byok", "credits", "health")}


def declared_litellm() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(r"litellm\b", d)]
    return spec


def default_litellm() -> str:
    (pin,) = re.findall(r"^litellm==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    return pin


def test_pyproject_declares_the_range_startup_enforces() -> None:
    assert declared_litellm() == f"litellm[proxy]{SUPPORTED_LITELLM}"
    spec = SpecifierSet(SUPPORTED_LITELLM)
    # pip must never pick the compromised upload, nor any other 1.107 build
    assert not any(spec.contains(v) for v in ("1.107.0", "1.107.0.post1", "1.107.1"))
    assert spec.contains(LOWEST_TESTED) and spec.contains(NEWEST_TESTED)
    assert not spec.contains("1.102.3") and not spec.contains("1.108.8")
    assert default_litellm() == NEWEST_TESTED


def test_this_environment_runs_a_supported_litellm() -> None:
    installed = importlib.metadata.version("litellm")
    assert check_litellm(installed) == installed
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        assert installed == default_litellm(), "the quick-start .venv must run the default release"


@pytest.mark.parametrize("version", ["1.102.4", "1.103.5", "1.106.12", "1.108.0", "1.108.7"])
def test_releases_in_the_range_are_accepted(version: str) -> None:
    assert check_litellm(version) == version


@pytest.mark.parametrize("version", ["1.102.3", "1.107.0", "1.107.2", "1.108.8", "1.109.0",
                                     "1.108.7rc1", "not-a-version"])
def test_releases_outside_the_range_are_refused_in_one_line(version: str) -> None:
    with pytest.raises(UnsupportedLiteLLM) as refused:
        check_litellm(version)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"LiteLLM {version} is installed; ")
    assert f"supports litellm{SUPPORTED_LITELLM}" in message


def test_proxy_on_an_unsupported_litellm_refuses_to_start(start_proxy, tmp_path: Path) -> None:
    # The installed litellm code, but its distribution metadata says 1.107.0: a dist-info found
    # earlier on sys.path is what importlib.metadata (and so the startup check) reports.
    dist = tmp_path / "litellm-1.107.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: litellm\nVersion: 1.107.0\n")
    proxy = start_proxy(plugins=ALL_OFF, name="old-litellm", wait=False,
                        env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert proxy.wait_exit(timeout=120) == 3
    log = proxy.log_text()
    lines = [line for line in log.splitlines() if "litellm-plugins: startup refused" in line]
    assert lines == [f"litellm-plugins: startup refused: LiteLLM 1.107.0 is installed; litellm-plugins "
                     f"supports litellm{SUPPORTED_LITELLM} (tested on {LOWEST_TESTED} and "
                     f"{NEWEST_TESTED}; see docs/litellm.md)"], log[-3000:]
    assert "Traceback" not in log
