//! The paging rules of every List call (AIP-158): 0 asks for the default page size, anything
//! above the maximum gets the maximum; page tokens are opaque to clients and checked on the way
//! back in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;

pub fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// The furthest offset a token may carry: far past any listing, and small enough that
/// `offset + page size` neither overflows nor turns negative as a database's `i64`.
pub const MAX_OFFSET: usize = 1 << 40;

/// What a refused page token is told.
pub const NOT_A_TOKEN: &str = "not a page token from a previous response";

/// The page token that resumes a listing at `offset`.
pub fn offset_token(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

/// The offset a page token resumes at (0 for the empty token), or why it is refused.
pub fn parse_offset_token(token: &str) -> Result<usize, &'static str> {
    if token.is_empty() {
        return Ok(0);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("offset:")?.parse::<usize>().ok())
        .filter(|&offset| offset <= MAX_OFFSET)
        .ok_or(NOT_A_TOKEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_tokens_round_trip_and_anything_else_is_refused() {
        assert_eq!(parse_offset_token(""), Ok(0));
        assert_eq!(parse_offset_token(&offset_token(50)), Ok(50));
        assert_eq!(
            parse_offset_token(&offset_token(MAX_OFFSET)),
            Ok(MAX_OFFSET)
        );
        for bad in [
            "garbage".to_string(),
            "50".into(),
            "18446744073709551615".into(),
            offset_token(MAX_OFFSET + 1),
            offset_token(usize::MAX),
            URL_SAFE_NO_PAD.encode("offset:-1"),
        ] {
            assert_eq!(parse_offset_token(&bad), Err(NOT_A_TOKEN), "{bad}");
        }
    }

    #[test]
    fn zero_is_the_default_and_large_is_capped() {
        assert_eq!(super::page_size(0), 50);
        assert_eq!(super::page_size(7), 7);
        assert_eq!(super::page_size(5000), 1000);
    }
}
