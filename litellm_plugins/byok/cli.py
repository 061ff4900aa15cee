"""``litellm-plugins byok …``: operator commands for the key vault.

``rotate`` re-encrypts every stored key under the newest encryption key. Procedure: put the new key
first in LITELLM_PLUGINS_BYOK_ENCRYPTION_KEYS (keeping the old one after it), restart or roll the
proxies, run ``litellm-plugins byok rotate``, then drop the old key. It works in committed batches
(re-run it after an interruption: finished rows are skipped) and is safe while proxies serve.
``status`` shows how many keys each encryption key still protects.
"""

from __future__ import annotations

import argparse

from litellm_plugins.core.db import create_pool
from litellm_plugins.core.errors import SettingsError


def _cipher(settings):  # noqa: ANN001, ANN202
    from litellm_plugins.byok.crypto import Cipher, invalid_key_indexes
    keys = settings.byok.encryption_keys
    if not keys:
        raise SettingsError("litellm_plugins.byok.encryption_keys: no encryption key is set")
    bad = invalid_key_indexes(keys)
    if bad:
        raise SettingsError(f"litellm_plugins.byok.encryption_keys[{bad[0]}]: not a valid Fernet key")
    return Cipher(keys)


async def _rotate(args: argparse.Namespace) -> int:
    from litellm_plugins.byok import store
    from litellm_plugins.byok.hook import ALL_ACCOUNTS, INVALIDATION_CHANNEL
    from litellm_plugins.cli import settings_from
    from litellm_plugins.core.redis import create_client
    settings, _ = settings_from(args)
    cipher = _cipher(settings)
    pool = await create_pool(settings.database_url, 1, 2)
    try:
        rotated, failed = await store.rotate(pool, cipher, batch_size=args.batch_size)
        remaining = await pool.fetchval(
            "SELECT count(*) FROM byok_keys WHERE enc_key_id <> $1", cipher.current_key_id)
    finally:
        await pool.close()
    redis = create_client(settings.redis_url)
    try:
        await redis.publish((settings.redis_key_prefix + INVALIDATION_CHANNEL).encode(), ALL_ACCOUNTS.encode())
    except Exception as exc:  # noqa: BLE001 - caches expire on their own; rotation itself is done
        print(f"warning: could not notify proxies through Redis ({type(exc).__name__})")
    finally:
        await redis.aclose()
    print(f"rotated {rotated} key(s) to encryption key {cipher.current_key_id}; "
          f"{failed} could not be decrypted with any configured key; {remaining} not under the newest key")
    return 0 if failed == 0 and remaining == 0 else 1


async def _status(args: argparse.Namespace) -> int:
    from litellm_plugins.cli import settings_from
    settings, _ = settings_from(args)
    cipher = _cipher(settings)
    pool = await create_pool(settings.database_url, 1, 1)
    try:
        rows = await pool.fetch("SELECT enc_key_id, count(*) AS n FROM byok_keys GROUP BY enc_key_id ORDER BY 1")
    finally:
        await pool.close()
    known = {key_id: index for index, key_id in enumerate(cipher.key_ids)}
    for row in rows:
        index = known.get(row["enc_key_id"])
        where = f"encryption key [{index}]" + (" (newest)" if index == 0 else "") if index is not None \
            else "an encryption key that is NOT configured"
        print(f"{row['n']:>8} key(s) under {row['enc_key_id']}: {where}")
    if not rows:
        print("no stored keys")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    byok = subparsers.add_parser("byok", help="BYOK key vault: rotate the encryption key, status")
    sub = byok.add_subparsers(dest="byok_command", required=True)
    p = sub.add_parser("rotate", help="re-encrypt every stored key under the newest encryption key")
    p.add_argument("--batch-size", type=int, default=100, help="rows per committed batch (default: %(default)s)")
    p.set_defaults(run=_rotate)
    p = sub.add_parser("status", help="how many stored keys each encryption key protects")
    p.set_defaults(run=_status)
