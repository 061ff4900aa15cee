"""Where a credit hold is placed: interchangeable stores behind one call (Kong rate-limiting's anatomy).

* ``redis`` -- the normal store: the ``HOLD`` / ``CARVE`` Lua scripts of ``credits/cache.py`` and the
  leases of ``credits/lease.py`` (left where they are: they work, and moving them changes nothing).
* ``postgres`` (``postgres.py``) -- while Redis is unreachable: one row-locked hold per request in the
  book of record, and the switch back to Redis with Redis rebuilt from Postgres.

Both answer ``(status, balance, held)`` with status 1 placed / 0 insufficient, and both place holds
that the rest of the ledger (writer, settle, void, reconciler, rebuild) treats the same way: one
``credit_holds`` row per request. docs/credits.md, "Redis down", has the rules that keep it exact.
"""
