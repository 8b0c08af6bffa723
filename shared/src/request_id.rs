//! Which request id a service adopts: the one an upstream hop assigned, Cloudflare's ray id,
//! or a fresh one.

/// Longest request id accepted from elsewhere; longer ones are replaced, not truncated.
pub const MAX_LEN: usize = 128;

/// Whether an incoming request id header may be adopted as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// A public entry point: a client-sent id is ignored so nobody can forge log correlation.
    Public,
    /// Reached only through a service binding or the signed edge: the hop's id is kept.
    Internal,
}

/// Chooses the request id from the candidates, in order of preference; `None` means
/// "generate one". `incoming` is the `X-Request-Id` header, `ray` is `cf-ray`.
pub fn choose<'a>(
    trust: Trust,
    incoming: Option<&'a str>,
    ray: Option<&'a str>,
) -> Option<&'a str> {
    let incoming = match trust {
        Trust::Internal => incoming.filter(|id| is_well_formed(id)),
        Trust::Public => None,
    };
    incoming.or_else(|| ray.filter(|id| is_well_formed(id)))
}

/// A request id travels in headers and logs: short, and only `[A-Za-z0-9._:-]`.
pub fn is_well_formed(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_follows_trust_and_preference() {
        let cases = [
            (Trust::Internal, Some("hop-1"), Some("ray-1"), Some("hop-1")),
            (Trust::Internal, None, Some("ray-1"), Some("ray-1")),
            (
                Trust::Internal,
                Some("bad id\n"),
                Some("ray-1"),
                Some("ray-1"),
            ),
            (Trust::Public, Some("hop-1"), Some("ray-1"), Some("ray-1")),
            (Trust::Public, Some("hop-1"), None, None),
            (Trust::Internal, None, None, None),
            (Trust::Internal, Some(""), Some("<script>"), None),
        ];
        for (trust, incoming, ray, expected) in cases {
            assert_eq!(
                choose(trust, incoming, ray),
                expected,
                "{trust:?} {incoming:?} {ray:?}"
            );
        }
    }

    #[test]
    fn overlong_ids_are_refused() {
        let long = "a".repeat(MAX_LEN + 1);
        assert!(!is_well_formed(&long));
        assert!(is_well_formed(&long[..MAX_LEN]));
    }

    #[test]
    fn cf_ray_shape_is_accepted() {
        assert!(is_well_formed("8f1a2b3c4d5e6f70-NRT"));
    }
}
