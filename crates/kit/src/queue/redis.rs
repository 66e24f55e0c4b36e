//! The Redis backend: every state change is one Lua script (`lua/*.lua`),
//! atomic inside Redis and timed by Redis's own clock, so workers on many
//! machines agree.
//!
//! Keys, under a prefix `P` (`agora:queue` by default):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:job:<id>` | hash | the job: state, payload, attempts, lease token, times, result, error |
//! | `P:q:<queue>:ready` | zset | ids waiting, scored by enqueue sequence (FIFO, kept across retries) |
//! | `P:q:<queue>:delayed` | zset | ids waiting out a retry backoff, scored by when they fall due |
//! | `P:q:<queue>:active` | zset | ids under a lease, scored by the lease's deadline |
//! | `P:q:<queue>:wake` | list | at most one wake-up token that idle workers `BLPOP` |
//! | `P:settled` | zset | finished and failed ids by end time (for retention); also the pub/sub channel of ends |
//! | `P:queues`, `P:seq` | set, counter | queue names (for maintenance), the enqueue sequence |
//!
//! The scripts touch job hashes they discover, so the keys are not declared to
//! Redis Cluster: use one Redis (or a primary with replicas), not a cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::{AsyncConnectionConfig, Client, FromRedisValue, Script, ScriptInvocation, Value as RedisValue};
use futures::StreamExt;
use tokio::sync::{oneshot, OnceCell};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::outage::Gate;

use super::{
    lease_token, record_depth, FailOutcome, JobId, JobView, Lease, NewJob, QueueError, QueueOptions, Reserved, Retry,
    StoredView, Touch,
};
use crate::shutdown::Shutdown;

/// How often `wait_finished` looks at the job even without a notification
/// (covers a pub/sub connection that is being re-established).
const WAIT_FALLBACK_POLL: Duration = Duration::from_millis(200);

/// Idle blocking connections kept for reuse.
const MAX_IDLE_BLOCKING: usize = 64;

/// Settled jobs deleted per purge script call (keeps each call short).
const PURGE_BATCH: u64 = 500;

/// The Redis queue. Clones share connections.
#[derive(Clone)]
pub struct RedisQueue {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// Multiplexed, reconnecting: every non-blocking command.
    conn: ConnectionManager,
    /// A blocking `BLPOP` would stall a multiplexed connection for everyone,
    /// so each waiting worker borrows a dedicated connection from here.
    idle_blocking: Mutex<Vec<MultiplexedConnection>>,
    keys: Keys,
    scripts: Scripts,
    settled: OnceCell<Arc<SettledWaiters>>,
    /// Every command goes through it: while Redis is unreachable, calls fail at once (see `crate::outage`).
    gate: Gate,
    listener_stop: CancellationToken,
    _stop_listener_on_drop: DropGuard,
}

struct Scripts {
    enqueue: Script,
    reserve: Script,
    renew: Script,
    complete: Script,
    fail: Script,
    purge: Script,
    progress: Script,
    cancel: Script,
}

/// A script with the shared prelude (clock, lease check, completion) in front.
fn lua_script(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("lua/prelude.lua")))
}

struct Keys {
    prefix: String,
}

impl Keys {
    fn job_prefix(&self) -> String {
        format!("{}:job:", self.prefix)
    }
    fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }
    fn of_queue(&self, queue: &str, what: &str) -> String {
        format!("{}:q:{queue}:{what}", self.prefix)
    }
    fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }
    fn seq(&self) -> String {
        format!("{}:seq", self.prefix)
    }
    /// The zset of settled jobs, and the pub/sub channel announcing them (channels are a separate namespace).
    fn settled(&self) -> String {
        format!("{}:settled", self.prefix)
    }
}

