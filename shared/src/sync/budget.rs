//! One request budget per connection, shared by every worker that calls the provider
//! for it, kept in DynamoDB (not per process).
//!
//! The budget is a GCRA schedule: the item holds the earliest time the next request
//! may start (`tat`, Unix ms). Taking a slot moves it one interval on with a
//! conditional write, so concurrent workers interleave instead of bursting; a provider's
//! 429 pushes it past the provider's `Retry-After` for everyone. The interval is the
//! provider's window divided by its allowance, with a 2% margin, so no window of the
//! provider's length ever holds more than its allowance. Where the margin leaves room
//! for more than one request beyond a window's worth, a taker may start up to that many
//! intervals early, less one kept for jitter (GCRA's tolerance): a run's first requests
//! then go without waiting, and a window still holds fewer than the allowance.
//!
//! Sync's workers (a few per connection, many requests each) take slots by
//! compare-and-swap, one slot ahead. Dispatch steps (a request or two each, up to a
//! hundred at once on one connection) take them by an atomic add that never loses a
//! race ([`Budget::without_look_ahead`]): with compare-and-swap they spent seven store
//! calls a step on retries. One taker of a process writes at a time for a connection,
//! taking a slot for itself and one for each taker of the process waiting behind it
//! (ten events of a batch reach one provider at once), plus spares when it found the
//! schedule idle (one, or as many as the tolerance covers: the next steps then need no
//! write); the others take theirs from the process's pool. A pooled slot whose time has
//! passed unused is dropped, a gap; a provider's 429 empties the pool.
//!
//! GCRA bounds the slots' start times; a provider counts arrivals. A dispatch step woken
//! more than an interval after its slot (a loaded process wakes its timers late, and
//! those it wakes together would arrive together) gives the slot up, a gap, and takes
//! the next one, up to three times. An add that lands when the schedule has fallen
//! behind the clock (idle by then, or the store answered late) would hand this taker and
//! the next ones slots in the past, all starting at once: the slot is given up and the
//! schedule claimed from now (GCRA's `max(tat, now)`, which an add alone cannot do).
//! [`lateness`] reports how late takers started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use crate::domain::{ConnectionId, TenantId};
use crate::providers::Provider;
use crate::store::budget::RateSchedule;
use crate::store::{StoreError, Table};
use tokio::task::JoinHandle;

/// How long one taker may wait for its slot before it gives up (and its message is
/// retried later): far more than any provider's window.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// A connection's shared request budget.
#[derive(Debug)]
pub struct Budget {
    schedule: Schedule,
    known_tat: Option<i64>,
    /// The next slot, taken while the current one is waited for and used: the taker
    /// then finds its slot without a store round trip.
    ahead: Option<JoinHandle<Result<Slot, BudgetError>>>,
    /// Whether the next slot is taken ahead (a taker of many requests, a sync page
    /// run); a taker of one or two (a dispatch step) would leave it unused, a slot of
    /// the connection's allowance wasted.
    look_ahead: bool,
}

/// Where this process last left each connection's schedule (`tat`): a taker tries it
/// before reading the item, so a warm worker takes a slot in one conditional write. A
/// stale value (another process moved the schedule on) only costs the failed write and
/// a read, as without it.
static LAST_SEEN: LazyLock<Mutex<HashMap<String, i64>>> = LazyLock::new(Mutex::default);
/// Connections remembered at most (the map is emptied beyond it).
const LAST_SEEN_MAX: usize = 10_000;

fn last_seen(key: &str) -> Option<i64> {
    LAST_SEEN.lock().ok()?.get(key).copied()
}

fn remember(key: &str, tat: i64) {
    if let Ok(mut seen) = LAST_SEEN.lock() {
        if seen.len() >= LAST_SEEN_MAX && !seen.contains_key(key) {
            seen.clear();
        }
        let at = seen.entry(key.to_owned()).or_insert(tat);
        *at = (*at).max(tat);
    }
}

/// Slots a dispatch taker's process keeps for one connection: those it took in one
/// write for the takers waiting behind the writer (and spares when the schedule was
/// idle), handed out in order. A slot whose time has passed is dropped (a gap).
#[derive(Default)]
struct Pool {
    slots: tokio::sync::Mutex<std::collections::VecDeque<Slot>>,
    /// Takers waiting for the pool (the writer counts them into its write).
    waiting: std::sync::atomic::AtomicUsize,
}

static POOLS: LazyLock<Mutex<HashMap<String, std::sync::Arc<Pool>>>> =
    LazyLock::new(Mutex::default);

