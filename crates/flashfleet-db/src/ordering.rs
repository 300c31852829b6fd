//! The order of list queries: the caller's sort keys, then the list's default order, then the
//! id, so that every list has a total order and pages never overlap or skip a row.
//!
//! Text columns a list can be ordered by compare bytes on both backends: SQLite's default
//! `BINARY` collation does, and on PostgreSQL those columns are declared `COLLATE "C"`
//! (migration `list_order`), whatever the database's default collation. Ids are UUIDs in
//! their canonical lowercase form, which every collation orders like their bytes.

/// Appends `$keys` (a slice of `SortKey`) to the order of the boxed query `$query`, mapping each
/// field to its column with the match arms `$field => $column`; evaluates to the query.
///
/// The caller appends the list's default order and the id after it with `then_order_by`.
macro_rules! then_order_by_keys {
    ($query:expr, $keys:expr, { $($field:pat => $column:expr),+ $(,)? }) => {{
        let mut query = $query;
        for key in $keys {
            query = match key.field {
                $($field => {
                    if key.descending {
                        query.then_order_by($column.desc())
                    } else {
                        query.then_order_by($column.asc())
                    }
                })+
            };
        }
        query
    }};
}

pub(crate) use then_order_by_keys;
