//! Event dispatch (issue 13): product and Conduit events run chains of outbound
//! integrations. So far: the product events read in, and the webhook destination's
//! signatures.

pub mod event;
pub mod webhook;
