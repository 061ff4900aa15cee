"""billing capability: exports ledger charges and grants to billing systems (docs/billing.md).

It has no LiteLLM hook: nothing runs on the request path. A trigger on the credit ledger fills the
outbox in the ledger's own transaction; a supervised job per exporter sends it.
"""
