//! The request context — request id and W3C trace context — carried from the
//! incoming request to every outgoing HTTP and gRPC call made while serving it.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

/// Header carrying our request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Who is asking, for logs and propagation.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Stable id of the end-to-end request (same on every hop).
    pub request_id: Arc<str>,
    /// 32 hex digits shared by every span of the trace.
    pub trace_id: Arc<str>,
    /// 16 hex digits naming this hop's span.
    pub span_id: String,
    /// Trace flags (`01` = sampled).
    pub flags: String,
    /// `request_id` as a header value, made once: it goes to every upstream and back to the client.
    pub request_id_header: HeaderValue,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

impl RequestContext {
    /// Continues the caller's trace (or starts one) from incoming headers.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let parent = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(parse_traceparent);
        let (trace_id, flags) = match parent {
            Some((trace, flags)) => (trace, flags),
            None => (hex(rand::random::<u128>() | 1, 32), "01".to_string()),
        };
        let (request_id, request_id_header) = match headers
            .get(&REQUEST_ID)
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic))
        {
            Some(sent) => (String::from_utf8_lossy(sent.as_bytes()).into(), sent.clone()),
            None => {
                let id = &trace_id[..16];
                (Arc::from(id), HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-")))
            }
        };
        Self {
            request_id,
            request_id_header,
            trace_id: trace_id.into(),
            span_id: hex(u128::from(rand::random::<u64>() | 1), 16),
            flags,
        }
    }

    /// The `traceparent` value for a call made from this span.
    pub fn traceparent(&self) -> String {
        // Built by hand: this runs for every proxied request, and `format!` costs several times more.
        let mut value = String::with_capacity(6 + self.trace_id.len() + self.span_id.len() + self.flags.len());
        for part in ["00-", &self.trace_id, "-", &self.span_id, "-", &self.flags] {
            value.push_str(part);
        }
        value
    }

    /// Writes `x-request-id` and `traceparent` into outgoing headers.
    pub fn inject(&self, headers: &mut HeaderMap) {
        headers.insert(REQUEST_ID, self.request_id_header.clone());
        if let Ok(v) = HeaderValue::try_from(self.traceparent()) {
            headers.insert(TRACEPARENT, v);
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

/// Injects the current context (if any) into outgoing headers.
pub fn inject_current(headers: &mut HeaderMap) {
    if let Some(ctx) = RequestContext::current() {
        ctx.inject(headers);
    }
}

/// The low `digits` hex digits of `n`, lowercase, zero-padded (`format!("{n:0digits$x}")`, cheaper).
fn hex(n: u128, digits: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = digits.min(32);
    let mut out = [0u8; 32];
    for (i, byte) in out[..digits].iter_mut().rev().enumerate() {
        *byte = DIGITS[((n >> (4 * i)) & 0xf) as usize];
    }
    String::from_utf8(out[..digits].to_vec()).unwrap_or_default()
}

fn parse_traceparent(v: &str) -> Option<(String, String)> {
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if version != "00" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace.to_string(), flags.to_string()))
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
        assert_eq!(&*ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(ctx.span_id, "00f067aa0ba902b7");
        assert!(ctx.traceparent().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    }

    #[test]
    fn ids_are_lowercase_hex_of_their_full_width() {
        assert_eq!(hex(0xab, 4), "00ab");
        assert_eq!(hex(u128::MAX, 32), "f".repeat(32));
        let ctx = RequestContext::from_headers(&HeaderMap::new());
        let expected = format!("00-{}-{}-{}", ctx.trace_id, ctx.span_id, ctx.flags);
        assert_eq!(ctx.traceparent(), expected);
        assert!(parse_traceparent(&expected).is_some(), "{expected}");
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-xyz-00f067aa0ba902b7-01"));
        let ctx = RequestContext::from_headers(&headers);
        assert_eq!(ctx.trace_id.len(), 32);
        assert_eq!(&ctx.request_id[..], &ctx.trace_id[..16]);
    }

    #[test]
    fn a_client_request_id_is_kept_unless_it_is_unprintable() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(&*RequestContext::from_headers(&headers).request_id, "abc-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(&*RequestContext::from_headers(&headers).request_id, "has space");
    }
}
