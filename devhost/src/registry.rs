//! Which in-process handler serves each function binary of the template.
//!
//! A function crate exposes `pub async fn handle(app: &App, req: Request)`; registering
//! it is one line in [`FunctionRegistry::conduit`]:
//!
//! ```ignore
//! .register("credentials", handler!(credentials::handle))
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use conduit::app::App;
use futures::future::BoxFuture;
use lambda_http::{Body, Request, Response};

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

/// The handlers by template binary name (`Metadata.BuildProperties.Binary`).
#[derive(Clone, Default)]
pub struct FunctionRegistry {
    handlers: BTreeMap<String, Handler>,
}

impl std::fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl FunctionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every Conduit function that has a handler today.
    pub fn conduit() -> Self {
        Self::new().register("credentials", handler!(credentials::handle))
    }

    /// Registers `handler` for the binary `binary` (replacing any earlier one).
    pub fn register<F>(mut self, binary: &str, handler: F) -> Self
    where
        F: for<'a> Fn(&'a App, Request) -> BoxFuture<'a, HandlerResult> + Send + Sync + 'static,
    {
        self.handlers.insert(binary.to_owned(), Arc::new(handler));
        self
    }

    /// The handler of `binary`, if registered.
    pub fn get(&self, binary: &str) -> Option<Handler> {
        self.handlers.get(binary).cloned()
    }

    /// The registered binary names.
    pub fn binaries(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}
