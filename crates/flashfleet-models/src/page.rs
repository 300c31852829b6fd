//! Pagination and ordering of list queries.
//!
//! Every list has upstream's default order; an explicit order (upstream's
//! `?ordering=-created,version`, parsed by [`SortKey::parse_list`]) comes first and is followed by
//! the default order and finally the id, so that a list's order is total and paging through it
//! shows every row exactly once.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::ValidationErrors;

/// Which slice of a list to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items to skip.
    pub offset: u64,
    /// How many items to return at most.
    pub limit: u64,
}

impl PageRequest {
    /// Upstream's default page size (`OPENWISP_API_DEFAULT_PAGE_SIZE`).
    pub const DEFAULT_SIZE: u64 = 10;
    /// Upstream's maximum page size (`OPENWISP_API_MAX_PAGE_SIZE`).
    pub const MAX_SIZE: u64 = 100;

    /// The 1-based page `page` of `size` items.
    pub fn page(page: u64, size: u64) -> Self {
        Self {
            offset: page.saturating_sub(1).saturating_mul(size),
            limit: size,
        }
    }

    /// Everything: no offset and no practical limit.
    pub fn all() -> Self {
        Self {
            offset: 0,
            limit: i64::MAX as u64,
        }
    }

    /// The offset as the signed integer SQL wants, saturated.
    pub fn offset_i64(&self) -> i64 {
        i64::try_from(self.offset).unwrap_or(i64::MAX)
    }

    /// The limit as the signed integer SQL wants, saturated.
    pub fn limit_i64(&self) -> i64 {
        i64::try_from(self.limit).unwrap_or(i64::MAX)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::page(1, Self::DEFAULT_SIZE)
    }
}

/// One page of a list, with the total count of the whole list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Page<T> {
    /// How many items the whole list has.
    pub count: u64,
    /// The items of this page, in the list's order.
    pub items: Vec<T>,
}

impl<T> Page<T> {
    /// Applies `map` to every item.
    pub fn map<U>(self, map: impl FnMut(T) -> U) -> Page<U> {
        Page {
            count: self.count,
            items: self.items.into_iter().map(map).collect(),
        }
    }
}

/// One key of a list's order (upstream's `?ordering=-created,version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortKey<F> {
    /// The field to order by.
    pub field: F,
    /// Largest first when true (a leading `-` in upstream's parameter).
    pub descending: bool,
}

impl<F> SortKey<F> {
    /// `field`, smallest first.
    pub fn ascending(field: F) -> Self {
        Self {
            field,
            descending: false,
        }
    }

    /// `field`, largest first.
    pub fn descending(field: F) -> Self {
        Self {
            field,
            descending: true,
        }
    }
}

impl<F: FromStr> SortKey<F> {
    /// Parses upstream's `ordering` parameter: comma-separated field names, `-` for descending,
    /// blanks ignored. An unknown field is a `ValidationErrors` on the field `ordering` naming it.
    pub fn parse_list(text: &str) -> Result<Vec<SortKey<F>>, ValidationErrors> {
        let mut keys = Vec::new();
        let mut errors = ValidationErrors::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (name, descending) = match item.strip_prefix('-') {
                Some(name) => (name, true),
                None => (item, false),
            };
            match name.parse() {
                Ok(field) => keys.push(SortKey { field, descending }),
                // Django's message for a choice that is not one, naming the item as given.
                Err(_) => errors.add(
                    "ordering",
                    format!("Select a valid choice. {item} is not one of the available choices."),
                ),
            }
        }
        errors.into_result()?;
        Ok(keys)
    }
}

/// Defines a field enum of a list's `ordering`: the enum, `ALL`, `as_str`, `Display` and
/// `FromStr` (which also accepts the aliases after `|`).
macro_rules! order_fields {
    (
        $(#[$meta:meta])*
        $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $text:literal $(| $alias:literal)*,)+
        }
    ) => {
        $(#[$meta])*
        ///
        /// Not `#[non_exhaustive]`: every repository implementation orders by every field, so a
        /// new field is a compile error there rather than a field silently ignored.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every field, in upstream's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The field's name in upstream's `ordering` parameter.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text $(| $alias)* => Ok($name::$variant),)+
                    _ => Err(format!("unknown ordering field `{text}`")),
                }
            }
        }
    };
}

order_fields! {
    /// The fields the category list can be ordered by (upstream endpoint 7).
    CategoryOrder {
        /// `name` (byte order: upper case before lower case).
        Name => "name",
        /// `created`.
        Created => "created",
        /// `modified`.
        Modified => "modified",
    }
}

