"""metrics capability; `metrics_hook` (in `litellm_settings.callbacks`) is resolved lazily, see core.lazy.

Metrics: our counters on LiteLLM's ``/metrics`` (or ``/plugins/metrics``), for Prometheus/Grafana.

``record`` is what the other capabilities call (no-ops until this capability starts; nothing there
imports ``prometheus_client``, whose multiprocess mode must be chosen before its first import);
``instruments`` defines every metric; ``hook`` counts request outcomes and starts the sampler;
``api`` serves ``/plugins/metrics`` when LiteLLM's ``prometheus`` callback is not listed. docs/metrics.md.
"""

from litellm_plugins.core.lazy import hook_getattr

__getattr__ = hook_getattr(__name__)
