-- The order of lists (see crates/flashfleet-db/src/ordering.rs).
-- Text that lists are ordered by compares byte by byte: SQLite's default BINARY collation already
-- does (the PostgreSQL migration declares those columns `COLLATE "C"` to match).

-- The build list's default order (-created, -version, then the id): its first page reads ten
-- index entries instead of sorting every build. It replaces the index on `created` alone.
DROP INDEX builds_created_idx;
CREATE INDEX builds_list_order_idx ON builds (created DESC, version DESC, id);

-- Operations newest first: those of one batch (the batch detail lists every one of them), and
-- all of them (the operation list, which grows with every upgrade ever queued).
CREATE INDEX upgrade_operations_batch_list_order_idx ON upgrade_operations (batch_id, created DESC, id);
CREATE INDEX upgrade_operations_list_order_idx ON upgrade_operations (created DESC, id);
