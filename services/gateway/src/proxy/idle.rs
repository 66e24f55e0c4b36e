//! A response body's idle timeout: once an instance's response head has come, its body may take
//! as long as it likes in all (an event stream lives for hours, a large download for minutes),
//! but not go silent for longer than its route's `idle_timeout`. A body that does is ended with
//! an error: hyper then closes the client's connection without ending the body properly (so the
//! client sees the stream broken, not complete), and dropping the body closes the instance's
//! connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// A body with a known length up to this came whole from the instance (see `upstream_client`):
/// there is nothing left to wait for, so it is not wrapped.
const WHOLE: u64 = 64 * 1024;

/// The body ended because the instance sent nothing for too long.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?}")]
pub struct IdleTimedOut(Duration);

/// `body`, ended with [`IdleTimedOut`] if it goes `limit` without a frame; a body known to be
/// in memory already is returned as it is.
pub fn limit(body: Body, limit: Duration) -> Body {
    if body.is_end_stream() || body.size_hint().exact().is_some_and(|n| n <= WHOLE) {
        return body;
    }
    Body::new(Idle { body, limit, timer: None, waiting: false })
}

struct Idle {
    body: Body,
    limit: Duration,
    /// Made the first time the body has to be waited for, and reset for each later wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer is running for the current wait.
    waiting: bool,
}

impl HttpBody for Idle {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame);
        }
        let timer = match &mut this.timer {
            Some(timer) => {
                if !this.waiting {
                    timer.as_mut().reset(Instant::now() + this.limit);
                }
                timer
            }
            None => this.timer.insert(Box::pin(tokio::time::sleep(this.limit))),
        };
        this.waiting = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::info!(limit = ?this.limit, "upstream response body idle too long; ending it");
                Poll::Ready(Some(Err(axum::Error::new(IdleTimedOut(this.limit)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn trickle(gaps_ms: &'static [u64]) -> Body {
        let frames = futures::stream::unfold(0, move |i| async move {
            let gap = *gaps_ms.get(i)?;
            tokio::time::sleep(Duration::from_millis(gap)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from(format!("{i};"))), i + 1))
        });
        Body::from_stream(frames)
    }

    #[tokio::test]
    async fn a_body_may_last_long_if_it_is_never_silent_for_the_limit() {
        // A second and a half in all, against a one-second limit.
        let body = limit(trickle(&[250, 250, 250, 250, 250, 250]), Duration::from_secs(1));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "0;1;2;3;4;5;");
    }

    #[tokio::test]
    async fn a_silent_body_is_ended_with_an_error() {
        let mut body = limit(trickle(&[10, 3000, 10]), Duration::from_secs(1));
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "0;");
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("sent nothing"), "{err}");
    }

    #[tokio::test]
    async fn a_small_body_in_memory_passes_unchanged() {
        let body = limit(Body::from("whole"), Duration::from_secs(1));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "whole");
    }
}
