-- The initial flashfleet schema (PostgreSQL).
-- Ids are UUIDs kept as text and JSON is kept as text, so that PostgreSQL and SQLite share one
-- diesel schema and one query code path (see ARCHITECTURE.md, "Database backends").
-- Timestamps are UTC, without time zone.

CREATE TABLE organizations (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    name TEXT NOT NULL CONSTRAINT organizations_name_key UNIQUE,
    slug TEXT NOT NULL CONSTRAINT organizations_slug_key UNIQUE,
    is_active BOOLEAN NOT NULL,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL
);

CREATE TABLE users (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    username TEXT NOT NULL CONSTRAINT users_username_key UNIQUE,
    email TEXT NOT NULL,
    is_superuser BOOLEAN NOT NULL,
    is_active BOOLEAN NOT NULL,
    password_hash TEXT,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL
);

CREATE TABLE memberships (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'manager', 'member')),
    created TIMESTAMP NOT NULL,
    CONSTRAINT memberships_pkey PRIMARY KEY (user_id, organization_id)
);
CREATE INDEX memberships_organization_id_idx ON memberships (organization_id);

CREATE TABLE api_tokens (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL CONSTRAINT api_tokens_key_hash_key UNIQUE,
    prefix TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    last_used TIMESTAMP
);
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

CREATE TABLE categories (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    organization_id TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL,
    CONSTRAINT categories_organization_name_key UNIQUE (organization_id, name)
);
-- NULLs are distinct in a UNIQUE constraint: shared categories need their own index.
CREATE UNIQUE INDEX categories_shared_name_key ON categories (name) WHERE organization_id IS NULL;

CREATE TABLE builds (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    category_id TEXT NOT NULL REFERENCES categories (id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    os TEXT,
    changelog TEXT NOT NULL,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL,
    CONSTRAINT builds_category_version_key UNIQUE (category_id, version)
);
CREATE INDEX builds_os_idx ON builds (os);
CREATE INDEX builds_created_idx ON builds (created);

CREATE TABLE firmware_images (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    build_id TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    image_type TEXT NOT NULL,
    file_name TEXT NOT NULL,
    size BIGINT NOT NULL CHECK (size >= 0),
    sha256 TEXT NOT NULL,
    storage_key TEXT NOT NULL,
    metadata TEXT,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL,
    CONSTRAINT firmware_images_build_type_key UNIQUE (build_id, image_type)
);

CREATE TABLE device_groups (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL,
    CONSTRAINT device_groups_organization_name_key UNIQUE (organization_id, name)
);

CREATE TABLE devices (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    organization_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    mac_address TEXT NOT NULL,
    model TEXT NOT NULL,
    board_name TEXT NOT NULL,
    os TEXT NOT NULL,
    management_ip TEXT,
    group_id TEXT REFERENCES device_groups (id) ON DELETE SET NULL,
    is_deactivated BOOLEAN NOT NULL,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL,
    CONSTRAINT devices_organization_name_key UNIQUE (organization_id, name),
    CONSTRAINT devices_organization_mac_key UNIQUE (organization_id, mac_address)
);
CREATE INDEX devices_model_idx ON devices (model);
CREATE INDEX devices_group_id_idx ON devices (group_id);

CREATE TABLE credentials (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    organization_id TEXT REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    connection_type TEXT NOT NULL,
    username TEXT NOT NULL,
    port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    secret_kind TEXT NOT NULL CHECK (secret_kind IN ('password', 'private_key')),
    secret_ciphertext TEXT NOT NULL,
    auto_add BOOLEAN NOT NULL,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL,
    CONSTRAINT credentials_organization_name_key UNIQUE (organization_id, name)
);
CREATE UNIQUE INDEX credentials_shared_name_key ON credentials (name) WHERE organization_id IS NULL;

CREATE TABLE device_connections (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    credentials_id TEXT NOT NULL REFERENCES credentials (id) ON DELETE CASCADE,
    connection_type TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    is_working BOOLEAN,
    failure_reason TEXT NOT NULL,
    last_attempt TIMESTAMP,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL,
    CONSTRAINT device_connections_device_credentials_key UNIQUE (device_id, credentials_id)
);
CREATE INDEX device_connections_credentials_id_idx ON device_connections (credentials_id);

CREATE TABLE device_firmwares (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    device_id TEXT NOT NULL CONSTRAINT device_firmwares_device_key UNIQUE
        REFERENCES devices (id) ON DELETE CASCADE,
    image_id TEXT NOT NULL REFERENCES firmware_images (id) ON DELETE CASCADE,
    installed BOOLEAN NOT NULL,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL
);
CREATE INDEX device_firmwares_image_id_idx ON device_firmwares (image_id);

CREATE TABLE batch_upgrade_operations (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    build_id TEXT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    group_id TEXT REFERENCES device_groups (id) ON DELETE SET NULL,
    status TEXT NOT NULL CHECK (status IN ('idle', 'in-progress', 'success', 'failed', 'cancelled')),
    upgrade_options TEXT NOT NULL,
    upgrade_all BOOLEAN NOT NULL,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL
);
CREATE INDEX batch_upgrade_operations_build_id_idx ON batch_upgrade_operations (build_id);

CREATE TABLE upgrade_operations (
    id TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    image_id TEXT REFERENCES firmware_images (id) ON DELETE SET NULL,
    batch_id TEXT REFERENCES batch_upgrade_operations (id) ON DELETE CASCADE,
    status TEXT NOT NULL CHECK (status IN ('in-progress', 'success', 'failed', 'cancelled', 'aborted')),
    phase TEXT NOT NULL,
    progress INTEGER NOT NULL CHECK (progress BETWEEN 0 AND 100),
    log TEXT NOT NULL,
    upgrade_options TEXT NOT NULL,
    attempts INTEGER NOT NULL CHECK (attempts >= 0),
    next_attempt_at TIMESTAMP,
    started TIMESTAMP,
    finished TIMESTAMP,
    details TEXT NOT NULL,
    created TIMESTAMP NOT NULL,
    modified TIMESTAMP NOT NULL
);
-- At most one unfinished operation per device, enforced by the database under concurrency.
CREATE UNIQUE INDEX upgrade_operations_one_unfinished_per_device
    ON upgrade_operations (device_id) WHERE status = 'in-progress';
CREATE INDEX upgrade_operations_device_id_idx ON upgrade_operations (device_id);
CREATE INDEX upgrade_operations_batch_id_status_idx ON upgrade_operations (batch_id, status);
CREATE INDEX upgrade_operations_image_id_idx ON upgrade_operations (image_id);
