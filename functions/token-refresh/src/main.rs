//! Lambda entry point: builds the shared context once, then runs each scheduled sweep.

use conduit::app::App;
use conduit::config::Config;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = Config::from_env()?;
    conduit::telemetry::init(&config.log_level);
    let app = App::new(config).await?;
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        token_refresh::handle(app, event)
    }))
    .await
}
