//! The read cache of project pages. `GET /projects/{id}` is the hot read: it
//! costs a query here, a gRPC call to the threads service and a query there.
//! Anonymous readers all see the same page, so it is kept, serialised, for a
//! short time (`PROJECTS_CACHE_TTL_MS`), and dropped at once when this
//! instance changes the project: its tags, a new thread or reply, a vote on
//! one of its threads. Readers who are signed in get their own votes marked
//! and always read through.
//!
//! While the database is down, an anonymous reader whose page is no longer
//! fresh gets it all the same, marked stale (stale-if-error, RFC 5861), for up
//! to `PROJECTS_STALE_IF_ERROR_SECS` after it was read; never a page known to
//! have changed, since a change drops it.
//!
//! What is never cached: a page whose threads could not be read (degraded)
//! or whose threads are still waiting in the outbox, so the cache never
//! prolongs a failure; and a page read while a change to it was being made
//! (every change bumps a stamp, and a page read under an older stamp is served
//! but not kept). What can be stale: a change made through *another* projects
//! instance, for at most the TTL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use moka::sync::Cache;

/// Change stamps are kept per shard of project ids (a change to one project also stops pages of the
/// few projects sharing its shard from being kept for a moment, which costs a miss, never a stale page).
const STAMP_SHARDS: usize = 1024;

/// Cached pages, and which project each cached thread belongs to (to drop the page on a vote).
pub struct PageCache {
    /// Pages and when they were read from the databases, kept for `fresh + stale_if_error`.
    pages: Option<Cache<i64, (Bytes, Instant)>>,
    /// How long a page is served as it is.
    fresh: Duration,
    thread_projects: Option<Cache<i64, i64>>,
    /// Bumped by every change of a project in the shard.
    stamps: Box<[AtomicU64]>,
    /// Bumped by every vote on a thread whose project is not known here (it may be a page being read).
    unplaced_votes: AtomicU64,
}

/// What a reader saw of the change stamps before reading a page: [`PageCache::keep`] keeps the page
/// only if nothing changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    project: u64,
    votes: u64,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache").field("enabled", &self.pages.is_some()).finish()
    }
}

impl PageCache {
    /// A cache serving pages for `ttl` (zero: no cache), and for `stale_if_error` more while the
    /// database is down, at most `capacity` of them.
    pub fn new(ttl: Duration, stale_if_error: Duration, capacity: u64) -> Self {
        let stamps = (0..STAMP_SHARDS).map(|_| AtomicU64::new(0)).collect();
        if ttl.is_zero() || capacity == 0 {
            return Self { pages: None, fresh: ttl, thread_projects: None, stamps, unplaced_votes: AtomicU64::new(0) };
        }
        let pages = Cache::builder().time_to_live(ttl + stale_if_error).max_capacity(capacity).build();
        // Threads never move between projects, so an old entry is never wrong; it only takes room.
        let thread_projects = Cache::builder().time_to_idle(ttl * 4).max_capacity(capacity * 8).build();
        Self {
            pages: Some(pages),
            fresh: ttl,
            thread_projects: Some(thread_projects),
            stamps,
            unplaced_votes: AtomicU64::new(0),
        }
    }

    fn shard(&self, project_id: i64) -> &AtomicU64 {
        &self.stamps[project_id.rem_euclid(STAMP_SHARDS as i64) as usize]
    }

    /// Take before reading the page of `project_id` from the databases; pass to [`PageCache::keep`].
    pub fn stamp(&self, project_id: i64) -> Stamp {
        Stamp {
            project: self.shard(project_id).load(Ordering::Acquire),
            votes: self.unplaced_votes.load(Ordering::Acquire),
        }
    }

    /// The cached page of `project_id`, if fresh, and its age.
    pub fn page(&self, project_id: i64) -> Option<(Bytes, Duration)> {
        let page = self.pages.as_ref()?.get(&project_id);
        let page = page.map(|(page, read_at)| (page, read_at.elapsed())).filter(|(_, age)| *age < self.fresh);
        let outcome = if page.is_some() { "hit" } else { "miss" };
        metrics::counter!("projects_page_cache_total", "outcome" => outcome).increment(1);
        page
    }

    /// The cached page of `project_id` however old (within the stale-if-error time), and its age:
    /// for when it cannot be read again.
    pub fn stale_page(&self, project_id: i64) -> Option<(Bytes, Duration)> {
        self.pages.as_ref()?.get(&project_id).map(|(page, read_at)| (page, read_at.elapsed()))
    }

