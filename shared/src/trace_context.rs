//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>, "traceparent Header"): one trace id
//! follows a call from the carrier's webhook through the edge to the origin's model attempts.
//! A hop that receives a valid `traceparent` keeps its trace id and names itself with a new span
//! id; a hop that receives none (or an invalid one) starts a trace. Randomness is passed in.
//!
//! Format: `version-traceid-parentid-flags`, lowercase hex, `00` the only version written; an
//! all-zero trace id or parent id is invalid, and so is version `ff`.

use std::fmt;

/// A parsed (or made) `traceparent`: the trace, the span that sent it, and the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes naming the whole trace.
    pub trace_id: [u8; 16],
    /// 8 bytes naming the sender's span (the receiver's parent).
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

/// Why a `traceparent` value was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not `version-traceid-parentid-flags` with fields of 2, 32, 16 and 2 characters.
    #[error("traceparent is not version-traceid-parentid-flags")]
    Shape,
    /// A field holds something other than lowercase hex.
    #[error("traceparent holds a character that is not lowercase hex")]
    NotLowercaseHex,
    /// Version `ff`, which the specification forbids.
    #[error("traceparent version ff is invalid")]
    ForbiddenVersion,
    /// Version `00` with something after the flags.
    #[error("traceparent version 00 has trailing data")]
    TrailingData,
    /// The trace id is all zeros.
    #[error("traceparent trace id is all zeros")]
    ZeroTraceId,
    /// The parent id is all zeros.
    #[error("traceparent parent id is all zeros")]
    ZeroParentId,
}

/// The "sampled" trace flag.
pub const SAMPLED: u8 = 0x01;

/// Length of a version-00 `traceparent`.
const LEN: usize = 55;

impl TraceParent {
    /// Parses a `traceparent` header value.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let bytes = value.as_bytes();
        if bytes.len() < LEN {
            return Err(ParseError::Shape);
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(ParseError::Shape);
        }
        let version = hex_byte(&bytes[0..2])?;
        if version == 0xff {
            return Err(ParseError::ForbiddenVersion);
        }
        // A later version may append fields after a '-'; version 00 may not.
        if bytes.len() > LEN {
            if version == 0 {
                return Err(ParseError::TrailingData);
            }
            if bytes[LEN] != b'-' {
                return Err(ParseError::Shape);
            }
        }
        let mut trace_id = [0u8; 16];
        hex_into(&bytes[3..35], &mut trace_id)?;
        let mut parent_id = [0u8; 8];
        hex_into(&bytes[36..52], &mut parent_id)?;
        let flags = hex_byte(&bytes[53..55])?;
        if trace_id == [0; 16] {
            return Err(ParseError::ZeroTraceId);
        }
        if parent_id == [0; 8] {
            return Err(ParseError::ZeroParentId);
        }
        Ok(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new trace, sampled, from 24 random bytes (16 for the trace id, 8 for the span id).
    pub fn start(random: [u8; 24]) -> Self {
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(&random[..16]);
        let mut parent_id = [0u8; 8];
        parent_id.copy_from_slice(&random[16..]);
        Self {
            trace_id: non_zero(trace_id),
            parent_id: non_zero(parent_id),
            flags: SAMPLED,
        }
    }

    /// The same trace, sent on by a span of its own (`span_id`, random); flags are kept.
    pub fn child(&self, span_id: [u8; 8]) -> Self {
        Self {
            parent_id: non_zero(span_id),
            ..*self
        }
    }

    /// Continues the trace of `incoming` when it is a valid `traceparent`, else starts one:
    /// what a hop sends on. `random` supplies the new ids (only its last 8 bytes when
    /// continuing).
    pub fn continue_or_start(incoming: Option<&str>, random: [u8; 24]) -> Self {
        match incoming.map(|value| Self::parse(value.trim())) {
            Some(Ok(parent)) => {
                let mut span_id = [0u8; 8];
                span_id.copy_from_slice(&random[16..]);
                parent.child(span_id)
            }
            _ => Self::start(random),
        }
    }

    /// A request of a trace known only by its id (a call's stored trace, whose requests are
    /// made later by the call's session): sampled, the new span named by `random`'s last 8
    /// bytes. An absent or invalid id starts a trace instead.
    pub fn within(trace_id: Option<&str>, random: [u8; 24]) -> Self {
        match trace_id.and_then(parse_trace_id) {
            Some(trace_id) => {
                let mut span_id = [0u8; 8];
                span_id.copy_from_slice(&random[16..]);
                Self {
                    trace_id,
                    parent_id: non_zero(span_id),
                    flags: SAMPLED,
                }
            }
            None => Self::start(random),
        }
    }

    /// The trace id as 32 lowercase hex characters (what logs show).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The parent (sender's span) id as 16 lowercase hex characters.
    pub fn parent_id_hex(&self) -> String {
        hex(&self.parent_id)
    }

    /// Whether the sender recorded its span.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.parent_id),
            self.flags
        )
    }
}

