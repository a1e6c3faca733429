//! Event dispatch (issue 13): product and Conduit events run chains of outbound
//! integrations. So far: the product events read in, the integration templates (as
//! data) and their sandboxed rendering, and the webhook destination's signatures.

pub mod event;
pub mod render;
pub mod template;
pub mod webhook;
