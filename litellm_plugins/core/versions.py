"""Which LiteLLM releases this package runs on, and the startup check that enforces it.

The range is the one ``pyproject.toml`` declares (a test keeps the two identical); every LiteLLM
fact our hooks rely on was verified on both ends of it (docs/litellm.md). A proxy outside the range
might still start and then misbehave in ways no error reports (a hook that no longer fires, a key
injected into a shared deployment), so startup refuses it instead.

Bounds: 1.102.4 is the oldest release everything was verified on; 1.107.* is excluded because
1.107.0 was a compromised (malicious) upload; 1.108.7 is the newest release of LiteLLM's 1.108 LTS
line that installs from the registry we build with (1.108.8+ need packages it does not serve).
"""

from __future__ import annotations

from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

SUPPORTED_LITELLM = ">=1.102.4,!=1.107.*,<=1.108.7"
LOWEST_TESTED = "1.102.4"
NEWEST_TESTED = "1.108.7"


class UnsupportedLiteLLM(Exception):
    """The installed LiteLLM is outside :data:`SUPPORTED_LITELLM` (or its version is unreadable)."""


def installed_litellm() -> str:
    return metadata.version("litellm")


def check_litellm(installed: str | None = None) -> str:
    """Return the installed LiteLLM version, or raise with one line naming it and the range."""
    version = installed if installed is not None else installed_litellm()
    try:
        parsed = Version(version)
    except InvalidVersion:
        parsed = None
    # Pre-releases (1.108.7rc1) are refused like any other untested build.
    if parsed is None or not SpecifierSet(SUPPORTED_LITELLM).contains(parsed, prereleases=False):
        raise UnsupportedLiteLLM(
            f"LiteLLM {version} is installed; litellm-plugins supports litellm{SUPPORTED_LITELLM} "
            f"(tested on {LOWEST_TESTED} and {NEWEST_TESTED}; see docs/litellm.md)")
    return version
