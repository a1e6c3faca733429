//! Which in-process handler serves each function binary of the template.
//!
//! An HTTP function crate exposes `pub async fn handle(app: &App, req: Request)`; a
//! function driven by other events (a schedule, a queue) exposes
//! `pub async fn handle_event(app: &App, event: serde_json::Value) -> Result<Value, E>`.
//! Registering either is one line in [`FunctionRegistry::conduit`]:
//!
//! ```ignore
//! .register("credentials", handler!(credentials::handle))
//! .register_event("token-refresh", event_handler!(token_refresh::handle_event))
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use conduit::app::App;
use futures::future::BoxFuture;
use lambda_http::{Body, Request, Response};
use serde_json::Value;

/// What a handler returns: the function's response, or the error that makes Lambda
/// report a failed invocation.
pub type HandlerResult = Result<Response<Body>, lambda_http::Error>;

/// An in-process function handler.
pub type Handler =
    Arc<dyn for<'a> Fn(&'a App, Request) -> BoxFuture<'a, HandlerResult> + Send + Sync>;

/// Wraps a function crate's `handle(&App, Request) -> Result<Response<Body>, E>` as a
/// registry [`Handler`] closure.
#[macro_export]
macro_rules! handler {
    ($f:path) => {
        |app, req| {
            ::std::boxed::Box::pin(
                async move { $f(app, req).await.map_err(::std::convert::Into::into) },
            )
        }
    };
}

/// What an event handler returns: the function's JSON result, or the error that makes
/// Lambda report a failed invocation.
pub type EventResult = Result<Value, lambda_http::Error>;

/// An in-process handler of a non-HTTP function: takes the event as JSON (an
/// EventBridge scheduled event, …) and returns the function's JSON result.
pub type EventHandler =
    Arc<dyn for<'a> Fn(&'a App, Value) -> BoxFuture<'a, EventResult> + Send + Sync>;

/// Wraps a function crate's `handle_event(&App, serde_json::Value) -> Result<Value, E>`
/// as a registry [`EventHandler`] closure.
#[macro_export]
macro_rules! event_handler {
    ($f:path) => {
        |app, event| {
            ::std::boxed::Box::pin(async move {
                $f(app, event).await.map_err(::std::convert::Into::into)
            })
        }
    };
}

/// Wraps a typed Lambda handler (`async fn(&App, LambdaEvent<E>) -> Result<R, _>`) as
/// an event handler: the event JSON is read as `E` (an event of another shape is the
/// invocation's error, as the Lambda runtime reports it) and `R` answered as JSON.
macro_rules! typed_event_handler {
    ($f:path) => {
        |app, event| {
            ::std::boxed::Box::pin(async move {
                let payload = ::serde_json::from_value(event).map_err(|e| {
                    ::lambda_http::Error::from(format!("the event does not fit the handler: {e}"))
                })?;
                let event = ::lambda_runtime::LambdaEvent::new(
                    payload,
                    ::lambda_runtime::Context::default(),
                );
                let answer = $f(app, event)
                    .await
                    .map_err(|e| ::lambda_http::Error::from(e.to_string()))?;
                ::serde_json::to_value(answer).map_err(::lambda_http::Error::from)
            })
        }
    };
}

/// The handlers by template binary name (`Metadata.BuildProperties.Binary`): HTTP
/// handlers for functions behind HttpApi routes, event handlers for the others.
#[derive(Clone, Default)]
pub struct FunctionRegistry {
    handlers: BTreeMap<String, Handler>,
    event_handlers: BTreeMap<String, EventHandler>,
}

impl std::fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionRegistry")
            .field("http", &self.handlers.keys().collect::<Vec<_>>())
            .field("event", &self.event_handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl FunctionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every Conduit function that has a handler today.
    pub fn conduit() -> Self {
        Self::new()
            .register("credentials", handler!(credentials::handle))
            .register("oauth-start", handler!(oauth_start::handle))
            .register("oauth-callback", handler!(oauth_callback::handle))
            .register("sync-config", handler!(sync_config::handle))
            .register("records", handler!(records::handle))
            .register_event("token-refresh", event_handler!(token_refresh::handle_event))
            .register("sync-runs", handler!(sync_runs::handle))
            .register_event("sync-runs", event_handler!(sync_runs::handle_event))
            .register_event("sync-worker", typed_event_handler!(sync_worker::handle))
            .register("integrations", handler!(integrations::handle))
            .register("google", handler!(google::handle))
            .register("webhooks", handler!(webhooks::handle))
            .register_event(
                "event-dispatch",
                event_handler!(event_dispatch::handle_event),
            )
    }

    /// Registers `handler` for the binary `binary` (replacing any earlier one).
    pub fn register<F>(mut self, binary: &str, handler: F) -> Self
    where
        F: for<'a> Fn(&'a App, Request) -> BoxFuture<'a, HandlerResult> + Send + Sync + 'static,
    {
        self.handlers.insert(binary.to_owned(), Arc::new(handler));
        self
    }

    /// Registers the event `handler` for the binary `binary` (replacing any earlier
    /// one): `devhost invoke` and the local scheduler call it with the event as JSON.
    pub fn register_event<F>(mut self, binary: &str, handler: F) -> Self
    where
        F: for<'a> Fn(&'a App, Value) -> BoxFuture<'a, EventResult> + Send + Sync + 'static,
    {
        self.event_handlers
            .insert(binary.to_owned(), Arc::new(handler));
        self
    }

    /// The HTTP handler of `binary`, if registered.
    pub fn get(&self, binary: &str) -> Option<Handler> {
        self.handlers.get(binary).cloned()
    }

    /// The event handler of `binary`, if registered.
    pub fn get_event(&self, binary: &str) -> Option<EventHandler> {
        self.event_handlers.get(binary).cloned()
    }

    /// The binary names with an HTTP handler.
    pub fn binaries(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// The binary names with an event handler.
    pub fn event_binaries(&self) -> impl Iterator<Item = &str> {
        self.event_handlers.keys().map(String::as_str)
    }
}
