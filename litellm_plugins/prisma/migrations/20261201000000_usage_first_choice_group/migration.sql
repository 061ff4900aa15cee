-- usage_log.model_group / deployment / provider name what served a request's final attempt (after any
-- fallback); first_choice_group keeps the group routing chose before LiteLLM tried any fallback.
-- AlterTable
ALTER TABLE "litellm_plugins"."usage_log" ADD COLUMN "first_choice_group" TEXT;
