//! Page sizes for list and search calls.

use crate::{Error, Result};

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The page size to use: 0 asks for the default; more than the maximum is refused rather than
/// silently cut, so a client that pages by size learns its assumption is wrong.
pub fn page_size(requested: u32) -> Result<u32> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(Error::invalid(
            "page_size",
            format!("is {n}; at most {MAX_PAGE_SIZE} are allowed"),
        )),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_default_and_huge_is_refused() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1), Ok(1));
        assert_eq!(page_size(MAX_PAGE_SIZE), Ok(MAX_PAGE_SIZE));
        assert!(matches!(page_size(u32::MAX), Err(Error::InvalidArgument(_))));
    }
}
