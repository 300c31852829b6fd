-- The SSH host key a device presented at first contact ("<algorithm> <base64>"), checked at every
-- later connection; replaced only after a flash that did not keep the configuration.
ALTER TABLE device_connections ADD COLUMN host_key TEXT;
