DROP INDEX upgrade_operations_claimable_idx;
ALTER TABLE upgrade_operations DROP COLUMN lease_expires_at;
ALTER TABLE upgrade_operations DROP COLUMN lease_owner;
