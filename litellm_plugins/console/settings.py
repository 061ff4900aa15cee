"""Settings of the web console (`litellm_plugins.console` in proxy_config.yaml).

The console is static files plus the public API, so it is on by default; an operator who does not
want a page on the proxy turns it off and ``/plugins/ui/`` is then not mounted at all.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ConsoleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Serve the web console at /plugins/ui/.")
