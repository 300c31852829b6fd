//! The diesel schema, shared by both backends.
//!
//! Written by hand to match `migrations/postgres` and `migrations/sqlite`, whose column types are
//! chosen so that one schema serves both (text ids and JSON, `TIMESTAMP` in UTC). The schema
//! test in `tests/it/schema.rs` checks every column here exists on both backends.

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        slug -> Text,
        is_active -> Bool,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        email -> Text,
        is_superuser -> Bool,
        is_active -> Bool,
        password_hash -> Nullable<Text>,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
    }
}

diesel::table! {
    memberships (user_id, organization_id) {
        user_id -> Text,
        organization_id -> Text,
        role -> Text,
        created -> Timestamp,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        key_hash -> Text,
        prefix -> Text,
        created -> Timestamp,
        last_used -> Nullable<Timestamp>,
    }
}

diesel::table! {
    categories (id) {
        id -> Text,
        organization_id -> Nullable<Text>,
        name -> Text,
        description -> Text,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
    }
}

diesel::table! {
    builds (id) {
        id -> Text,
        category_id -> Text,
        version -> Text,
        os -> Nullable<Text>,
        changelog -> Text,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
    }
}

diesel::table! {
    firmware_images (id) {
        id -> Text,
        build_id -> Text,
        image_type -> Text,
        file_name -> Text,
        size -> BigInt,
        sha256 -> Text,
        storage_key -> Text,
        metadata -> Nullable<Text>,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
    }
}

diesel::table! {
    device_groups (id) {
        id -> Text,
        organization_id -> Text,
        name -> Text,
        description -> Text,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
    }
}

diesel::table! {
    devices (id) {
        id -> Text,
        organization_id -> Text,
        name -> Text,
        mac_address -> Text,
        model -> Text,
        board_name -> Text,
        os -> Text,
        management_ip -> Nullable<Text>,
        group_id -> Nullable<Text>,
        is_deactivated -> Bool,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
    }
}

diesel::table! {
    credentials (id) {
        id -> Text,
        organization_id -> Nullable<Text>,
        name -> Text,
        connection_type -> Text,
        username -> Text,
        port -> Integer,
        secret_kind -> Text,
        secret_ciphertext -> Text,
        auto_add -> Bool,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
    }
}

diesel::table! {
    device_connections (id) {
        id -> Text,
        device_id -> Text,
        credentials_id -> Text,
        connection_type -> Text,
        enabled -> Bool,
        is_working -> Nullable<Bool>,
        failure_reason -> Text,
        last_attempt -> Nullable<Timestamp>,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
        host_key -> Nullable<Text>,
    }
}

diesel::table! {
    device_firmwares (id) {
        id -> Text,
        device_id -> Text,
        image_id -> Text,
        installed -> Bool,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
    }
}

diesel::table! {
    batch_upgrade_operations (id) {
        id -> Text,
        build_id -> Text,
        group_id -> Nullable<Text>,
        status -> Text,
        upgrade_options -> Text,
        upgrade_all -> Bool,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
    }
}

diesel::table! {
    upgrade_operations (id) {
        id -> Text,
        device_id -> Text,
        image_id -> Nullable<Text>,
        batch_id -> Nullable<Text>,
        status -> Text,
        phase -> Text,
        progress -> Integer,
        log -> Text,
        upgrade_options -> Text,
        attempts -> Integer,
        next_attempt_at -> Nullable<Timestamp>,
        started -> Nullable<Timestamp>,
        finished -> Nullable<Timestamp>,
        details -> Text,
        created -> Timestamp,
        modified -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        lease_epoch -> BigInt,
        flash_attempts -> Integer,
        flash_boot_id -> Nullable<Text>,
        flash_image -> Nullable<Text>,
    }
}

diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(memberships -> organizations (organization_id));
diesel::joinable!(api_tokens -> users (user_id));
diesel::joinable!(categories -> organizations (organization_id));
diesel::joinable!(builds -> categories (category_id));
diesel::joinable!(firmware_images -> builds (build_id));
diesel::joinable!(device_groups -> organizations (organization_id));
diesel::joinable!(devices -> organizations (organization_id));
diesel::joinable!(devices -> device_groups (group_id));
diesel::joinable!(credentials -> organizations (organization_id));
diesel::joinable!(device_connections -> devices (device_id));
diesel::joinable!(device_connections -> credentials (credentials_id));
diesel::joinable!(device_firmwares -> devices (device_id));
diesel::joinable!(device_firmwares -> firmware_images (image_id));
diesel::joinable!(batch_upgrade_operations -> builds (build_id));
diesel::joinable!(upgrade_operations -> devices (device_id));
diesel::joinable!(upgrade_operations -> firmware_images (image_id));
diesel::joinable!(upgrade_operations -> batch_upgrade_operations (batch_id));

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    memberships,
    api_tokens,
    categories,
    builds,
    firmware_images,
    device_groups,
    devices,
    credentials,
    device_connections,
    device_firmwares,
    batch_upgrade_operations,
    upgrade_operations,
);
