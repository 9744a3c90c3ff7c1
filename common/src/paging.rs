//! The page-size rule of every List call: 0 asks for the default, anything above the maximum
//! gets the maximum (AIP-158).

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;

pub fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn zero_is_the_default_and_large_is_capped() {
        assert_eq!(super::page_size(0), 50);
        assert_eq!(super::page_size(7), 7);
        assert_eq!(super::page_size(5000), 1000);
    }
}
