//! HTTP/1.1 syntax shared by the proxy's two sides (what the client sent, what an instance
//! answers): header lists, lengths, hop-by-hop headers and chunks. Each function is strict
//! where RFC 9112 is, since both sides' messages come from outside.

/// Whether a header describes one hop only (RFC 9110 §7.6.1), or the hop's message framing: such
/// headers are never passed on, in either direction. `name` is in lower case.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "upgrade"
            | "transfer-encoding"
    )
}

/// The comma-separated tokens of a header value (a `Connection` or `Transfer-Encoding` list),
/// trimmed, empty ones left out.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// A `Content-Length` value: decimal digits only, no sign, no overflow.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Appends `data` as one chunk of a chunked body (RFC 9112 §7.1): its size in hex, the data, CRLF.
pub fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_lengths_are_plain_decimal_numbers() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b" 123 "), Some(123));
        assert_eq!(parse_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [&b""[..], b"+1", b"1 2", b"0x10", b"18446744073709551616"] {
            assert_eq!(parse_length(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn header_lists_split_into_trimmed_tokens() {
        let listed: Vec<&[u8]> = tokens(b" close ,, X-Secret,").collect();
        assert_eq!(listed, [&b"close"[..], b"X-Secret"]);
    }

    #[test]
    fn a_chunk_is_its_hex_size_its_data_and_crlf() {
        let mut out = Vec::new();
        push_chunk(&mut out, &[b'x'; 26]);
        assert_eq!(out, [&b"1a\r\n"[..], &[b'x'; 26], b"\r\n"].concat());
    }
}
