"""Test harness: a fake OpenAI-compatible provider, real proxy processes, Postgres/Redis helpers."""
