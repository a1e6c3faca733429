//! Lambda entry point: HTTP requests (API Gateway) and scheduled runs (EventBridge
//! Scheduler, whose input is a JSON object) share one function.

use conduit::app::App;
use conduit::config::Config;
use lambda_runtime::{Error, LambdaEvent, service_fn};

fn main() -> Result<(), Error> {
    conduit::app::runtime()?.block_on(run())
}

async fn run() -> Result<(), Error> {
    let config = Config::from_env()?;
    conduit::telemetry::init(&config.log_level);
    let app = App::new(config).await?;
    let app = &app;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            sync_trigger::dispatch(app, event.payload, &event.context.request_id).await
        },
    ))
    .await
}
