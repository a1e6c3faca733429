//! The shared rate budget against the local DynamoDB: a dispatch step that wakes more
//! than an interval after its slot gives the slot up and takes the next one, so takers
//! delayed together (a starved process) never reach the provider in one burst.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conduit::domain::{ConnectionId, TenantId};
use conduit::store::budget::RateSchedule;
use conduit::sync::budget::{Budget, lateness};
use scenarios::TestApp;

const TAKERS: usize = 5;
const INTERVAL: Duration = Duration::from_millis(200);
/// The late-wake test's interval: long enough that a slow store (a loaded CI machine)
/// still leaves most takers waiting when the runtime is blocked.
const LATE_INTERVAL: Duration = Duration::from_millis(500);

fn unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test]
async fn takers_woken_late_give_up_their_slots_instead_of_bunching() {
    let app = TestApp::spawn().await;
    let table = app.app().table.clone();
    let tenant = TenantId::parse(&app.tenant()).expect("tenant");
    let connection = ConnectionId::generate();
    let schedule = RateSchedule::new(table.clone(), &tenant, &connection);
    let retaken_before = lateness().retaken;
    let rebased_before = lateness().rebased;
    let began = unix_ms();

    // Five dispatch-step takers on this test's (single-threaded) runtime.
    let starts = Arc::new(Mutex::new(Vec::new()));
    let takers: Vec<_> = (0..TAKERS)
        .map(|_| {
            let budget = Budget::new(
                table.clone(),
                &tenant,
                &connection,
                LATE_INTERVAL,
                Duration::ZERO,
            )
            .without_look_ahead();
            let starts = starts.clone();
            tokio::spawn(async move {
                let mut budget = budget;
                budget.acquire().await.expect("a slot");
                starts.lock().unwrap().push(Instant::now());
            })
        })
        .collect();
    // Once all five hold slots (the schedule five intervals on from when they began),
    // the runtime is blocked for longer than their slots span: they all wake late.
    let deadline = Instant::now() + Duration::from_secs(30);
    let interval = LATE_INTERVAL.as_millis() as i64;
    while schedule.read().await.expect("schedule") < began + TAKERS as i64 * interval {
        assert!(
            Instant::now() < deadline,
            "the takers never took their slots"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::thread::sleep(LATE_INTERVAL * (TAKERS as u32 + 1));
    let blocked_until = Instant::now();
    for taker in takers {
        taker.await.expect("taker");
    }

    let mut starts = starts.lock().unwrap().clone();
    starts.sort();
    assert_eq!(starts.len(), TAKERS);
    // Without giving slots up, every late taker would start the moment the runtime ran
    // again; now at most two start within half an interval (one woken late by less than
    // an interval, one on time for a slot taken again).
    for (i, start) in starts.iter().enumerate() {
        let close = starts[i..]
            .iter()
            .take_while(|s| s.duration_since(*start) < LATE_INTERVAL / 2)
            .count();
        assert!(
            close <= 2,
            "{close} takers started within {:?}: {starts:?}",
            LATE_INTERVAL / 2
        );
    }
    // The takers still waiting when the runtime was blocked all woke late; at most one
    // of them (its slot within an interval of the block's end) was late by less than
    // an interval, every other one gave its slot up. (A slow store can let the first
    // takers start before the block; the interval is long enough that most still wait.)
    let woke_late = starts.iter().filter(|s| **s >= blocked_until).count();
    assert!(
        woke_late >= 2,
        "only {woke_late} takers were waiting: {starts:?}"
    );
    // That count assumes every taker held its slot before the block. A write that
    // landed behind the clock (a slow store) claims the schedule afresh from then,
    // which moves it past the wait's mark before the last takers hold slots: those take
    // theirs after the block, on time, and are not late wakers. Then only the spacing
    // above is the test.
    let retaken = lateness().retaken - retaken_before;
    let rebased = lateness().rebased - rebased_before;
    assert!(
        rebased > 0 || retaken as usize + 1 >= woke_late,
        "{woke_late} takers woke late, {retaken} slots given up: {:?}",
        lateness()
    );
    // The slots given up stay gaps: the schedule moved on once per slot taken.
    let tat = schedule.read().await.expect("schedule");
    let taken = (tat - began) / interval;
    assert!(
        taken as usize >= TAKERS + woke_late - 1,
        "{taken} slots taken"
    );
}

/// Ten dispatch steps of one process reaching one provider at once (a batch's events)
/// take their slots in two writes, not ten, and still start an interval apart; a 429's
/// hold empties the pool, so no kept slot starts inside it.
#[tokio::test]
async fn takers_of_one_process_share_their_writes_and_keep_the_spacing() {
    const MANY: usize = 10;
    // A moto of its own: its count of UpdateItem requests is this test's alone.
    let app = TestApp::isolated_with_ddb(Default::default(), devhost::DdbKnobs::default()).await;
    let table = app.app().table.clone();
    let tenant = TenantId::parse(&app.tenant()).expect("tenant");
    let connection = ConnectionId::generate();
    let budget = || {
        Budget::new(
            table.clone(),
            &tenant,
            &connection,
            INTERVAL,
            Duration::ZERO,
        )
        .without_look_ahead()
    };
    let before = updates(&app).await;
    let starts = Arc::new(Mutex::new(Vec::new()));
    let takers: Vec<_> = (0..MANY)
        .map(|_| {
            let mut budget = budget();
            let starts = starts.clone();
            tokio::spawn(async move {
                budget.acquire().await.expect("a slot");
                starts.lock().unwrap().push(Instant::now());
            })
        })
        .collect();
    for taker in takers {
        taker.await.expect("taker");
    }
    let writes = updates(&app).await - before;
    // The first taker writes alone (the others are not waiting yet) and finds the
    // schedule idle, so it takes a spare; the second takes the spare; the third writes
    // for itself and the seven waiting behind it.
    assert!(writes <= 3, "{writes} writes for {MANY} takers");
    let mut starts = starts.lock().unwrap().clone();
    starts.sort();
    // Slots an interval apart; a taker may start up to an interval after its slot (it
    // starts when it gets it: a slow store answer or a busy runtime makes it late), so
    // the i-th start is at least i - 1 intervals after the first, and no three start
    // within one interval (the (i+2)-th slot is two intervals after the i-th). Two may
    // start close together — the first late, the next on time — as GCRA allows.
    for (i, start) in starts.iter().enumerate().skip(1) {
        let since_first = start.duration_since(starts[0]);
        assert!(
            since_first + Duration::from_millis(5) >= INTERVAL * (i as u32 - 1),
            "taker {i} started {since_first:?} after the first (interval {INTERVAL:?}): {starts:?}"
        );
    }
    no_three_within(&starts, INTERVAL);

    // A 429 holds everyone off; a slot kept in the pool from before is not used inside
    // the hold. (The schedule is idle by then: the taker keeps a spare.)
    tokio::time::sleep(INTERVAL * 2).await;
    let mut one = budget();
    one.acquire().await.expect("a slot");
    let held_from = Instant::now();
    let hold = Duration::from_millis(600);
    one.hold_off(hold).await.expect("hold");
    let mut next = budget();
    next.acquire().await.expect("a slot after the hold");
    assert!(
        held_from.elapsed() + Duration::from_millis(5) >= hold,
        "a taker started {:?} into a {hold:?} hold",
        held_from.elapsed()
    );
}

/// Steps that reach a connection one at a time, a little slower than its interval (a
/// chain's second provider, paced by the first's budget), find its schedule idle each
/// time: the write that claims it takes as many spares as the tolerance covers, and the
/// steps that follow start from them without a write of their own.
#[tokio::test]
async fn takers_arriving_one_at_a_time_share_an_idle_claims_spares() {
    const MANY: u32 = 9;
    // Longer than the others': a spare is dropped once half an interval late, and the
    // first taker starts late by the claim's own round trip (slow on a loaded host).
    const SLOW: Duration = Duration::from_millis(500);
    let app = TestApp::isolated_with_ddb(Default::default(), devhost::DdbKnobs::default()).await;
    let table = app.app().table.clone();
    let tenant = TenantId::parse(&app.tenant()).expect("tenant");
    let connection = ConnectionId::generate();
    let before = updates(&app).await;
    let mut starts: Vec<Instant> = Vec::new();
    for k in 0..MANY {
        // Paced from the first start, a fiftieth of an interval slower than the budget.
        if let Some(first) = starts.first() {
            tokio::time::sleep_until((*first + SLOW * k * 51 / 50).into()).await;
        }
        let mut budget =
            Budget::new(table.clone(), &tenant, &connection, SLOW, SLOW * 4).without_look_ahead();
        budget.acquire().await.expect("a slot");
        starts.push(Instant::now());
    }
    let writes = updates(&app).await - before;
    // Four spares a claim: nine steps in two writes (one spare a claim took five).
    assert!(
        writes <= 3,
        "{writes} writes for {MANY} takers one at a time: {:?}, {:?}",
        lateness(),
        starts
            .iter()
            .map(|s| s.duration_since(starts[0]).as_millis())
            .collect::<Vec<_>>()
    );
    // None waited: each started when it came (its slot had begun), and no three
    // started within one interval.
    for (k, start) in starts.iter().enumerate() {
        let since_first = start.duration_since(starts[0]);
        let came = SLOW * k as u32 * 51 / 50;
        assert!(
            since_first < came + SLOW / 2,
            "taker {k} waited: {starts:?}"
        );
    }
    no_three_within(&starts, SLOW);
}

/// Asserts that no three of `starts` (in order) fall within one `interval`: GCRA lets two
/// start close together (the first late, the next on time), never three.
fn no_three_within(starts: &[Instant], interval: Duration) {
    for (i, start) in starts.iter().enumerate().skip(2) {
        let span = start.duration_since(starts[i - 2]);
        assert!(
            span + Duration::from_millis(5) >= interval,
            "three takers started within {span:?}: {starts:?}"
        );
    }
}

/// The UpdateItem requests `app`'s moto has served.
async fn updates(app: &TestApp) -> u64 {
    app.ddb_capacity()
        .await
        .requests
        .get("DynamoDB_20120810.UpdateItem")
        .copied()
        .unwrap_or(0)
}
