//! Provider webhooks coming in (issue 17): each provider's verification — before
//! anything in the request is trusted — and the parsing of its event batches into the
//! record ids that changed, coalesced per account and entity, so a route can turn them
//! into targeted pulls. The routes, subscriptions and replay store build on these.

pub mod dynamics;
pub mod hubspot;
pub mod pipedrive;
pub mod salesforce;
pub mod zoho;

/// Why a webhook request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A header the provider always sends is missing or empty.
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    /// The request's timestamp is not a number.
    #[error("the request timestamp is not a Unix time in milliseconds")]
    BadTimestamp,
    /// The request's timestamp is outside the accepted window (a replay, or a clock
    /// far off).
    #[error("the request timestamp is {0} s away from now (at most 300 s are accepted)")]
    Stale(i64),
    /// The signature does not match the request.
    #[error("the signature does not match the request")]
    BadSignature,
    /// The request's credentials are not the ones Conduit set for this webhook.
    #[error("the credentials are not this webhook's")]
    BadCredentials,
    /// The body is not the provider's event batch.
    #[error("the body is not an event batch: {0}")]
    Malformed(String),
}