order_fields! {
    /// The fields the build list can be ordered by (upstream endpoint 1).
    BuildOrder {
        /// `version`, as text (byte order: `1.10` before `1.9`, as upstream).
        Version => "version",
        /// `created`.
        Created => "created",
        /// `modified`.
        Modified => "modified",
    }
}

order_fields! {
    /// The fields the image list of a build can be ordered by (upstream endpoint 4).
    ImageOrder {
        /// `type`, the image type (byte order).
        Type => "type",
        /// `created`.
        Created => "created",
        /// `modified`.
        Modified => "modified",
    }
}

order_fields! {
    /// The fields the mass upgrade list can be ordered by (upstream endpoint 9).
    BatchOrder {
        /// `created`.
        Created => "created",
        /// `modified`.
        Modified => "modified",
    }
}

order_fields! {
    /// The fields the upgrade operation list can be ordered by (upstream endpoint 11).
    OperationOrder {
        /// The device's id: `device_id` as upstream names it, or `device`.
        Device => "device_id" | "device",
        /// `created`.
        Created => "created",
        /// `modified`.
        Modified => "modified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_one_based_and_page_zero_is_the_first() {
        assert_eq!(
            PageRequest::page(1, 10),
            PageRequest {
                offset: 0,
                limit: 10
            }
        );
        assert_eq!(
            PageRequest::page(3, 10),
            PageRequest {
                offset: 20,
                limit: 10
            }
        );
        assert_eq!(PageRequest::page(0, 10).offset, 0);
    }

    #[test]
    fn huge_pages_saturate_instead_of_overflowing() {
        let request = PageRequest::page(u64::MAX, u64::MAX);
        assert_eq!(request.offset_i64(), i64::MAX);
        assert_eq!(request.limit_i64(), i64::MAX);
    }

    #[test]
    fn an_ordering_parameter_is_a_list_of_fields_with_a_minus_for_descending() {
        assert_eq!(
            SortKey::<BuildOrder>::parse_list("-created,version"),
            Ok(vec![
                SortKey::descending(BuildOrder::Created),
                SortKey::ascending(BuildOrder::Version),
            ])
        );
        assert_eq!(
            SortKey::<CategoryOrder>::parse_list(" modified , ,-name,"),
            Ok(vec![
                SortKey::ascending(CategoryOrder::Modified),
                SortKey::descending(CategoryOrder::Name),
            ])
        );
        assert_eq!(SortKey::<BatchOrder>::parse_list(""), Ok(vec![]));
        assert_eq!(SortKey::<BatchOrder>::parse_list(" , "), Ok(vec![]));
    }

    #[test]
    fn unknown_ordering_fields_are_errors_on_the_ordering_field_naming_each() {
        let errors = SortKey::<ImageOrder>::parse_list("type,-size,name,-").unwrap_err();
        assert_eq!(
            errors.messages("ordering"),
            [
                "Select a valid choice. -size is not one of the available choices.",
                "Select a valid choice. name is not one of the available choices.",
                "Select a valid choice. - is not one of the available choices.",
            ]
        );
        assert_eq!(errors.iter().count(), 1);
        // Field names are exact: no case folding, no second minus.
        assert!(SortKey::<ImageOrder>::parse_list("Type").is_err());
        assert!(SortKey::<ImageOrder>::parse_list("--type").is_err());
    }

    #[test]
    fn operations_are_ordered_by_device_under_upstreams_name_and_the_short_one() {
        assert_eq!("device_id".parse(), Ok(OperationOrder::Device));
        assert_eq!("device".parse(), Ok(OperationOrder::Device));
        assert_eq!(OperationOrder::Device.as_str(), "device_id");
    }

    #[test]
    fn every_ordering_field_parses_back_from_its_name() {
        fn check<F: FromStr + fmt::Display + PartialEq + fmt::Debug + Copy>(all: &[F]) {
            for field in all {
                assert_eq!(field.to_string().parse::<F>().ok(), Some(*field));
            }
        }
        check(CategoryOrder::ALL);
        check(BuildOrder::ALL);
        check(ImageOrder::ALL);
        check(BatchOrder::ALL);
        check(OperationOrder::ALL);
        assert_eq!(
            ImageOrder::ALL
                .iter()
                .map(ImageOrder::as_str)
                .collect::<Vec<_>>(),
            ["type", "created", "modified"]
        );
    }
}