/// Slots one write takes at most (the dispatch function runs ten messages at once).
const MAX_RUN: usize = 10;
/// Spare slots a write claiming an idle schedule takes at most.
const MAX_SPARES: usize = 8;

fn pool(key: &str) -> std::sync::Arc<Pool> {
    let Ok(mut pools) = POOLS.lock() else {
        return std::sync::Arc::default();
    };
    if pools.len() >= LAST_SEEN_MAX && !pools.contains_key(key) {
        pools.clear();
    }
    pools.entry(key.to_owned()).or_default().clone()
}

/// How often one dispatch step gives up a slot it woke too late for before it sends
/// anyway (the wait is then a sign of a starved process, not of bunching).
const MAX_RETAKES: u32 = 3;

/// How late takers of this process started after their slots: buckets of lateness and
/// the slots given up for it ([`lateness`]).
static LATENESS: Lateness = Lateness::new();

/// Upper bounds (ms, inclusive) of the lateness buckets; the last bucket is beyond.
pub const LATENESS_BOUNDS_MS: [i64; 5] = [5, 20, 50, 100, 250];

/// Counters of how late takers woke for their slots.
#[derive(Debug)]
struct Lateness {
    buckets: [AtomicU64; LATENESS_BOUNDS_MS.len() + 1],
    retaken: AtomicU64,
    rebased: AtomicU64,
    pooled: AtomicU64,
    expired: AtomicU64,
}

/// What [`lateness`] reports: starts per bucket of [`LATENESS_BOUNDS_MS`] (the last one:
/// later than the last bound; lateness counted from the slot's own time, so a slow
/// store round trip counts), slots given up and taken again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatenessReport {
    pub starts: Vec<u64>,
    pub retaken: u64,
    /// Slots an add found already behind the clock, given up for a claim from now.
    pub rebased: u64,
    /// Slots handed out from a process's pool (taken by another taker's write).
    pub pooled: u64,
    /// Pooled slots whose time passed unused (gaps).
    pub expired: u64,
}

impl Lateness {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; LATENESS_BOUNDS_MS.len() + 1],
            retaken: AtomicU64::new(0),
            rebased: AtomicU64::new(0),
            pooled: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    fn record(&self, late_ms: i64) {
        let i = LATENESS_BOUNDS_MS
            .iter()
            .position(|&bound| late_ms <= bound)
            .unwrap_or(LATENESS_BOUNDS_MS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    fn retaken(&self) {
        self.retaken.fetch_add(1, Ordering::Relaxed);
    }

    fn rebased(&self) {
        self.rebased.fetch_add(1, Ordering::Relaxed);
    }

    fn pooled(&self) {
        self.pooled.fetch_add(1, Ordering::Relaxed);
    }

    fn expired(&self) {
        self.expired.fetch_add(1, Ordering::Relaxed);
    }
}

/// How late this process's takers started after their slots since it began (a figure
/// for benchmarks and operators: bunched late starts are what draw a provider's 429s).
pub fn lateness() -> LatenessReport {
    LatenessReport {
        starts: LATENESS
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect(),
        retaken: LATENESS.retaken.load(Ordering::Relaxed),
        rebased: LATENESS.rebased.load(Ordering::Relaxed),
        pooled: LATENESS.pooled.load(Ordering::Relaxed),
        expired: LATENESS.expired.load(Ordering::Relaxed),
    }
}

/// The shared schedule: where it is kept and its spacing.
#[derive(Debug, Clone)]
struct Schedule {
    store: RateSchedule,
    /// Slots are taken by an atomic add (many takers of a request or two each), not
    /// by a compare-and-swap.
    adding: bool,
    /// The connection, as [`LAST_SEEN`] keys it.
    key: String,
    interval_ms: i64,
    /// How early a taker may start before the schedule's time (GCRA's tolerance).
    tolerance_ms: i64,
}

/// A slot taken: when the request may start, and the schedule after it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: i64,
    tat: i64,
}

/// The spacing of requests for a provider: its window over its allowance, +2%.
pub fn interval_for(provider: &Provider) -> Duration {
    let limit = &provider.rate_limit;
    match limit.requests.zip(limit.window_seconds) {
        Some((requests, window)) if requests > 0 => {
            Duration::from_micros(u64::from(window) * 1_020_000 / u64::from(requests))
        }
        // Only a daily allowance: pace at 50 requests a second.
        _ => Duration::from_millis(20),
    }
}

