//! Lambda entry point: HTTP requests (API Gateway) and scheduled runs (EventBridge
//! Scheduler, whose input is a JSON object) share one function.

// The runtime's future nests the whole handler's (its layout is computed through every
// level of the sync engine's calls).
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[global_allocator]
static ALLOCATOR: conduit::app::Allocator = conduit::app::Allocator;

fn main() -> Result<(), Error> {
    conduit::app::serve(|app| async move {
        let app = &app;
        lambda_runtime::run(service_fn(
            move |event: LambdaEvent<serde_json::Value>| async move {
                sync_runs::dispatch(app, event.payload, &event.context.request_id).await
            },
        ))
        .await
    })
}
