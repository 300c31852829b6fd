ALTER TABLE upgrade_operations DROP COLUMN flash_image;
ALTER TABLE upgrade_operations DROP COLUMN flash_boot_id;
ALTER TABLE upgrade_operations DROP COLUMN flash_attempts;
ALTER TABLE upgrade_operations DROP COLUMN lease_epoch;
