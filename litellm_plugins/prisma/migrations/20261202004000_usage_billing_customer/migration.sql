-- The customer a billing system knows the request's account by (docs/billing.md, Mappings): the
-- caller's key metadata `billing_customer_id`, else its team's; NULL means "the account id". Recorded
-- by credits with the usage row because the billing exporters run in the background and cannot see
-- key metadata. Adding a nullable column without a default is a catalog change only (no table rewrite).

-- AlterTable
ALTER TABLE "litellm_plugins"."usage_log" ADD COLUMN "billing_customer" TEXT;
