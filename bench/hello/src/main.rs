//! The cold-start baseline: the smallest `lambda_runtime` function (echoes its event),
//! as the runtime's own examples write it. `make bench` times each function's init
//! against this one's.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(event.payload) },
    ))
    .await
}
