DROP INDEX upgrade_operations_list_order_idx;
DROP INDEX upgrade_operations_batch_list_order_idx;
DROP INDEX builds_list_order_idx;
CREATE INDEX builds_created_idx ON builds (created);
