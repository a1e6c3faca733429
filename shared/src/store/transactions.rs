//! What a cancelled transaction means, and how long to wait before trying it again.
//!
//! DynamoDB cancels a whole `TransactWriteItems` and names a reason per item: a
//! condition that did not hold (`ConditionalCheckFailed`: the caller's answer, never
//! retried), another transaction writing one of the items (`TransactionConflict`) or
//! throttling (`ThrottlingError`, `ProvisionedThroughputExceeded`) — both gone on a
//! later try, so retried here with full jitter a few times before the caller gets
//! [`StoreError::Conflict`] / [`StoreError::Throttled`], which it treats as retryable —
//! and `ValidationError` and the like, a bug in the request ([`StoreError::Invalid`]).

use std::time::Duration;

use rand::Rng as _;

use super::StoreError;

/// Tries of one transaction (the first and its retries).
pub(super) const ATTEMPTS: u32 = 5;
/// The first retry waits up to this long; each later one up to twice the last.
const BASE: Duration = Duration::from_millis(25);
/// No retry waits longer than this.
const CAP: Duration = Duration::from_millis(1_000);

/// What a cancelled transaction means for its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cancellation {
    /// A condition did not hold.
    ConditionFailed,
    /// Another transaction was writing one of the items: try again.
    Conflict,
    /// DynamoDB throttled one of the items: try again, later.
    Throttled,
    /// The request itself is wrong (a bug): never retried.
    Invalid,
}

/// The meaning of a cancellation from its per-item reason codes (`None` for items
/// that were fine). A failed condition decides (retrying cannot make it hold), then a
/// refused request, then a conflict, then throttling; a cancellation with no reason we
/// know is treated as invalid, so it is seen rather than retried forever.
pub(super) fn cancellation<'a>(codes: impl IntoIterator<Item = &'a str>) -> Cancellation {
    let codes: Vec<&str> = codes.into_iter().collect();
    let any = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(c));
    if any(&["ConditionalCheckFailed"]) {
        Cancellation::ConditionFailed
    } else if any(&["ValidationError", "ItemCollectionSizeLimitExceeded"]) {
        Cancellation::Invalid
    } else if any(&["TransactionConflict"]) {
        Cancellation::Conflict
    } else if any(&[
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
    ]) {
        Cancellation::Throttled
    } else {
        Cancellation::Invalid
    }
}

/// The per-item reason codes of a cancellation: from its structured reasons, or else
/// from its message (`… cancellation reasons [ConditionalCheckFailed, None]`), which is
/// all some emulators send.
pub(super) fn reason_codes(
    e: &aws_sdk_dynamodb::types::error::TransactionCanceledException,
) -> Vec<String> {
    let structured: Vec<String> = e
        .cancellation_reasons()
        .iter()
        .map(|r| r.code().unwrap_or("None").to_owned())
        .collect();
    if !structured.is_empty() {
        return structured;
    }
    let message = e.message().unwrap_or_default();
    match (message.rfind('['), message.rfind(']')) {
        (Some(open), Some(close)) if open < close => message[open + 1..close]
            .split(',')
            .map(|c| c.trim().to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

/// The error a cancellation gives its caller once retries are used up (or at once,
/// for those never retried).
pub(super) fn error_of(c: Cancellation, codes: &[String]) -> StoreError {
    match c {
        Cancellation::ConditionFailed => StoreError::ConditionFailed,
        Cancellation::Conflict => StoreError::Conflict,
        Cancellation::Throttled => StoreError::Throttled,
        Cancellation::Invalid => {
            StoreError::Invalid(format!("transaction cancelled: [{}]", codes.join(", ")))
        }
    }
}

/// Whether an error code is DynamoDB throttling a request.
pub(super) fn is_throttle(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
        )
    )
}

/// How long to wait before retry `retry` (0 for the first): "full jitter", a uniform
/// draw up to an exponentially growing ceiling, so writers that collided spread out.
pub(super) fn full_jitter(retry: u32) -> Duration {
    let ceiling = BASE.saturating_mul(1 << retry.min(10)).min(CAP);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;

    #[test]
    fn reasons_are_told_apart() {
        let c = |codes: &[&str]| cancellation(codes.iter().copied());
        assert_eq!(
            c(&["None", "ConditionalCheckFailed"]),
            Cancellation::ConditionFailed
        );
        // A failed condition decides even beside a conflict: retrying cannot help.
        assert_eq!(
            c(&["TransactionConflict", "ConditionalCheckFailed"]),
            Cancellation::ConditionFailed
        );
        assert_eq!(c(&["None", "TransactionConflict"]), Cancellation::Conflict);
        assert_eq!(c(&["ThrottlingError", "None"]), Cancellation::Throttled);
        assert_eq!(
            c(&["ProvisionedThroughputExceeded"]),
            Cancellation::Throttled
        );
        assert_eq!(
            c(&["TransactionConflict", "ThrottlingError"]),
            Cancellation::Conflict
        );
        assert_eq!(c(&["ValidationError", "None"]), Cancellation::Invalid);
        assert_eq!(c(&[]), Cancellation::Invalid);
    }

    #[test]
    fn codes_come_from_the_reasons_or_else_the_message() {
        let structured = TransactionCanceledException::builder()
            .message("Transaction cancelled")
            .cancellation_reasons(CancellationReason::builder().code("None").build())
            .cancellation_reasons(
                CancellationReason::builder()
                    .code("TransactionConflict")
                    .build(),
            )
            .build();
        assert_eq!(reason_codes(&structured), ["None", "TransactionConflict"]);
        let message_only = TransactionCanceledException::builder()
            .message("Transaction cancelled, please refer cancellation reasons for specific reasons [None, ConditionalCheckFailed]")
            .build();
        assert_eq!(
            reason_codes(&message_only),
            ["None", "ConditionalCheckFailed"]
        );
        assert!(reason_codes(&TransactionCanceledException::builder().build()).is_empty());
    }

    #[test]
    fn retries_wait_a_jittered_growing_time_never_past_the_cap() {
        for retry in 0..20 {
            let ceiling = BASE.saturating_mul(1 << retry.min(10)).min(CAP);
            for _ in 0..50 {
                assert!(full_jitter(retry) <= ceiling);
            }
        }
        // Jittered: two waits of one retry are not always the same.
        let waits: std::collections::BTreeSet<Duration> = (0..50).map(|_| full_jitter(4)).collect();
        assert!(waits.len() > 1);
    }

    /// Plain writes that come back throttled are retried by the SDK: the standard
    /// retry mode (what `BehaviorVersion::latest()` gives every client here) treats
    /// `ProvisionedThroughputExceededException` and `ThrottlingException` as
    /// retryable, with backoff; what outlasts it becomes [`StoreError::Throttled`].
    #[tokio::test]
    async fn the_sdk_retries_throttled_writes_in_standard_mode() {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await;
        let retry = config.retry_config().expect("a retry config");
        assert_eq!(retry.mode(), aws_config::retry::RetryMode::Standard);
        assert!(retry.max_attempts() >= 3, "{retry:?}");
    }

    #[test]
    fn throttling_codes_are_recognised() {
        assert!(is_throttle(Some("ProvisionedThroughputExceededException")));
        assert!(is_throttle(Some("ThrottlingException")));
        assert!(!is_throttle(Some("ConditionalCheckFailedException")));
        assert!(!is_throttle(None));
    }
}
