-- Fencing: every claim of an operation increments its lease epoch, and every engine write for
-- the operation is conditioned on the epoch it claimed with. The flash record: how many times
-- the operation entered `flashing` (each time just before a flash command), the device's boot
-- id read just before the last one, and the image flashed.
ALTER TABLE upgrade_operations ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE upgrade_operations ADD COLUMN flash_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE upgrade_operations ADD COLUMN flash_boot_id TEXT;
-- The image as it was when the flash was recorded (JSON), so that an operation past its flash
-- can still be verified once its image was deleted.
ALTER TABLE upgrade_operations ADD COLUMN flash_image TEXT;
-- Operations recorded at or past the flash before this migration were flashed once.
UPDATE upgrade_operations SET flash_attempts = 1
    WHERE phase IN ('flashing', 'waiting-for-reboot', 'reconnecting', 'verifying-version',
                    'writing-checksum')
       OR (phase = 'done' AND status = 'success' AND progress = 100 AND log NOT LIKE '%upgrade not needed%');
