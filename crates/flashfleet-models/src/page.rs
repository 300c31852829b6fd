//! Pagination of list queries.

use serde::Serialize;

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
}
