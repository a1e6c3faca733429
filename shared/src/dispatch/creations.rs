//! The dispatches one invocation creates at once, written together.
//!
//! The queue hands the dispatcher up to ten events at a time (mostly one tenant's,
//! after the regroup), and it starts them together: each resolves its chain from the
//! same shared reads ([`super::reads`]) and reaches its creation — the dispatch with
//! its first step's in-flight mark, and the event it renders from — within a moment of
//! the others. Written one by one, that was ten transactions; here the creations that
//! arrive within [`WINDOW`] of the first share one ([`Dispatches::create_many`]), and
//! each event learns whether its dispatch was created or already existed (a delivery
//! of the same event before), exactly as it would from a write of its own. A failed
//! write is every waiting event's failure: each goes back to the queue, as alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use serde_json::Value as Json;

use super::log::Dispatch;
use crate::store::StoreError;
use crate::store::dispatches::Dispatches;

/// How long the first creation of a group waits for others to join it.
pub const WINDOW: Duration = Duration::from_millis(2);

type Written = Result<Arc<Vec<bool>>, StoreError>;
/// A group's write, awaited by every creation in it.
type Write = Shared<BoxFuture<'static, Written>>;

/// One group of creations: those that joined before it was written.
struct Group {
    /// The creations, and whether the group still takes more (it stops when its write
    /// starts).
    entries: Mutex<(bool, Vec<(Dispatch, Json)>)>,
}

/// An invocation's creations (see the module's documentation).
pub struct Creations {
    store: Dispatches,
    open: Mutex<Option<(Arc<Group>, Write)>>,
}

impl Creations {
    /// Creations written to `store`.
    pub fn new(store: Dispatches) -> Self {
        Self {
            store,
            open: Mutex::new(None),
        }
    }

    /// Stores `d` with its event (with the creations that join it); false when the
    /// dispatch already exists.
    pub async fn create(&self, d: &Dispatch, event: &Json) -> Result<bool, StoreError> {
        let Some((index, written)) = self.join(d, event) else {
            return self.store.create(d, event).await;
        };
        let created = written.await?;
        Ok(created.get(index).copied().unwrap_or(false))
    }

    /// Joins the open group, or opens one; None if the lock is poisoned.
    fn join(&self, d: &Dispatch, event: &Json) -> Option<(usize, Write)> {
        let mut open = self.open.lock().ok()?;
        if let Some((group, written)) = open.as_ref() {
            let mut entries = group.entries.lock().ok()?;
            if entries.0 {
                entries.1.push((d.clone(), event.clone()));
                return Some((entries.1.len() - 1, written.clone()));
            }
        }
        let group = Arc::new(Group {
            entries: Mutex::new((true, vec![(d.clone(), event.clone())])),
        });
        let written = write(self.store.clone(), Arc::clone(&group))
            .boxed()
            .shared();
        *open = Some((group, written.clone()));
        Some((0, written))
    }
}

/// Waits [`WINDOW`] for others to join, closes the group and writes it.
async fn write(store: Dispatches, group: Arc<Group>) -> Written {
    tokio::time::sleep(WINDOW).await;
    let entries = match group.entries.lock() {
        Ok(mut entries) => {
            entries.0 = false;
            std::mem::take(&mut entries.1)
        }
        Err(_) => {
            return Err(StoreError::Invalid(
                "a creation group's lock was poisoned".into(),
            ));
        }
    };
    let refs: Vec<(&Dispatch, &Json)> = entries.iter().map(|(d, e)| (d, e)).collect();
    store.create_many(&refs).await.map(Arc::new)
}
