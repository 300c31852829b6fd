DROP INDEX upgrade_operations_list_order_idx;
DROP INDEX upgrade_operations_batch_list_order_idx;
DROP INDEX builds_list_order_idx;
CREATE INDEX builds_created_idx ON builds (created);
ALTER TABLE firmware_images ALTER COLUMN image_type SET DATA TYPE TEXT COLLATE "default";
ALTER TABLE builds ALTER COLUMN version SET DATA TYPE TEXT COLLATE "default";
ALTER TABLE categories ALTER COLUMN name SET DATA TYPE TEXT COLLATE "default";
