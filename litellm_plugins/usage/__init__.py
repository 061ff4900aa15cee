"""Usage log: one row per request (success, failure, pre-call rejection), written off the request path.

Rows are produced by the credits hook (it already sees every outcome) and written by the credits
writer in batches; this package owns the table's queries, the ``/plugins/usage`` API and the
``litellm-plugins usage`` CLI. It is mounted through ``litellm_plugins.credits.api``.
"""
