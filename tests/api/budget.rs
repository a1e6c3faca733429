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
    let began = unix_ms();

    // Five dispatch-step takers on this test's (single-threaded) runtime.
    let starts = Arc::new(Mutex::new(Vec::new()));
    let takers: Vec<_> = (0..TAKERS)
        .map(|_| {
            let budget = Budget::new(
                table.clone(),
                &tenant,
                &connection,
                INTERVAL,
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
    let interval = INTERVAL.as_millis() as i64;
    while schedule.read().await.expect("schedule") < began + TAKERS as i64 * interval {
        assert!(
            Instant::now() < deadline,
            "the takers never took their slots"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::thread::sleep(INTERVAL * (TAKERS as u32 + 1));
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
            .take_while(|s| s.duration_since(*start) < INTERVAL / 2)
            .count();
        assert!(
            close <= 2,
            "{close} takers started within {:?}: {starts:?}",
            INTERVAL / 2
        );
    }
    assert!(lateness().retaken - retaken_before >= 3, "{:?}", lateness());
    // The slots given up stay gaps: the schedule moved on once per slot taken.
    let tat = schedule.read().await.expect("schedule");
    let taken = (tat - began) / interval;
    assert!(taken >= TAKERS as i64 + 3, "{taken} slots taken");
}
