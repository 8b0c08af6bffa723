//! Ids of agents and calls: they travel in URL paths, Redis channel names and logs.

/// Longest id.
pub const MAX_LEN: usize = 64;

/// 1 to [`MAX_LEN`] of `[A-Za-z0-9_-]`: a UUID, a Twilio `CA…` sid, a slug.
pub fn is_resource_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_fit_in_a_path_segment() {
        for ok in [
            "CA0123456789abcdef0123456789abcdef",
            "2f1c6a4e-8e1b-4c55-9a7e-3c1d2b0a9f10",
            "front_desk",
        ] {
            assert!(is_resource_id(ok), "{ok}");
        }
        for bad in ["", "a/b", "a b", "a.b", "é", &"a".repeat(MAX_LEN + 1)] {
            assert!(!is_resource_id(bad), "{bad}");
        }
    }
}
