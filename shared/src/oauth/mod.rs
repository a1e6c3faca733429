//! OAuth 2.0: connecting a provider (authorization code + PKCE, single-use state) and
//! keeping its tokens valid (scheduled and on-demand refresh, one refresher at a time,
//! revocation on disconnect).

pub mod client;
pub mod connect;
pub mod flow;
pub mod lifecycle;
pub mod tokens;
