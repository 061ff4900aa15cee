"""Shared plumbing: settings, database pool and migrator, Redis, errors, HTTP routes, startup."""
