//! Lambda entry point: builds the shared context once, then runs each scheduled sweep.
// The sweep's future nests deeper than rustc's default layout query limit allows.
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[global_allocator]
static ALLOCATOR: conduit::app::Allocator = conduit::app::Allocator;

fn main() -> Result<(), Error> {
    conduit::app::serve(|app| async move {
        let app = &app;
        lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
            token_refresh::handle(app, event)
        }))
        .await
    })
}
