"""``litellm-plugins credits grant|balance|ledger|verify`` (operator commands, straight to Postgres).

``verify`` exits 1 and prints every difference when a balance disagrees with its ledger.
"""

from __future__ import annotations

import argparse
import json

from litellm_plugins.cli import CliError, settings_from
from litellm_plugins.core.db import create_pool, schema_connection
from litellm_plugins.credits import service, store
from litellm_plugins.credits.money import fmt


async def _grant(args: argparse.Namespace) -> int:
    settings, _ = settings_from(args)
    try:
        account = service.check_account(args.account)
        units = service.parse_amount(args.amount, settings.credits)
        key = service.check_idempotency_key(args.idempotency_key)
    except service.GrantError as exc:
        raise CliError(str(exc)) from None
    pool = await create_pool(settings.database_url, 1, 2)
    redis = None
    try:
        from litellm_plugins.core.redis import create_client
        from litellm_plugins.credits.cache import CreditCache

        redis = create_client(settings.redis_url)
        cache = CreditCache(redis, settings.redis_key_prefix)
        try:
            result = await service.grant(pool, cache, settings.credits, account, units, key, args.note, args.create)
        except store.UnknownAccount:
            raise CliError(f"unknown account {account!r} (use --create to open it)") from None
        except store.IdempotencyConflict as exc:
            raise CliError(str(exc)) from None
    finally:
        await pool.close()
        if redis is not None:
            await redis.aclose()
    print(json.dumps(result))
    return 0


async def _balance(args: argparse.Namespace) -> int:
    settings, _ = settings_from(args)
    async with schema_connection(settings.database_url) as conn:
        row = await store.balance(conn, args.account)
    if row is None:
        raise CliError(f"unknown account {args.account!r}")
    print(json.dumps({"account": args.account, "balance": fmt(row["balance"]), "held": fmt(row["held"]),
                      "available": fmt(row["balance"] - row["held"])}))
    return 0


async def _ledger(args: argparse.Namespace) -> int:
    settings, _ = settings_from(args)
    async with schema_connection(settings.database_url) as conn:
        rows = await store.ledger(conn, args.account, args.limit, None)
    for row in rows:
        print(json.dumps(service.ledger_entry(row)))
    return 0


async def _verify(args: argparse.Namespace) -> int:
    settings, _ = settings_from(args)
    async with schema_connection(settings.database_url) as conn:
        problems = await store.verify(conn)
        accounts = await conn.fetchval("SELECT count(*) FROM credit_accounts")
    for line in problems:
        print(f"MISMATCH {line}")
    print(f"checked {accounts} account(s): {'OK' if not problems else f'{len(problems)} difference(s)'}")
    return 0 if not problems else 2


def register(subparsers: argparse._SubParsersAction) -> None:
    credits = subparsers.add_parser("credits", help="prepaid credits: grant, balance, ledger, verify")
    sub = credits.add_subparsers(dest="credits_command", required=True)
    p = sub.add_parser("grant", help="grant or top up credits (idempotent by --idempotency-key)")
    p.add_argument("account", help="user:<id>, team:<id> or key:<hash>")
    p.add_argument("amount", help="credits, decimal (e.g. 25 or 12.5)")
    p.add_argument("--idempotency-key", required=True)
    p.add_argument("--note")
    p.add_argument("--create", action="store_true", help="open the account if it does not exist yet")
    p.set_defaults(run=_grant)
    p = sub.add_parser("balance", help="balance, held and available credits of an account")
    p.add_argument("account")
    p.set_defaults(run=_balance)
    p = sub.add_parser("ledger", help="latest ledger entries of an account (JSON lines)")
    p.add_argument("account")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(run=_ledger)
    p = sub.add_parser("verify", help="check every balance against its ledger; non-zero exit on differences")
    p.set_defaults(run=_verify)
