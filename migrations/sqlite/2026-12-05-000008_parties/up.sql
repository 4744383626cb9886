-- Who stands behind a service account (the four-eyes "party"): its creator, and whoever created
-- (or rotated in) each of its keys. Names are principal resource names (`users/{id}`,
-- `serviceAccounts/{id}`); NULL where nobody did (the bootstrap) or the trail does not say.
ALTER TABLE service_accounts ADD COLUMN created_by TEXT;
ALTER TABLE service_account_keys ADD COLUMN created_by TEXT;

-- Accounts and keys made before this migration: the audit trail names their creators.
UPDATE service_accounts SET created_by = (
    SELECT e.actor_id FROM audit_events e
    WHERE e.action = 'service_account.created'
      AND e.target_id = 'serviceAccounts/' || service_accounts.id
    ORDER BY e.seq LIMIT 1
);
UPDATE service_account_keys SET created_by = (
    SELECT e.actor_id FROM audit_events e
    WHERE (e.action = 'service_account.key_created'
           AND e.target_id = 'serviceAccounts/' || service_account_keys.service_account_id
                             || '/keys/' || service_account_keys.id)
       OR (e.action = 'service_account.key_rotated'
           AND e.detail LIKE 'replaced by serviceAccounts/' || service_account_keys.service_account_id
                             || '/keys/' || service_account_keys.id || ';%')
    ORDER BY e.seq LIMIT 1
);
