//! Structured JSON logs through tracing-subscriber, one line per event, with the
//! current span's fields (request id, route, tenant) on every line.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the JSON subscriber writing to stdout (where Lambda collects logs).
pub fn init(level: &str) {
    init_with_writer(level, std::io::stdout);
}

/// Installs the JSON subscriber writing to `writer` (tests capture logs this way).
/// Does nothing if a subscriber is already installed.
pub fn init_with_writer<W>(level: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(format!(
        "{level},aws_smithy_runtime=warn,aws_config=warn,hyper=warn,h2=warn,rustls=warn"
    ))
    .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
}
