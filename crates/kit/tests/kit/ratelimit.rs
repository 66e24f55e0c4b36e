//! The rate limiter holds under concurrency, in memory and in Redis (shared by replicas).

use std::sync::Arc;

use kit::ratelimit::{Decision, Limiter, Quota};

async fn allowed_under_concurrency(limiter: Arc<Limiter>, key: String, requests: usize) -> usize {
    // A slow refill so the count is the burst, whatever the scheduling.
    let quota = Quota { burst: 50, per_second: 0.001 };
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let limiter = limiter.clone();
            let key = key.clone();
            tokio::spawn(async move { limiter.check(&key, quota).await == Decision::Allow })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_memory_limiter_allows_exactly_the_burst_under_concurrency() {
    let limiter = Arc::new(Limiter::memory());
    assert_eq!(allowed_under_concurrency(limiter, "ip:1".into(), 400).await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(no_redis, ignore = "set AGORA_TEST_REDIS_URL to run it against Redis")]
async fn two_replicas_sharing_redis_enforce_one_limit() {
    let Some(url) = kit::test_support::redis_url() else {
        return;
    };
    let key = format!("test:{}", uuid::Uuid::new_v4());
    let a = Arc::new(Limiter::redis(&url, "agora:rl").await.expect("redis reachable"));
    let b = Arc::new(Limiter::redis(&url, "agora:rl").await.expect("redis reachable"));
    let (x, y) = tokio::join!(allowed_under_concurrency(a, key.clone(), 200), allowed_under_concurrency(b, key, 200));
    assert_eq!(x + y, 50, "replica a allowed {x}, replica b allowed {y}");
}
