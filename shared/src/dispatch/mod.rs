//! Event dispatch (issue 13): product and Conduit events run chains of outbound
//! integrations. The product events read in ([`event`]), the queue's envelope
//! ([`inbound`]), integrations and their chains ([`integration`]), the integration
//! templates as data ([`template`]) and their sandboxed rendering ([`render`]), the
//! dispatch log ([`log`]), what an invocation's events read and create once between
//! them ([`reads`], [`creations`]), and the webhook destination's signatures ([`webhook`]).

pub mod creations;
pub mod engine;
pub mod event;
pub mod inbound;
pub mod integration;
pub mod log;
pub mod reads;
pub mod render;
pub mod template;
pub mod webhook;
