"""``litellm-plugins credits grant|balance|caps|ledger|verify`` (operator commands, straight to Postgres).

``verify`` exits 1 and prints every difference when a balance disagrees with its ledger.
"""

from __future__ import annotations

import argparse
import json

from litellm_plugins.cli import CliError, settings_from
from litellm_plugins.core.db import create_pool, schema_connection
from litellm_plugins.credits import service, store
from litellm_plugins.credits.allowance import Allowances
from litellm_plugins.credits.money import credits_to_units, fmt


async def _grant(args: argparse.Namespace) -> int:
    settings, _ = settings_from(args)
    try:
        account = service.check_account(args.account)
        units = service.parse_amount(args.amount, settings.credits)
        key = service.check_idempotency_key(args.idempotency_key)
        kind = service.check_kind(args.kind)
        expires_at = service.check_expires_at(args.expires_at)
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
            result = await service.grant(pool, cache, settings.credits, account, units, key, args.note, args.create,
                                         kind, expires_at)
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


async def _with_cache(settings, work):  # noqa: ANN001, ANN202 - (settings, async fn(conn, cache))
    from litellm_plugins.core.redis import create_client
    from litellm_plugins.credits.cache import CreditCache

    redis = create_client(settings.redis_url)
    try:
        async with schema_connection(settings.database_url) as conn:
            return await work(conn, CreditCache(redis, settings.redis_key_prefix))
    finally:
        await redis.aclose()


async def _balance(args: argparse.Namespace) -> int:
    """The same view as ``GET /plugins/credits/balance`` (held from Postgres: no lease detail)."""
    settings, _ = settings_from(args)
    starting = credits_to_units(settings.credits.starting_grant)

    async def work(conn, cache):  # noqa: ANN001, ANN202
        return await service.balance_view(conn, cache, Allowances(settings.credits), args.account, args.tier,
                                          starting)

    row, view = await _with_cache(settings, work)
    if row is None:
        raise CliError(f"unknown account {args.account!r}")
    print(json.dumps({"account": args.account, "balance": fmt(row["balance"]), "held": fmt(row["held"]),
                      "available": fmt(row["balance"] - row["held"]), **(view or {})}))
    return 0


async def _caps(args: argparse.Namespace) -> int:
    settings, _ = settings_from(args)
    body = {k: (None if v == "none" else v) for k, v in (("day", args.day), ("week", args.week),
                                                            ("month", args.month)) if v is not None}
    try:
        account = service.check_account(args.account)
        caps = service.parse_caps(body)
    except service.GrantError as exc:
        raise CliError(str(exc)) from None

    async def work(conn, cache):  # noqa: ANN001, ANN202
        if not await store.set_caps(conn, account, caps):
            raise CliError(f"unknown account {account!r}")
        await service.push_state(cache, conn, account)
        return await conn.fetchrow("SELECT cap_day, cap_week, cap_month FROM credit_accounts WHERE account = $1",
                                   account)

    row = await _with_cache(settings, work)
    print(json.dumps({"account": account, **{k: fmt(row[f"cap_{k}"]) for k in ("day", "week", "month")}}))
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
    credits = subparsers.add_parser("credits", help="prepaid credits: grant, balance, caps, ledger, verify")
    sub = credits.add_subparsers(dest="credits_command", required=True)
    p = sub.add_parser("grant", help="grant or top up credits (idempotent by --idempotency-key)")
    p.add_argument("account", help="user:<id>, team:<id> or key:<hash>")
    p.add_argument("amount", help="credits, decimal (e.g. 25 or 12.5)")
    p.add_argument("--idempotency-key", required=True)
    p.add_argument("--note")
    p.add_argument("--create", action="store_true", help="open the account if it does not exist yet")
    p.add_argument("--kind", choices=("paid", "promotional"), default="paid",
                   help="paid (default) or promotional (spent first, before paid credits)")
    p.add_argument("--expires-at", help="ISO 8601 time the grant's remainder expires (e.g. 2027-01-31T00:00:00Z)")
    p.set_defaults(run=_grant)
    p = sub.add_parser("balance", help="balance, buckets, allowance, spend and caps of an account")
    p.add_argument("account")
    p.add_argument("--tier", help="renew the allowance as this tier (default: the account's last known tier)")
    p.set_defaults(run=_balance)
    p = sub.add_parser("caps", help="set an account's own spend caps (credits per day / week / month)")
    p.add_argument("account")
    for kind in ("day", "week", "month"):
        p.add_argument(f"--{kind}", help=f"credits per {kind}, or 'none' to remove the cap")
    p.set_defaults(run=_caps)
    p = sub.add_parser("ledger", help="latest ledger entries of an account (JSON lines)")
    p.add_argument("account")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(run=_ledger)
    p = sub.add_parser("verify", help="check every balance against its ledger; non-zero exit on differences")
    p.set_defaults(run=_verify)
