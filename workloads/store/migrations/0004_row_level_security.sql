-- Tenant isolation: every row carries its tenant, and a session only sees and writes the
-- rows of the tenant named by its `xin.tenant` setting (set by `xin_store::connect` on each
-- pooled connection). FORCE applies the policies to the tables' owner too; an unset setting
-- matches nothing. Superusers bypass row-level security: workloads must connect as an
-- ordinary role (docs/orchestrator.md, "Tenant isolation").
DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['gateway_inbox', 'conversations', 'messages', 'knowledge_chunks', 'outbox_events'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant = current_setting('xin.tenant', true))
            WITH CHECK (tenant = current_setting('xin.tenant', true))$p$, t);
    END LOOP;
END $$;
