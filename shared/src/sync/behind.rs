//! Store writes that run behind a push's CRM requests.
//!
//! A push page's links, then its checkpoint and counts, are written in that order, one
//! at a time, by a task of their own, while the chunk goes on with the next CRM
//! request. The order is what keeps a push resumable: a checkpoint is only saved after
//! the links of every record before it. The first write that fails stops the task, so
//! nothing queued after it (a checkpoint in particular) is written; the chunk hears of
//! it at its next write or when it settles.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::StoreError;

type Write = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// How many writes may wait behind the one in flight before the chunk waits too.
const QUEUED: usize = 2;

/// An ordered queue of store writes run by a task of its own.
#[derive(Debug, Default)]
pub struct WriteBehind {
    queue: Option<mpsc::Sender<Write>>,
    task: Option<JoinHandle<Result<(), StoreError>>>,
}

impl WriteBehind {
    /// Queues `write` after the writes queued before it; waits only while the queue is
    /// full. Fails with the error of an earlier write that failed.
    pub async fn push(
        &mut self,
        write: impl Future<Output = Result<(), StoreError>> + Send + 'static,
    ) -> Result<(), StoreError> {
        let queue = match &self.queue {
            Some(q) => q.clone(),
            None => {
                let (tx, mut rx) = mpsc::channel::<Write>(QUEUED);
                self.task = Some(tokio::spawn(async move {
                    while let Some(w) = rx.recv().await {
                        w.await?;
                    }
                    Ok(())
                }));
                self.queue = Some(tx.clone());
                tx
            }
        };
        if queue.send(Box::pin(write)).await.is_err() {
            // The task stopped at a failed write: that failure is the answer.
            self.settle().await?;
            return Err(StoreError::Service(
                "a queued store write was dropped".into(),
            ));
        }
        Ok(())
    }

    /// Waits until every queued write is done; the first failure, if any.
    pub async fn settle(&mut self) -> Result<(), StoreError> {
        self.queue = None;
        match self.task.take() {
            None => Ok(()),
            Some(task) => task
                .await
                .map_err(|e| StoreError::Service(format!("the store writer stopped: {e}")))?,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn writes_run_in_order_and_stop_at_the_first_failure() {
        let done = Arc::new(Mutex::new(Vec::new()));
        let mut w = WriteBehind::default();
        for i in 0..5u64 {
            let done = done.clone();
            w.push(async move {
                // Later writes are quicker: order must still hold.
                tokio::time::sleep(Duration::from_millis(10 - 2 * i)).await;
                done.lock()
                    .map_err(|_| StoreError::ConditionFailed)?
                    .push(i);
                Ok(())
            })
            .await
            .unwrap();
        }
        w.settle().await.unwrap();
        assert_eq!(*done.lock().unwrap(), vec![0, 1, 2, 3, 4]);

        let mut w = WriteBehind::default();
        w.push(async { Err(StoreError::ConditionFailed) })
            .await
            .unwrap();
        let after = done.clone();
        // Queued behind the failure: never runs. Pushing may already see the failure.
        let pushed = w
            .push(async move {
                after
                    .lock()
                    .map_err(|_| StoreError::ConditionFailed)?
                    .push(99);
                Ok(())
            })
            .await;
        let settled = w.settle().await;
        assert!(pushed.is_err() || settled.is_err());
        assert!(matches!(
            pushed.err().or(settled.err()),
            Some(StoreError::ConditionFailed)
        ));
        assert!(!done.lock().unwrap().contains(&99));
        // Settled: a new push starts a new writer.
        w.push(async { Ok(()) }).await.unwrap();
        w.settle().await.unwrap();
    }
}