    /// Keeps the page of `project_id`, whose threads are `thread_ids`, read (now) after `stamp` was taken —
    /// unless the project changed (or a vote landed somewhere unknown) since.
    pub fn keep(&self, project_id: i64, stamp: Stamp, thread_ids: impl Iterator<Item = i64>, page: Bytes) {
        let (Some(pages), Some(threads)) = (&self.pages, &self.thread_projects) else {
            return;
        };
        for thread_id in thread_ids {
            threads.insert(thread_id, project_id);
        }
        if self.stamp(project_id) != stamp {
            return;
        }
        pages.insert(project_id, (page, Instant::now()));
        // A change that raced the insert bumped the stamp after the check: drop what was just kept.
        if self.stamp(project_id) != stamp {
            pages.invalidate(&project_id);
        }
    }

    /// Drops the page of `project_id` (it changed).
    pub fn forget(&self, project_id: i64) {
        self.shard(project_id).fetch_add(1, Ordering::AcqRel);
        if let Some(pages) = &self.pages {
            pages.invalidate(&project_id);
        }
    }

    /// Drops the page showing `thread_id` (a vote changed its counts).
    pub fn forget_thread(&self, thread_id: i64) {
        match self.thread_projects.as_ref().and_then(|t| t.get(&thread_id)) {
            Some(project_id) => self.forget(project_id),
            // Its page is not cached, but one may be being read right now: it must not be kept.
            None => {
                self.unplaced_votes.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_page_is_served_until_its_project_or_one_of_its_threads_changes() {
        let cache = PageCache::new(Duration::from_secs(60), Duration::ZERO, 100);
        cache.keep(7, cache.stamp(7), [70, 71].into_iter(), Bytes::from_static(b"page 7"));
        cache.keep(8, cache.stamp(8), [80].into_iter(), Bytes::from_static(b"page 8"));
        assert_eq!(cache.page(7).map(|(page, _)| page).as_deref(), Some(&b"page 7"[..]));

        cache.forget_thread(71);
        assert_eq!(cache.page(7), None);
        assert!(cache.page(8).is_some(), "another project's page stays");

        cache.forget(8);
        assert_eq!(cache.page(8), None);
        cache.forget_thread(999); // unknown thread: nothing to drop
    }

    #[test]
    fn a_page_read_while_its_project_changed_is_not_kept() {
        let cache = PageCache::new(Duration::from_secs(60), Duration::ZERO, 100);
        let before_change = cache.stamp(7);
        cache.forget(7); // a change lands while the page is being read
        cache.keep(7, before_change, std::iter::empty(), Bytes::from_static(b"old page 7"));
        assert_eq!(cache.page(7), None);

        let before_vote = cache.stamp(8);
        cache.forget_thread(80); // a vote on a thread this instance has not seen yet
        cache.keep(8, before_vote, [80].into_iter(), Bytes::from_static(b"old page 8"));
        assert_eq!(cache.page(8), None);

        let fresh = cache.stamp(8);
        cache.keep(8, fresh, [80].into_iter(), Bytes::from_static(b"page 8"));
        assert!(cache.page(8).is_some());
    }

    #[test]
    fn pages_expire_after_the_ttl() {
        let cache = PageCache::new(Duration::from_millis(50), Duration::ZERO, 100);
        cache.keep(1, cache.stamp(1), std::iter::empty(), Bytes::from_static(b"page"));
        assert!(cache.page(1).is_some());
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(cache.page(1), None);
        assert_eq!(cache.stale_page(1), None);
    }

    #[test]
    fn a_page_past_its_ttl_is_kept_for_stale_if_error_only_and_never_once_its_project_changed() {
        let cache = PageCache::new(Duration::from_millis(50), Duration::from_secs(60), 100);
        cache.keep(1, cache.stamp(1), std::iter::empty(), Bytes::from_static(b"page 1"));
        cache.keep(2, cache.stamp(2), std::iter::empty(), Bytes::from_static(b"page 2"));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(cache.page(1), None, "not fresh any more");
        let (page, age) = cache.stale_page(1).expect("kept for stale-if-error");
        assert_eq!(&page[..], b"page 1");
        assert!(age >= Duration::from_millis(120), "{age:?}");
        cache.forget(2);
        assert_eq!(cache.stale_page(2), None, "a changed project's page is never served stale");
    }

    #[test]
    fn a_zero_ttl_turns_the_cache_off() {
        let cache = PageCache::new(Duration::ZERO, Duration::from_secs(300), 100);
        cache.keep(1, cache.stamp(1), std::iter::empty(), Bytes::from_static(b"page"));
        assert_eq!(cache.page(1), None);
    }
}
