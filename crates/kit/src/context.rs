//! The request context — request id and W3C trace context — carried from the
//! incoming request to every outgoing HTTP and gRPC call made while serving it.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Header carrying our request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Who is asking, for logs and propagation.
///
/// Both values are kept as the header values they are sent as, made once per request: the
/// context is read on every hop and log line, and cloning it only bumps two reference counts.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// This hop's span in W3C form, `00-{trace id}-{span id}-{flags}`: all ASCII, 55 bytes.
    traceparent: HeaderValue,
    /// Stable id of the end-to-end request (same on every hop), printable ASCII.
    request_id: HeaderValue,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// Length of a version-00 `traceparent` value; its parts' positions follow.
const TRACEPARENT_LEN: usize = 55;
const TRACE_ID: std::ops::Range<usize> = 3..35;
const SPAN_ID: std::ops::Range<usize> = 36..52;
const FLAGS: std::ops::Range<usize> = 53..55;

impl RequestContext {
    /// Continues the caller's trace (or starts one) from incoming headers.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut traceparent = [0u8; TRACEPARENT_LEN];
        traceparent[..3].copy_from_slice(b"00-");
        traceparent[35] = b'-';
        traceparent[52] = b'-';
        match headers.get(&TRACEPARENT).and_then(|v| parse_traceparent(v.as_bytes())) {
            Some((trace, flags)) => {
                traceparent[TRACE_ID].copy_from_slice(trace);
                traceparent[FLAGS].copy_from_slice(flags);
            }
            None => {
                write_hex(&mut traceparent[TRACE_ID], rand::random::<u128>() | 1);
                traceparent[FLAGS].copy_from_slice(b"01");
            }
        }
        write_hex(&mut traceparent[SPAN_ID], u128::from(rand::random::<u64>() | 1));
        let request_id = headers
            .get(&REQUEST_ID)
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic))
            .cloned()
            // The first half of the trace id: unique enough for one request, short enough to quote.
            .or_else(|| HeaderValue::from_bytes(&traceparent[3..19]).ok())
            .unwrap_or_else(|| HeaderValue::from_static("-"));
        // Lowercase hex digits, dashes and the digits 0 and 1: always a valid header value.
        let traceparent =
            HeaderValue::from_bytes(&traceparent).unwrap_or_else(|_| HeaderValue::from_static(NO_TRACEPARENT));
        Self { traceparent, request_id }
    }

    /// The request's id, as logged and sent in `x-request-id`.
    pub fn request_id(&self) -> &str {
        ascii(&self.request_id)
    }

    /// The request id as a header value, for responses and outgoing calls.
    pub fn request_id_header(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The 32 hex digits shared by every span of the trace.
    pub fn trace_id(&self) -> &str {
        ascii(&self.traceparent).get(TRACE_ID).unwrap_or_default()
    }

    /// The 16 hex digits naming this hop's span.
    pub fn span_id(&self) -> &str {
        ascii(&self.traceparent).get(SPAN_ID).unwrap_or_default()
    }

    /// Trace flags (`01` = sampled).
    pub fn flags(&self) -> &str {
        ascii(&self.traceparent).get(FLAGS).unwrap_or_default()
    }

    /// The `traceparent` value for a call made from this span.
    pub fn traceparent(&self) -> &HeaderValue {
        &self.traceparent
    }

    /// The headers that carry this context to the next hop (`x-request-id`, `traceparent`): one
    /// list for every caller, whether it fills a header map ([`Self::inject`]) or writes the
    /// headers itself (the gateway's proxy).
    pub fn propagated(&self) -> [(HeaderName, &HeaderValue); 2] {
        [(REQUEST_ID, &self.request_id), (TRACEPARENT, &self.traceparent)]
    }

    /// Writes the [`Self::propagated`] headers into outgoing headers, replacing any already there.
    pub fn inject(&self, headers: &mut HeaderMap) {
        for (name, value) in self.propagated() {
            headers.insert(name, value.clone());
        }
    }

    /// The context of the request being served by this task, if any.
    pub fn current() -> Option<RequestContext> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `fut` with this context as the current one.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

/// Never used in practice (see `from_headers`); all zeros is W3C's "no valid trace".
const NO_TRACEPARENT: &str = "00-00000000000000000000000000000000-0000000000000000-00";

/// A header value we built or checked to be printable ASCII, as text.
fn ascii(value: &HeaderValue) -> &str {
    std::str::from_utf8(value.as_bytes()).unwrap_or("-")
}

/// Injects the current context (if any) into outgoing headers.
pub fn inject_current(headers: &mut HeaderMap) {
    if let Some(ctx) = RequestContext::current() {
        ctx.inject(headers);
    }
}

/// Fills `out` with the low `out.len()` hex digits of `n`, lowercase, zero-padded
/// (`format!("{n:0width$x}")` without `fmt` or an allocation).
fn write_hex(out: &mut [u8], n: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().rev().enumerate().take(32) {
        *byte = DIGITS[((n >> (4 * i)) & 0xf) as usize];
    }
}

/// The trace id and flags of a valid version-00 `traceparent` (W3C Trace Context §3.2: exactly
/// `00-<32 hex>-<16 hex>-<2 hex>`, lower case, neither id all zeros). Read by position, not split:
/// every service does this for every request that comes through the gateway.
fn parse_traceparent(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii();
    if value.len() != TRACEPARENT_LEN || !value.starts_with(b"00-") || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let (trace, span, flags) = (&value[TRACE_ID], &value[SPAN_ID], &value[FLAGS]);
    let hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |s: &[u8]| s.iter().all(|b| *b == b'0');
    if !hex(trace) || !hex(span) || !hex(flags) || zero(trace) || zero(span) {
        return None;
    }
    Some((trace, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incoming_traceparent_is_continued_with_a_new_span() {
        let mut headers = HeaderMap::new();
        headers
            .insert(TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let ctx = RequestContext::from_headers(&headers);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ctx.span_id(), "00f067aa0ba902b7");
        assert_eq!(ctx.flags(), "01");
        assert!(ascii(ctx.traceparent()).starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    }

    #[test]
    fn ids_are_lowercase_hex_of_their_full_width() {
        let mut out = [0u8; 4];
        write_hex(&mut out, 0xab);
        assert_eq!(&out, b"00ab");
        let mut out = [0u8; 32];
        write_hex(&mut out, u128::MAX);
        assert_eq!(out, [b'f'; 32]);
        let ctx = RequestContext::from_headers(&HeaderMap::new());
        assert_eq!((ctx.trace_id().len(), ctx.span_id().len(), ctx.flags()), (32, 16, "01"));
        let expected = format!("00-{}-{}-{}", ctx.trace_id(), ctx.span_id(), ctx.flags());
        assert_eq!(ascii(ctx.traceparent()), expected);
        assert!(parse_traceparent(expected.as_bytes()).is_some(), "{expected}");
        assert_eq!(ctx.request_id(), &ctx.trace_id()[..16]);
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(format!(" {good} ").as_bytes()), Some((&good.as_bytes()[3..35], &b"01"[..])));
        for bad in [
            "00-xyz-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
            let mut headers = HeaderMap::new();
            headers.insert(TRACEPARENT, HeaderValue::from_static(bad));
            let ctx = RequestContext::from_headers(&headers);
            assert_eq!(ctx.trace_id().len(), 32);
            assert_ne!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!(ctx.request_id(), &ctx.trace_id()[..16]);
        }
    }

    #[test]
    fn a_client_request_id_is_kept_unless_it_is_unprintable() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(RequestContext::from_headers(&headers).request_id(), "abc-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(RequestContext::from_headers(&headers).request_id(), "has space");
    }
}