/// What the reserve script said.
struct ReserveReply {
    reserved: Option<Reserved>,
    /// Milliseconds until a retry falls due or a lease runs out, if any is pending.
    next_ms: Option<u64>,
    /// Jobs whose lease ran out, handed on or failed by this call.
    expired: u64,
    /// Whether the job to finish first was finished (`None`: none was asked).
    finished: Option<bool>,
}

/// One call of `reserve.lua` with its KEYS and ARGV by name: the positions
/// the script's header lists are written in [`ReserveCall::invocation`] and
/// nowhere else.
struct ReserveCall<'a> {
    /// The queue to tidy (due retries back in line, expired leases handed on) and reserve from.
    queue: &'a str,
    /// Whom to reserve the oldest due job for; `None` for housekeeping only.
    reserve: Option<Reservation<'a>>,
    /// A job to complete first, in the same atomic call.
    finish: Option<Finish<'a>>,
}

/// Who takes the next job, under which lease.
struct Reservation<'a> {
    worker: &'a str,
    /// The new lease's token (see [`lease_token`]).
    token: &'a str,
    lease_ms: u64,
}

/// A job to finish in the same script call as the next reservation.
struct Finish<'a> {
    held: &'a Lease,
    /// JSON text.
    result: &'a str,
}

impl ReserveCall<'_> {
    /// The script call: KEYS 1–5 (6 with `finish`), ARGV 1–7 (8–11 with `finish`).
    fn invocation<'s>(&self, script: &'s Script, keys: &Keys) -> ScriptInvocation<'s> {
        let queue = self.queue;
        let mut call = script.prepare_invoke();
        call.key(keys.of_queue(queue, "ready"))
            .key(keys.of_queue(queue, "delayed"))
            .key(keys.of_queue(queue, "active"))
            .key(keys.of_queue(queue, "wake"))
            .key(keys.settled())
            .arg(keys.job_prefix());
        match &self.reserve {
            Some(Reservation { worker, token, lease_ms }) => call.arg(*worker).arg(*token).arg(*lease_ms),
            None => call.arg("").arg("").arg(0),
        };
        call.arg(keys.settled()).arg(flag(self.reserve.is_some()));
        match &self.finish {
            Some(Finish { held, result }) => {
                let id = held.id.to_string();
                call.key(keys.job(&id)).arg(flag(true)).arg(&held.token).arg(held.attempt).arg(*result).arg(&id)
            }
            None => call.arg(flag(false)),
        };
        call
    }
}

/// A yes/no argument as the scripts compare it.
fn flag(yes: bool) -> &'static str {
    if yes {
        "1"
    } else {
        "0"
    }
}

impl RedisQueue {
    pub(super) async fn connect(url: &str, options: &QueueOptions) -> Result<Self, QueueError> {
        let shown = crate::config::redact_url(url);
        let unavailable =
            |e: ::redis::RedisError| QueueError::Unavailable { url: shown.clone(), reason: e.to_string() };
        let client = Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(3))
            .set_response_timeout(Duration::from_secs(10))
            .set_number_of_retries(5)
            .set_factor(2)
            .set_max_delay(4_000);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await.map_err(unavailable)?;
        let listener_stop = CancellationToken::new();
        let probe_client = client.clone();
        let gate = Gate::new(
            "queue",
            options.outage,
            true,
            Arc::new(move || {
                let client = probe_client.clone();
                Box::pin(async move {
                    // A fresh connection: the shared one may be stuck, or busy reconnecting.
                    let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
                    let _: String = ::redis::cmd("PING").query_async(&mut conn).await.map_err(|e| e.to_string())?;
                    Ok(())
                })
            }),
        );
        let queue = Self {
            inner: Arc::new(Inner {
                client,
                conn,
                idle_blocking: Mutex::new(Vec::new()),
                keys: Keys { prefix: options.redis_prefix.trim_end_matches(':').to_string() },
                scripts: Scripts {
                    enqueue: lua_script(include_str!("lua/enqueue.lua")),
                    reserve: lua_script(include_str!("lua/reserve.lua")),
                    renew: lua_script(include_str!("lua/renew.lua")),
                    complete: lua_script(include_str!("lua/complete.lua")),
                    fail: lua_script(include_str!("lua/fail.lua")),
                    purge: lua_script(include_str!("lua/purge.lua")),
                    progress: lua_script(include_str!("lua/progress.lua")),
                    cancel: lua_script(include_str!("lua/cancel.lua")),
                },
                settled: OnceCell::new(),
                gate,
                _stop_listener_on_drop: listener_stop.clone().drop_guard(),
                listener_stop,
            }),
        };
        queue.ping().await.map_err(|e| match e {
            QueueError::Redis(e) => unavailable(e),
            other => other,
        })?;
        Ok(queue)
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// The gate every command goes through.
    pub(super) fn gate(&self) -> &Gate {
        &self.inner.gate
    }