/// Whether `value` is a trace id as logs and `traceparent` write it: 32 lowercase hex, not all
/// zeros.
pub fn is_trace_id(value: &str) -> bool {
    let mut id = [0u8; 16];
    value.len() == 32 && hex_into(value.as_bytes(), &mut id).is_ok() && id != [0; 16]
}

/// Parses a trace id as [`TraceParent::trace_id_hex`] writes it.
pub fn parse_trace_id(value: &str) -> Option<[u8; 16]> {
    let mut id = [0u8; 16];
    (is_trace_id(value) && hex_into(value.as_bytes(), &mut id).is_ok()).then_some(id)
}

/// An id drawn as all zeros (one chance in 2^64 or more) becomes valid by setting its last bit.
fn non_zero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id.iter().all(|&b| b == 0) {
        id[N - 1] = 1;
    }
    id
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn nibble(c: u8) -> Result<u8, ParseError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(ParseError::NotLowercaseHex),
    }
}

fn hex_byte(pair: &[u8]) -> Result<u8, ParseError> {
    match pair {
        [high, low] => Ok(nibble(*high)? << 4 | nibble(*low)?),
        _ => Err(ParseError::Shape),
    }
}

fn hex_into(text: &[u8], out: &mut [u8]) -> Result<(), ParseError> {
    if text.len() != out.len() * 2 {
        return Err(ParseError::Shape);
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The specification's own example (section "traceparent Header", "Examples of HTTP
    // traceparent Headers").
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specification_example_and_writes_it_back() {
        let parsed = TraceParent::parse(EXAMPLE).expect("valid");
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id_hex(), "00f067aa0ba902b7");
        assert_eq!(parsed.flags, 0x01);
        assert!(parsed.sampled());
        assert_eq!(parsed.to_string(), EXAMPLE);
    }

    #[test]
    fn refuses_what_the_specification_refuses() {
        let cases = [
            ("", ParseError::Shape),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                ParseError::Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                ParseError::Shape,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ParseError::Shape,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                ParseError::NotLowercaseHex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01",
                ParseError::NotLowercaseHex,
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ParseError::NotLowercaseHex,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ParseError::ForbiddenVersion,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ParseError::ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ParseError::ZeroParentId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                ParseError::TrailingData,
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                ParseError::Shape,
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(TraceParent::parse(value), Err(expected), "{value:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_version_00_fields() {
        let parsed =
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what")
                .expect("future versions parse");
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // Written back as version 00, the only one this code knows.
        assert_eq!(
            parsed.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09"
        );
    }

    #[test]
    fn a_hop_keeps_a_valid_trace_and_names_its_own_span() {
        let random = [7u8; 24];
        let sent = TraceParent::continue_or_start(Some(EXAMPLE), random);
        assert_eq!(sent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sent.parent_id, [7u8; 8]);
        assert_eq!(sent.flags, 0x01);

        let unsampled = EXAMPLE.replace("-01", "-00");
        let sent = TraceParent::continue_or_start(Some(&unsampled), random);
        assert!(!sent.sampled(), "the sampling decision travels on");
    }

    #[test]
    fn a_hop_starts_a_sampled_trace_without_a_valid_parent() {
        let mut random = [0u8; 24];
        for (i, byte) in random.iter_mut().enumerate() {
            *byte = u8::try_from(i).expect("small") + 1;
        }
        for incoming in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            let sent = TraceParent::continue_or_start(incoming, random);
            assert_eq!(
                sent.to_string(),
                "00-0102030405060708090a0b0c0d0e0f10-1112131415161718-01",
                "{incoming:?}"
            );
        }
    }

    #[test]
    fn a_stored_trace_is_continued_by_id() {
        let random = [9u8; 24];
        let sent = TraceParent::within(Some("4bf92f3577b34da6a3ce929d0e0e4736"), random);
        assert_eq!(
            sent.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0909090909090909-01"
        );
        for lost in [None, Some(""), Some("not-a-trace")] {
            let sent = TraceParent::within(lost, random);
            assert_eq!(sent, TraceParent::start(random), "{lost:?}");
        }
    }

    #[test]
    fn ids_drawn_as_zeros_are_still_valid() {
        let started = TraceParent::start([0u8; 24]);
        let written = started.to_string();
        assert_eq!(TraceParent::parse(&written), Ok(started));
        let child = started.child([0u8; 8]);
        assert_eq!(TraceParent::parse(&child.to_string()), Ok(child));
    }

    #[test]
    fn trace_ids_as_logs_write_them() {
        assert!(is_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            parse_trace_id("4bf92f3577b34da6a3ce929d0e0e4736"),
            TraceParent::parse(EXAMPLE).ok().map(|p| p.trace_id)
        );
        for bad in [
            "",
            "00000000000000000000000000000000",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "4bf92f3577b34da6a3ce929d0e0e473",
        ] {
            assert!(!is_trace_id(bad), "{bad:?}");
            assert_eq!(parse_trace_id(bad), None);
        }
    }
}
