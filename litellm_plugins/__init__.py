"""Plugins for the stock LiteLLM proxy: power-level routing, BYOK, prepaid credits, provider health.

Each capability is its own folder (``hook``, ``settings``, ``store``, ``api``); shared plumbing
lives in :mod:`litellm_plugins.core`.
"""

__version__ = "0.1.0"
