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
            None => (format!("{:032x}", rand::random::<u128>() | 1), "01".to_string()),
        };
        let request_id = headers
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string)
            .unwrap_or_else(|| trace_id[..16].to_string());
        Self {
            request_id: request_id.into(),
            trace_id: trace_id.into(),
            span_id: format!("{:016x}", rand::random::<u64>() | 1),
            flags,
        }
    }

    /// The `traceparent` value for a call made from this span.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }

    /// Writes `x-request-id` and `traceparent` into outgoing headers.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            headers.insert(REQUEST_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.traceparent()) {
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
