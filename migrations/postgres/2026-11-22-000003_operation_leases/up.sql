-- The durable queue: an engine claims an unfinished operation by writing its name and a lease
-- expiry; it renews the lease while it works (heartbeat). An operation whose lease expired
-- (its engine crashed) is claimed again and recovered by its phase.
ALTER TABLE upgrade_operations ADD COLUMN lease_owner TEXT;
ALTER TABLE upgrade_operations ADD COLUMN lease_expires_at TIMESTAMP;
CREATE INDEX upgrade_operations_claimable_idx
    ON upgrade_operations (next_attempt_at, lease_expires_at) WHERE status = 'in-progress';
