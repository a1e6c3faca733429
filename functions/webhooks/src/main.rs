//! Lambda entry point: builds the shared context once, then serves requests.

use lambda_http::{Error, Request, service_fn};

#[global_allocator]
static ALLOCATOR: conduit::app::Allocator = conduit::app::Allocator;

fn main() -> Result<(), Error> {
    conduit::app::serve(|app| async move {
        let app = &app;
        lambda_http::run(service_fn(move |req: Request| webhooks::handle(app, req))).await
    })
}
