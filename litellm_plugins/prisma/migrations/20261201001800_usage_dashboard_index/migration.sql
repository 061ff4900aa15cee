-- The console's per-account dashboard (usage/store.py dashboard) reads only these columns of one
-- account's time range: with all of them in the index it is an index-only scan instead of one heap
-- page per row. Same leading key as the index it replaces, so every existing query keeps its plan.
-- DropIndex
DROP INDEX "litellm_plugins"."usage_log_account_created_at_idx";

-- CreateIndex
CREATE INDEX "usage_log_account_dashboard_idx" ON "litellm_plugins"."usage_log"("account", "created_at", "power_level", "provider", "model_group", "requested_model", "byok", "status", "credits_charged", "cost_usd", "prompt_tokens", "completion_tokens", "latency_ms");
