//! An answer's headers kept in wire form. Building an `http::HeaderMap` for every answer (a
//! parsed name and a hashed insert per header, then the map's own allocation) cost the gateway
//! more than parsing the answer did, only for the map to be written out again as the same lines.
//! So the client keeps the headers it passes on as the lines it will write; hyper's server, which
//! needs a map, gets one made from them ([`HeaderLines::merge_into`]).

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers as `name: value\r\n` lines, names in lower case, each name a token and each value
/// free of control characters but tab (what `httparse` accepts, and `http`'s header types too):
/// they can be written to a client as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderLines(Bytes);

impl HeaderLines {
    /// The lines, ready to be written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Each header's name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0.split(|b| *b == b'\n').filter_map(|line| {
            let line = line.strip_suffix(b"\r")?;
            let colon = line.iter().position(|b| *b == b':')?;
            Some((&line[..colon], line.get(colon + 2..).unwrap_or_default()))
        })
    }

    /// Lines made of `headers` (which must be valid): for tests elsewhere in the gateway.
    #[cfg(test)]
    pub(crate) fn of(headers: &[(&str, &str)]) -> Self {
        let mut builder = Builder::with_capacity(64);
        for (name, value) in headers {
            builder.push(name.as_bytes(), value.as_bytes());
        }
        builder.finish()
    }

    /// The value of the first header called `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name.as_bytes()).map(|(_, v)| v)
    }

    /// Adds these headers to `map`, but for the names `map` already has: those the gateway set
    /// itself (its `x-request-id`, say) win over the instance's.
    pub fn merge_into(&self, map: &mut HeaderMap) {
        let own: Vec<HeaderName> = map.keys().cloned().collect();
        for (name, value) in self.iter() {
            let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else {
                continue;
            };
            if !own.contains(&name) {
                map.append(name, value);
            }
        }
    }
}

/// Writes [`HeaderLines`] one header at a time.
pub(super) struct Builder(BytesMut);

impl Builder {
    /// Room for `capacity` bytes of lines.
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self(BytesMut::with_capacity(capacity))
    }

    /// Starts a header called `name`, which must be a token (as `httparse` checks the names it
    /// parses), and returns it in lower case, to be looked at before it is kept
    /// ([`Builder::value`]) or dropped ([`Builder::drop_name`]).
    pub(super) fn name(&mut self, name: &[u8]) -> &[u8] {
        debug_assert!(!name.is_empty() && name.iter().all(|b| is_token(*b)), "not a token: {name:?}");
        let start = self.0.len();
        self.0.extend_from_slice(name);
        self.0[start..].make_ascii_lowercase();
        &self.0[start..]
    }

    /// Forgets the name just started, of `len` bytes.
    pub(super) fn drop_name(&mut self, len: usize) {
        self.0.truncate(self.0.len() - len);
    }

    /// Ends the header started with its `value`, which must hold no control character but tab
    /// (as `httparse` checks the values it parses).
    pub(super) fn value(&mut self, value: &[u8]) {
        debug_assert!(value.iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)), "{value:?}");
        self.0.extend_from_slice(b": ");
        self.0.extend_from_slice(value);
        self.0.extend_from_slice(b"\r\n");
    }

    /// Adds `name: value` (see [`Builder::name`] and [`Builder::value`] for what they must be).
    #[cfg(test)]
    pub(super) fn push(&mut self, name: &[u8], value: &[u8]) {
        self.name(name);
        self.value(value);
    }

    /// Drops every header called `name` (lower case) written so far.
    pub(super) fn remove(&mut self, name: &str) {
        let written = HeaderLines(std::mem::take(&mut self.0).freeze());
        self.0.reserve(written.0.len());
        for (n, value) in written.iter().filter(|(n, _)| *n != name.as_bytes()) {
            self.name(n);
            self.value(value);
        }
    }

    /// The lines written.
    pub(super) fn finish(self) -> HeaderLines {
        HeaderLines(self.0.freeze())
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_kept_as_lower_case_lines_in_order() {
        let lines = HeaderLines::of(&[
            ("Content-Type", "text/plain"),
            ("Set-Cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("X-Empty", ""),
        ]);
        assert_eq!(
            lines.as_bytes(),
            b"content-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nx-empty: \r\n"
        );
        let pairs: Vec<_> = lines.iter().collect();
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs[3], (&b"x-empty"[..], &b""[..]));
        assert_eq!(lines.get("set-cookie"), Some(&b"a=1"[..]));
        assert_eq!(lines.get("date"), None);
    }

    #[test]
    fn a_header_written_can_be_dropped_again() {
        let mut builder = Builder::with_capacity(64);
        for (name, value) in [("A", "1"), ("Content-Length", "3"), ("b", "2")] {
            builder.push(name.as_bytes(), value.as_bytes());
        }
        builder.remove("content-length");
        assert_eq!(builder.finish().as_bytes(), b"a: 1\r\nb: 2\r\n");
    }

    #[test]
    fn merging_into_a_map_keeps_the_maps_own_headers() {
        let lines = HeaderLines::of(&[("x-request-id", "theirs"), ("set-cookie", "a=1"), ("set-cookie", "b=2")]);
        let mut map = HeaderMap::new();
        map.insert("x-request-id", HeaderValue::from_static("ours"));
        lines.merge_into(&mut map);
        assert_eq!(map["x-request-id"], "ours");
        assert_eq!(map.get_all("set-cookie").iter().collect::<Vec<_>>(), ["a=1", "b=2"]);
    }
}