/// How early a request may start before its slot for a provider: in GCRA, a window
/// of length W holds at most `1 + W / interval + k` requests when takers may start `k`
/// intervals early; `k` is what the 2% margin leaves below the allowance, less one
/// request kept for jitter (HubSpot's 110 per 10 s: one interval; none for small or
/// daily allowances).
pub fn tolerance_for(provider: &Provider) -> Duration {
    let limit = &provider.rate_limit;
    match limit.requests.zip(limit.window_seconds) {
        Some((requests, _)) if requests > 0 => {
            let in_window = u64::from(requests) * 100 / 102;
            let spare = u64::from(requests).saturating_sub(2 + in_window);
            interval_for(provider) * u32::try_from(spare).unwrap_or(0)
        }
        _ => Duration::ZERO,
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Schedule {
    /// Spare slots a write takes beside its takers' when it finds the schedule idle:
    /// one, or as many intervals as the tolerance lets a taker start early (at most
    /// [`MAX_SPARES`]). Nothing was waiting, so the spares start one interval apart
    /// from now and later takers of this process use them without a write (a
    /// connection whose steps come one at a time, a little slower than its interval,
    /// otherwise claims the idle schedule at every other step). They cost another
    /// process's takers no wait: the spares put the schedule no further on than the
    /// `tolerance` they may start early by. A spare whose time passed by half an
    /// interval is dropped unused, a gap (never a second request in a window).
    fn idle_spares(&self) -> usize {
        let within = self
            .tolerance_ms
            .checked_div(self.interval_ms)
            .and_then(|k| usize::try_from(k).ok())
            .unwrap_or(0);
        within.clamp(1, MAX_SPARES)
    }

    /// Takes the next free slot that starts at `not_before` or later.
    async fn take(&self, known_tat: Option<i64>, not_before: i64) -> Result<Slot, BudgetError> {
        if self.adding {
            self.take_pooled(known_tat, not_before).await
        } else {
            self.take_swapping(known_tat, not_before).await
        }
    }

    /// By compare-and-swap (`known_tat`: where this taker last left the schedule,
    /// tried before reading it).
    async fn take_swapping(
        &self,
        mut known_tat: Option<i64>,
        not_before: i64,
    ) -> Result<Slot, BudgetError> {
        for _ in 0..50 {
            let old = match known_tat {
                Some(t) => t,
                None => self.store.read().await?,
            };
            let now = now_ms();
            let start = (old - self.tolerance_ms).max(now).max(not_before);
            if start - now > MAX_WAIT.as_millis() as i64 {
                return Err(BudgetError::Exhausted(Duration::from_millis(
                    (start - now) as u64,
                )));
            }
            let tat = start.max(old) + self.interval_ms;
            if self.store.swap(old, tat).await? {
                remember(&self.key, tat);
                return Ok(Slot { start, tat });
            }
            known_tat = None;
        }
        Err(BudgetError::Contended)
    }

    /// A slot from this process's pool for the connection, or from a write that takes
    /// one for this taker and one for each taker of this process waiting behind it (and
    /// spares when the schedule was idle). One taker writes at a time; the others wait
    /// for its write and find their slots in the pool.
    async fn take_pooled(
        &self,
        known_tat: Option<i64>,
        not_before: i64,
    ) -> Result<Slot, BudgetError> {
        let pool = pool(&self.key);
        pool.waiting.fetch_add(1, Ordering::SeqCst);
        let mut kept = pool.slots.lock().await;
        pool.waiting.fetch_sub(1, Ordering::SeqCst);
        let now = now_ms();
        while let Some(slot) = kept.pop_front() {
            if slot.start < now - self.interval_ms / 2 || slot.start < not_before {
                // Its time has passed (a gap in the schedule, never a late start).
                LATENESS.expired();
                continue;
            }
            if slot.start - now > MAX_WAIT.as_millis() as i64 {
                kept.push_front(slot);
                return Err(BudgetError::Exhausted(Duration::from_millis(
                    (slot.start - now) as u64,
                )));
            }
            LATENESS.pooled();
            return Ok(slot);
        }
        let behind = pool.waiting.load(Ordering::SeqCst).min(MAX_RUN - 1);
        let mut run = self.take_adding(known_tat, not_before, 1 + behind).await?;
        let first = run.remove(0);
        kept.extend(run);
        Ok(first)
    }

    /// `n` consecutive slots (and spares when the schedule was idle: see
    /// [`Schedule::idle_spares`]; they serve the takers that follow without a write).
    /// In one write when
    /// `known_tat` (where the schedule was last seen) says it is busy, else in at most
    /// two: an idle schedule is claimed at once (`tat` = now + n intervals); a busy one
    /// is advanced by n intervals (an atomic add, which concurrent takers never lose),
    /// the first slot starting `tolerance` before the `tat` it found. GCRA's spacing
    /// either way: `tat' = max(tat, start) + interval`, per slot.
    async fn take_adding(
        &self,
        known_tat: Option<i64>,
        not_before: i64,
        n: usize,
    ) -> Result<Vec<Slot>, BudgetError> {
        let now = now_ms();
        let mut floor = now.max(not_before);
        // Where the schedule is at least (it only moves on): a slot further away than a
        // taker may wait is refused without taking it, so takers that give up never
        // push the schedule on for those that come after.
        let known_tat = known_tat.max(last_seen(&self.key));
        if let Some(t) = known_tat
            && t - self.tolerance_ms - now > MAX_WAIT.as_millis() as i64
        {
            return Err(BudgetError::Exhausted(Duration::from_millis(
                (t - self.tolerance_ms - now) as u64,
            )));
        }
        let mut busy = known_tat.is_some_and(|t| t >= floor);
        for _ in 0..6 {
            if !busy {
                let count = n + self.idle_spares();
                let tat = floor + count as i64 * self.interval_ms;
                if self.store.claim_idle(floor, tat).await? {
                    remember(&self.key, tat);
                    // Idle: the slots start at `floor`, one interval apart (no
                    // tolerance: nothing was waiting).
                    return Ok((0..count as i64)
                        .map(|k| Slot {
                            start: floor + k * self.interval_ms,
                            tat: floor + (k + 1) * self.interval_ms,
                        })
                        .collect());
                }
            }
            // Busy: the schedule is at `floor` or later, and only ever moves on.
            let span = n as i64 * self.interval_ms;
            let Some(tat) = self.store.advance(span).await? else {
                busy = false; // never written, or removed meanwhile: claim it
                continue;
            };
            remember(&self.key, tat);
            let found = tat - span;
            let now = now_ms();
            if found < now - self.interval_ms / 2 {
                // The schedule had fallen behind the clock when the add landed (idle by
                // then, or the store answered late): this slot is in the past, and the
                // next takers' would be too, all starting at once. It stays a gap; the
                // schedule is claimed from now instead (GCRA: tat' = max(tat, now) + I).
                LATENESS.rebased();
                busy = false;
                floor = now.max(not_before);
                continue;
            }
            // Each slot may start `tolerance` before its own time, none before `floor`.
            let slots: Vec<Slot> = (0..n as i64)
                .map(|k| Slot {
                    start: (found + k * self.interval_ms - self.tolerance_ms).max(floor),
                    tat: found + (k + 1) * self.interval_ms,
                })
                .collect();
            let start = slots[0].start;
            if start - now > MAX_WAIT.as_millis() as i64 {
                // The slots are taken and stay unused: a gap in the schedule, never a
                // second request in a window.
                return Err(BudgetError::Exhausted(Duration::from_millis(
                    (start - now) as u64,
                )));
            }
            return Ok(slots);
        }
        Err(BudgetError::Contended)
    }
}

impl Budget {
    /// The budget of a connection, spacing requests by `interval`, a taker starting up
    /// to `tolerance` before its slot.
    pub fn new(
        table: Table,
        tenant: &TenantId,
        connection: &ConnectionId,
        interval: Duration,
        tolerance: Duration,
    ) -> Self {
        let interval_ms = interval.as_millis().max(1) as i64;
        let key = format!("{}/{}", tenant.as_str(), connection.as_str());
        Self {
            known_tat: None,
            schedule: Schedule {
                store: RateSchedule::new(table, tenant, connection),
                adding: false,
                key,
                interval_ms,
                tolerance_ms: (tolerance.as_millis() as i64).min(interval_ms * 10),
            },
            ahead: None,
            look_ahead: true,
        }
    }

    /// The same for a taker of a request or two, of which there may be many at once
    /// (dispatch steps): no slot taken ahead (it would go unused), slots taken by an
    /// atomic add from where this process last saw the schedule.
    pub fn without_look_ahead(mut self) -> Self {
        self.look_ahead = false;
        self.schedule.adding = true;
        self.known_tat = last_seen(&self.schedule.key);
        self
    }

    /// Takes the next slot and waits for it. Fails if the wait would exceed
    /// [`MAX_WAIT`] (the caller retries the work later) or the store fails.
    pub async fn acquire(&mut self) -> Result<(), BudgetError> {
        let ahead = match self.ahead.take() {
            Some(taken) => taken.await.ok().and_then(Result::ok),
            None => None,
        };
        let slot = match ahead {
            Some(slot) => slot,
            None => match self.schedule.take(self.known_tat, 0).await {
                Ok(slot) => slot,
                Err(e) => {
                    self.known_tat = None;
                    return Err(e);
                }
            },
        };
        // A taker late for its slot starts now, and its next slot is an interval after
        // (less the tolerance), as GCRA counts a late arrival.
        let mut slot = slot;
        let mut retakes = 0;
        loop {
            let start = slot.start.max(now_ms());
            self.known_tat = Some(slot.tat);
            if self.look_ahead {
                let schedule = self.schedule.clone();
                let not_before = start + self.schedule.interval_ms - self.schedule.tolerance_ms;
                self.ahead = Some(tokio::spawn(async move {
                    schedule.take(Some(slot.tat), not_before).await
                }));
            }
            let wait = start - now_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            let late = now_ms() - slot.start;
            LATENESS.record(late);
            // A dispatch step starting more than an interval after its slot's time (woken
            // late, or its store round trip took that long) would land in the window of
            // the takers after it: GCRA's bound holds for start times within an interval
            // of their slots, and a provider counts arrivals. It gives the slot up (a
            // gap, never a second request) and takes the next.
            if !self.schedule.adding || late <= self.schedule.interval_ms || retakes >= MAX_RETAKES
            {
                return Ok(());
            }
            retakes += 1;
            LATENESS.retaken();
            slot = match self.schedule.take(self.known_tat, 0).await {
                Ok(slot) => slot,
                Err(e) => {
                    self.known_tat = None;
                    return Err(e);
                }
            };
        }
    }

    /// The provider refused a request for `wait`: nobody starts another before then.
    pub async fn hold_off(&mut self, wait: Duration) -> Result<(), BudgetError> {
        // A slot taken ahead may fall inside the hold: it is given up.
        if let Some(taken) = self.ahead.take() {
            taken.abort();
        }
        // Takers may start `tolerance` before the schedule: it is set that much later.
        let until = now_ms() + wait.as_millis() as i64 + self.schedule.tolerance_ms;
        if self.schedule.adding {
            // Slots this process kept may fall inside the hold: given up.
            pool(&self.schedule.key).slots.lock().await.clear();
            // One write (a schedule already later stays as it is): adders never make it
            // lose a race.
            self.schedule.store.claim_idle(until, until).await?;
            remember(&self.schedule.key, until);
            self.known_tat = Some(self.known_tat.map_or(until, |t| t.max(until)));
            return Ok(());
        }
        let mut known_tat = self.known_tat;
        for _ in 0..20 {
            let old = match known_tat {
                Some(t) => t,
                None => self.schedule.store.read().await?,
            };
            if old >= until {
                self.known_tat = Some(old);
                return Ok(());
            }
            if self.schedule.store.swap(old, until).await? {
                remember(&self.schedule.key, until);
                self.known_tat = Some(until);
                return Ok(());
            }
            known_tat = None;
        }
        self.known_tat = None;
        Err(BudgetError::Contended)
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        if let Some(taken) = self.ahead.take() {
            taken.abort();
        }
    }
}

/// The budget could not give a slot.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The next slot is further away than a worker may wait.
    #[error("the connection's request budget is used up for the next {0:?}")]
    Exhausted(Duration),
    /// Too many workers raced for slots.
    #[error("the connection's request budget is contended")]
    Contended,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Catalogue;

    /// In GCRA a window of length W holds at most 1 + ⌊W / interval⌋ + k requests when
    /// takers may start k intervals early; every provider's stays under its allowance
    /// with one request to spare.
    #[test]
    fn no_window_holds_the_allowance() {
        let catalogue = Catalogue::get().unwrap();
        let hubspot = catalogue.provider("hubspot").unwrap();
        assert_eq!(tolerance_for(hubspot), interval_for(hubspot));
        for id in [
            "hubspot",
            "salesforce",
            "zoho",
            "pipedrive",
            "zendesk",
            "dynamics365",
        ] {
            let Some(p) = catalogue.provider(id) else {
                continue;
            };
            let (Some(requests), Some(window)) =
                (p.rate_limit.requests, p.rate_limit.window_seconds)
            else {
                assert_eq!(tolerance_for(p), Duration::ZERO, "{id}");
                continue;
            };
            let interval = interval_for(p).as_micros();
            let k = tolerance_for(p).as_micros() / interval;
            let most = 1 + u128::from(window) * 1_000_000 / interval + k;
            assert!(most < u128::from(requests), "{id}: {most} of {requests}");
        }
    }
}