    pub(super) async fn enqueue(&self, job: &NewJob<'_>) -> Result<(), QueueError> {
        let keys = &self.inner.keys;
        let id = job.id.to_string();
        let mut conn = self.conn();
        let depth: u64 = self
            .gate()
            .run(async {
                Ok::<_, QueueError>(
                    self.inner
                        .scripts
                        .enqueue
                        .key(keys.job(&id))
                        .key(keys.of_queue(job.queue, "ready"))
                        .key(keys.of_queue(job.queue, "delayed"))
                        .key(keys.of_queue(job.queue, "wake"))
                        .key(keys.queues())
                        .key(keys.seq())
                        .arg(&id)
                        .arg(job.queue)
                        .arg(&job.payload)
                        .arg(job.max_attempts)
                        .arg(job.backoff_base_ms)
                        .arg(job.backoff_max_ms)
                        .invoke_async(&mut conn)
                        .await?,
                )
            })
            .await?;
        record_depth(job.queue, depth);
        Ok(())
    }

    pub(super) async fn reserve(
        &self,
        queue: &str,
        worker: &str,
        lease_ms: u64,
        wait: Duration,
        cancel: Option<&Shutdown>,
    ) -> Result<Option<Lease>, QueueError> {
        let deadline = Instant::now() + wait;
        let wake = self.inner.keys.of_queue(queue, "wake");
        loop {
            let token = lease_token();
            let reservation = Reservation { worker, token: &token, lease_ms };
            let reply = self.run_reserve(ReserveCall { queue, reserve: Some(reservation), finish: None }).await?;
            if let Some(reserved) = reply.reserved {
                return reserved.into_lease(queue, worker, token).map(Some);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut nap = deadline - now;
            if let Some(next_ms) = reply.next_ms {
                // Wake when the next retry falls due or the next lease runs out, whichever is first.
                nap = nap.min(Duration::from_millis(next_ms + 1));
            }
            if self.wait_for_work(&wake, nap, cancel).await? == Woken::Cancelled {
                return Ok(None);
            }
        }
    }

    /// Runs the reserve script: finishing a job first if asked, housekeeping for
    /// the queue, then a reservation if asked.
    async fn run_reserve(&self, call: ReserveCall<'_>) -> Result<ReserveReply, QueueError> {
        let queue = call.queue;
        let invocation = call.invocation(&self.inner.scripts.reserve, &self.inner.keys);
        let reply: Vec<RedisValue> =
            self.gate().run(async { Ok::<_, QueueError>(invocation.invoke_async(&mut self.conn()).await?) }).await?;
        let field = |i: usize| reply.get(i).unwrap_or(&RedisValue::Nil);
        let number = |i: usize| i64::from_redis_value(field(i));
        let (found, next_ms, requeued, failed, depth) = (number(0)?, number(1)?, number(2)?, number(3)?, number(4)?);
        let finished = number(5)?;
        if requeued > 0 {
            tracing::warn!(queue, jobs = requeued, "leases ran out (worker died or stalled); jobs handed on");
            metrics::counter!("queue_jobs_total", "queue" => queue.to_string(), "outcome" => "expired")
                .increment(requeued as u64);
        }
        if failed > 0 {
            tracing::warn!(queue, jobs = failed, "leases ran out on the last attempt; jobs failed");
            metrics::counter!("queue_jobs_total", "queue" => queue.to_string(), "outcome" => "failed")
                .increment(failed as u64);
        }
        record_depth(queue, depth.max(0) as u64);
        let reserved = if found == 1 {
            Some(Reserved {
                id: String::from_redis_value(field(6))?,
                payload: String::from_redis_value(field(7))?,
                attempt: number(8)?,
                max_attempts: number(9)?,
                backoff_base_ms: number(10)?,
                backoff_max_ms: number(11)?,
                enqueued_at_ms: number(12)?,
                started_at_ms: number(13)?,
            })
        } else {
            None
        };
        Ok(ReserveReply {
            reserved,
            next_ms: u64::try_from(next_ms).ok(),
            expired: (requeued.max(0) + failed.max(0)) as u64,
            finished: (finished >= 0).then_some(finished == 1),
        })
    }

    /// Finishes `held` and reserves the next job of its queue (without waiting) in one script call:
    /// one round trip per job for a busy worker.
    pub(super) async fn complete_then_reserve(
        &self,
        held: &Lease,
        result: &str,
        worker: &str,
        lease_ms: u64,
    ) -> Result<(bool, Option<Lease>), QueueError> {
        let token = lease_token();
        let reply = self
            .run_reserve(ReserveCall {
                queue: &held.queue,
                reserve: Some(Reservation { worker, token: &token, lease_ms }),
                finish: Some(Finish { held, result }),
            })
            .await?;
        let next = match reply.reserved {
            Some(reserved) => Some(reserved.into_lease(&held.queue, worker, token)?),
            None => None,
        };
        Ok((reply.finished.unwrap_or(false), next))
    }

    /// Blocks on the queue's wake-up list for at most `nap`, on a dedicated connection.
    async fn wait_for_work(&self, wake: &str, nap: Duration, cancel: Option<&Shutdown>) -> Result<Woken, QueueError> {
        let mut conn = self.blocking_connection().await?;
        let mut blpop = ::redis::cmd("BLPOP");
        blpop.arg(wake).arg(format!("{:.3}", nap.as_secs_f64().max(0.001)));
        let cancelled = async {
            match cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        // The client-side limit only guards against a server that stops answering.
        let popped = blpop.query_async::<Option<(String, String)>>(&mut conn);
        let outcome = tokio::select! {
            popped = tokio::time::timeout(nap + Duration::from_secs(5), popped) => Some(popped),
            _ = cancelled => None,
        };
        match outcome {
            // Dropping the connection mid-BLPOP closes it; Redis forgets the blocked client.
            None => Ok(Woken::Cancelled),
            Some(Ok(Ok(_))) => {
                let mut idle = self.inner.idle_blocking.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < MAX_IDLE_BLOCKING {
                    idle.push(conn);
                }
                Ok(Woken::Woken)
            }
            Some(Ok(Err(err))) => Err(err.into()),
            Some(Err(_)) => Err(QueueError::Redis(::redis::RedisError::from((
                ::redis::ErrorKind::IoError,
                "BLPOP on the queue's wake-up list did not return in time",
            )))),
        }
    }

    async fn blocking_connection(&self) -> Result<MultiplexedConnection, QueueError> {
        let idle = self.inner.idle_blocking.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => {
                let config = AsyncConnectionConfig::new().set_connection_timeout(Duration::from_secs(3));
                Ok(self.inner.client.get_multiplexed_async_connection_with_config(&config).await?)
            }
        }
    }

    pub(super) async fn requeue_expired(&self) -> Result<u64, QueueError> {
        let queues: Vec<String> =
            ::redis::cmd("SMEMBERS").arg(self.inner.keys.queues()).query_async(&mut self.conn()).await?;
        let mut expired = 0;
        for queue in queues {
            expired += self.run_reserve(ReserveCall { queue: &queue, reserve: None, finish: None }).await?.expired;
        }
        Ok(expired)
    }

    pub(super) async fn renew(&self, held: &Lease, lease_ms: u64) -> Result<Touch, QueueError> {
        let id = held.id.to_string();
        let mut conn = self.conn();
        let renewed: i64 = self
            .gate()
            .run(async {
                Ok::<_, QueueError>(
                    self.inner
                        .scripts
                        .renew
                        .key(self.inner.keys.job(&id))
                        .key(self.inner.keys.of_queue(&held.queue, "active"))
                        .arg(&held.token)
                        .arg(held.attempt)
                        .arg(lease_ms)
                        .arg(&id)
                        .invoke_async(&mut conn)
                        .await?,
                )
            })
            .await?;
        Ok(touch(renewed))
    }

    pub(super) async fn progress(&self, held: &Lease, percent: u8) -> Result<Touch, QueueError> {
        let id = held.id.to_string();
        let recorded: i64 = self
            .inner
            .scripts
            .progress
            .key(self.inner.keys.job(&id))
            .arg(&held.token)
            .arg(held.attempt)
            .arg(percent)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(touch(recorded))
    }

    pub(super) async fn cancel(&self, id: JobId) -> Result<bool, QueueError> {
        let id = id.to_string();
        let keys = &self.inner.keys;
        let cancelled: i64 = self
            .inner
            .scripts
            .cancel
            .key(keys.job(&id))
            .key(keys.settled())
            .arg(&id)
            .arg(format!("{}:q:", keys.prefix))
            .arg(super::CANCELLED)
            .arg(keys.settled())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(cancelled == 1)
    }

    pub(super) async fn complete(&self, held: &Lease, result: &str) -> Result<bool, QueueError> {
        let id = held.id.to_string();
        let keys = &self.inner.keys;
        let mut conn = self.conn();
        let done: i64 = self
            .gate()
            .run(async {
                Ok::<_, QueueError>(
                    self.inner
                        .scripts
                        .complete
                        .key(keys.job(&id))
                        .key(keys.of_queue(&held.queue, "active"))
                        .key(keys.settled())
                        .arg(&held.token)
                        .arg(held.attempt)
                        .arg(result)
                        .arg(&id)
                        .arg(keys.settled())
                        .invoke_async(&mut conn)
                        .await?,
                )
            })
            .await?;
        Ok(done == 1)
    }

    pub(super) async fn fail(
        &self,
        held: &Lease,
        error: &str,
        delay_ms: u64,
        retry: Retry,
    ) -> Result<Option<FailOutcome>, QueueError> {
        let id = held.id.to_string();
        let keys = &self.inner.keys;
        let mut conn = self.conn();
        let reply: Vec<i64> = self
            .gate()
            .run(async {
                Ok::<_, QueueError>(
                    self.inner
                        .scripts
                        .fail
                        .key(keys.job(&id))
                        .key(keys.of_queue(&held.queue, "active"))
                        .key(keys.of_queue(&held.queue, "delayed"))
                        .key(keys.settled())
                        .key(keys.of_queue(&held.queue, "wake"))
                        .arg(&held.token)
                        .arg(held.attempt)
                        .arg(error)
                        .arg(&id)
                        .arg(keys.settled())
                        .arg(delay_ms)
                        .arg(flag(retry == Retry::IfAttemptsLeft))
                        .invoke_async(&mut conn)
                        .await?,
                )
            })
            .await?;
        match reply.as_slice() {
            [1, at, ..] => {
                let at = super::timestamp(*at)
                    .ok_or_else(|| QueueError::Corrupt { id: id.clone(), reason: format!("bad retry time {at}") })?;
                Ok(Some(FailOutcome::Retrying { at }))
            }
            [2, ..] => Ok(Some(FailOutcome::Failed)),
            _ => Ok(None),
        }
    }

    pub(super) async fn status(&self, id: JobId) -> Result<Option<JobView>, QueueError> {
        let id = id.to_string();
        let mut conn = self.conn();
        let fields: Vec<Option<String>> = self
            .gate()
            .run(async {
                Ok::<_, QueueError>(
                    ::redis::cmd("HMGET")
                        .arg(self.inner.keys.job(&id))
                        .arg(&[
                            "queue",
                            "state",
                            "attempts",
                            "max_attempts",
                            "result",
                            "error",
                            "enqueued_at",
                            "started_at",
                            "finished_at",
                            "progress",
                            "cancelled",
                        ])
                        .query_async(&mut conn)
                        .await?,
                )
            })
            .await?;
        let [queue, state, attempts, max_attempts, result, error, enqueued_at, started_at, finished_at, progress, cancelled] =
            <[Option<String>; 11]>::try_from(fields).map_err(|f| QueueError::Corrupt {
                id: id.clone(),
                reason: format!("HMGET returned {} fields", f.len()),
            })?;
        let Some(state) = state else { return Ok(None) };
        let number = |raw: Option<String>, what: &str| -> Result<Option<i64>, QueueError> {
            match raw {
                None => Ok(None),
                Some(raw) => raw
                    .parse()
                    .map(Some)
                    .map_err(|_| QueueError::Corrupt { id: id.clone(), reason: format!("bad {what} {raw:?}") }),
            }
        };
        let required = |raw: Option<String>, what: &str| -> Result<i64, QueueError> {
            number(raw, what)?.ok_or_else(|| QueueError::Corrupt { id: id.clone(), reason: format!("no {what}") })
        };
        StoredView {
            attempts: required(attempts, "attempts")?,
            max_attempts: required(max_attempts, "max_attempts")?,
            enqueued_at_ms: required(enqueued_at, "enqueued_at")?,
            started_at_ms: number(started_at, "started_at")?,
            finished_at_ms: number(finished_at, "finished_at")?,
            progress: number(progress, "progress")?,
            cancelled: cancelled.as_deref() == Some("1"),
            queue: queue.unwrap_or_default(),
            state,
            result,
            error,
            id: id.clone(),
        }
        .into_view()
        .map(Some)
    }

    pub(super) async fn wait_finished(&self, id: JobId, timeout: Duration) -> Result<Option<JobView>, QueueError> {
        let deadline = Instant::now() + timeout;
        let key = id.to_string();
        let waiters = match self.settled_waiters().await {
            Ok(waiters) => Some(waiters),
            Err(err) => {
                tracing::warn!(error = %err, "cannot subscribe to job completions; polling instead");
                None
            }
        };
        loop {
            // Registered before looking, so a completion between the look and the wait still wakes us.
            let mut registration = waiters.as_ref().map(|w| w.register(&key));
            match self.status(id).await? {
                None => return Ok(None),
                Some(view) if view.state.is_terminal() => return Ok(Some(view)),
                Some(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let nap = (deadline - now).min(WAIT_FALLBACK_POLL);
            match registration.as_mut() {
                Some(r) => {
                    let _ = tokio::time::timeout(nap, &mut r.rx).await;
                }
                None => tokio::time::sleep(nap).await,
            }
        }
    }

    /// The process's subscription to job completions, started on first use.
    async fn settled_waiters(&self) -> Result<Arc<SettledWaiters>, QueueError> {
        let inner = &self.inner;
        let waiters = inner
            .settled
            .get_or_try_init(|| async {
                let channel = inner.keys.settled();
                let mut pubsub = inner.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                let waiters = Arc::new(SettledWaiters::default());
                tokio::spawn(listen_for_settled(
                    inner.client.clone(),
                    channel,
                    pubsub,
                    Arc::downgrade(&waiters),
                    inner.listener_stop.clone(),
                ));
                Ok::<_, QueueError>(waiters)
            })
            .await?;
        Ok(waiters.clone())
    }

    pub(super) async fn depth(&self, queue: &str) -> Result<u64, QueueError> {
        let (ready, delayed): (u64, u64) = ::redis::pipe()
            .cmd("ZCARD")
            .arg(self.inner.keys.of_queue(queue, "ready"))
            .cmd("ZCARD")
            .arg(self.inner.keys.of_queue(queue, "delayed"))
            .query_async(&mut self.conn())
            .await?;
        Ok(ready + delayed)
    }

    pub(super) async fn depths(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let queues: Vec<String> =
            ::redis::cmd("SMEMBERS").arg(self.inner.keys.queues()).query_async(&mut self.conn()).await?;
        let mut depths = Vec::with_capacity(queues.len());
        for queue in queues {
            let depth = self.depth(&queue).await?;
            depths.push((queue, depth));
        }
        Ok(depths)
    }

    pub(super) async fn purge_finished(&self, older_than_ms: u64) -> Result<u64, QueueError> {
        let mut purged = 0;
        loop {
            let n: u64 = self
                .inner
                .scripts
                .purge
                .key(self.inner.keys.settled())
                .arg(self.inner.keys.job_prefix())
                .arg(older_than_ms)
                .arg(PURGE_BATCH)
                .invoke_async(&mut self.conn())
                .await?;
            purged += n;
            if n < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    pub(super) async fn ping(&self) -> Result<(), QueueError> {
        self.gate()
            .run(async {
                let _: String = ::redis::cmd("PING").query_async(&mut self.conn()).await?;
                Ok::<_, QueueError>(())
            })
            .await
    }
}

/// A holder's script reply: 1 held, 2 cancelled, anything else lost.
fn touch(reply: i64) -> Touch {
    match reply {
        1 => Touch::Held,
        2 => Touch::Cancelled,
        _ => Touch::Lost,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Woken {
    Woken,
    Cancelled,
}

/// Callers of `wait_finished` in this process, by job id.
#[derive(Default)]
struct SettledWaiters {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

/// One caller's place in [`SettledWaiters`]; leaving removes it.
struct Registration {
    waiters: Arc<SettledWaiters>,
    id: String,
    rx: oneshot::Receiver<()>,
}

impl SettledWaiters {
    fn register(self: &Arc<Self>, id: &str) -> Registration {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).entry(id.to_string()).or_default().push(tx);
        Registration { waiters: self.clone(), id: id.to_string(), rx }
    }

    fn wake(&self, id: &str) {
        let senders = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.rx.close();
        let mut waiting = self.waiters.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(senders) = waiting.get_mut(&self.id) {
            senders.retain(|tx| !tx.is_closed());
            if senders.is_empty() {
                waiting.remove(&self.id);
            }
        }
    }
}

/// Relays completion announcements to waiters; resubscribes if the connection drops.
async fn listen_for_settled(
    client: Client,
    channel: String,
    first: ::redis::aio::PubSub,
    waiters: Weak<SettledWaiters>,
    stop: CancellationToken,
) {
    let mut pubsub = Some(first);
    loop {
        if let Some(connected) = pubsub.take() {
            let mut messages = connected.into_on_message();
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => return,
                    message = messages.next() => message,
                };
                let Some(message) = message else { break };
                let Some(waiters) = waiters.upgrade() else { return };
                if let Ok(id) = message.get_payload::<String>() {
                    waiters.wake(&id);
                }
            }
            tracing::warn!("job completion subscription lost; resubscribing");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        match client.get_async_pubsub().await {
            Ok(mut fresh) => match fresh.subscribe(&channel).await {
                Ok(()) => pubsub = Some(fresh),
                Err(err) => tracing::debug!(error = %err, "resubscribing to job completions failed"),
            },
            Err(err) => tracing::debug!(error = %err, "reconnecting for job completions failed"),
        }
    }
}
