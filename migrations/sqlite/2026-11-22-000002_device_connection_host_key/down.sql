ALTER TABLE device_connections DROP COLUMN host_key;
