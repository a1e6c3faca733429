//! Structured JSON logs through tracing-subscriber, one line per event, with the
//! current span's fields (request id, route, tenant) on every line; and the writer
//! the metrics lines ([`crate::metrics`]) share with them, so a metric lands in the
//! same log stream (CloudWatch Logs on Lambda, the captured logs in tests).

use std::io::Write;
use std::sync::{Arc, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The level Lambda passes from the function's `LoggingConfig.ApplicationLogLevel`.
pub const LAMBDA_LOG_LEVEL: &str = "AWS_LAMBDA_LOG_LEVEL";

/// Writes one complete line to the log stream.
type LineSink = Box<dyn Fn(&[u8]) + Send + Sync>;

static SINK: OnceLock<LineSink> = OnceLock::new();

/// One writer shared by the log subscriber and the metrics sink.
struct Shared<W>(Arc<W>);

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Shared<W> {
    type Writer = W::Writer;

    fn make_writer(&'a self) -> Self::Writer {
        self.0.make_writer()
    }
}

/// Installs the JSON subscriber writing to stdout (where Lambda collects logs).
/// Lambda's `AWS_LAMBDA_LOG_LEVEL` wins over `level` when set.
pub fn init(level: &str) {
    let lambda = std::env::var(LAMBDA_LOG_LEVEL).ok();
    init_with_writer(&effective_level(lambda.as_deref(), level), std::io::stdout);
}

/// The filter level: Lambda's application log level when it is one (its names are
/// upper case, and `FATAL` is our `error`), else `configured`.
pub fn effective_level(lambda: Option<&str>, configured: &str) -> String {
    match lambda.map(|l| l.trim().to_ascii_lowercase()).as_deref() {
        Some(l @ ("trace" | "debug" | "info" | "warn" | "error")) => l.to_owned(),
        Some("fatal") => "error".to_owned(),
        _ => configured.to_ascii_lowercase(),
    }
}

/// Installs the JSON subscriber writing to `writer` (tests capture logs this way),
/// and makes `writer` the metrics' sink too. Does nothing if a subscriber is already
/// installed.
pub fn init_with_writer<W>(level: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(format!(
        "{level},aws_smithy_runtime=warn,aws_config=warn,hyper=warn,h2=warn,rustls=warn"
    ))
    .unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = Arc::new(writer);
    let installed = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(Shared(Arc::clone(&writer)))
        .try_init()
        .is_ok();
    if installed {
        let _ = SINK.set(Box::new(move |line: &[u8]| {
            // One write of the whole line, so lines of concurrent tasks never interleave.
            let _ = writer.make_writer().write_all(line);
        }));
    }
}

/// Writes `line` (with its newline) to the log stream: the installed writer, else
/// stdout.
pub(crate) fn write_line(line: &[u8]) {
    match SINK.get() {
        Some(sink) => sink(line),
        None => {
            let _ = std::io::stdout().lock().write_all(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambdas_level_wins_and_is_read_in_any_case() {
        assert_eq!(effective_level(Some("DEBUG"), "info"), "debug");
        assert_eq!(effective_level(Some("WARN"), "debug"), "warn");
        assert_eq!(effective_level(Some("FATAL"), "info"), "error");
        assert_eq!(effective_level(Some("verbose"), "info"), "info");
        assert_eq!(effective_level(None, "INFO"), "info");
    }
}
