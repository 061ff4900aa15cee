-- The tier a request was made under (credits' tier of the caller: key, then team metadata, else the
-- configured default), so the console's accounts list can show each account's tier as of its latest
-- request. NULL for rows written before this migration. Adding a nullable column without a default
-- is a catalog change only (no table rewrite).

-- AlterTable
ALTER TABLE "litellm_plugins"."usage_log" ADD COLUMN "tier" TEXT;
