//! Event dispatch (issue 13): product and Conduit events run chains of outbound
//! integrations. So far: the webhook destination's signatures.

pub mod webhook;
