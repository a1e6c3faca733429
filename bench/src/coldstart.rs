//! Cold start: each function binary started the way Lambda starts it, against an
//! emulated Runtime API, beside a hello-world `lambda_runtime` binary built with the
//! same profile (`hello-lambda`, the `bench/hello` crate).
//!
//! Init is the time from spawning the process to its first
//! `GET /2018-06-01/runtime/invocation/next`: everything `main` does before it can take
//! an event. Memory is the process's peak resident set (`VmHWM`) at that moment. The
//! environment is a Lambda one (region, credentials, function name, the template's
//! `CONDUIT_*` settings) with every AWS endpoint on a closed loopback port and an empty
//! `HOME`, so a start-up that called out or read profile files would show as slow or
//! failed rather than pass quietly. Goal: every function's median init at most 2× the
//! baseline's in the same run.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The function binaries of template.yaml (`BuildProperties: Binary`).
pub const FUNCTIONS: [&str; 8] = [
    "credentials",
    "oauth-start",
    "oauth-callback",
    "token-refresh",
    "records",
    "sync-config",
    "sync-runs",
    "sync-worker",
];

/// The baseline binary (the `hello` crate).
pub const BASELINE: &str = "hello-lambda";

/// The goal: a function's median init over the baseline's.
const GOAL_RATIO: f64 = 2.0;

/// How long one start may take before the run is called failed.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What one start measured.
struct Start {
    init: Duration,
    hwm_kib: u64,
}

/// Every start of one binary.
struct Figures {
    name: &'static str,
    bytes: u64,
    inits: Vec<Duration>,
    hwm_kib: Vec<u64>,
}

/// The directory `make bench` builds the binaries into: this bench's own.
pub fn default_bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("the bench binary has no directory")
}

/// Starts the baseline and every function `runs` times each (round-robin, after one
/// unmeasured start each to warm the page cache) and prints the table.
pub fn bench(bin_dir: &Path, runs: usize) -> Result<()> {
    let names: Vec<&'static str> = std::iter::once(BASELINE).chain(FUNCTIONS).collect();
    let mut figures = Vec::with_capacity(names.len());
    for name in &names {
        let path = bin_dir.join(name);
        let bytes = std::fs::metadata(&path)
            .with_context(|| {
                format!(
                    "{} is missing: build it with the bench's profile (make bench does)",
                    path.display()
                )
            })?
            .len();
        start_once(&path, name)?;
        figures.push(Figures {
            name,
            bytes,
            inits: Vec::with_capacity(runs),
            hwm_kib: Vec::with_capacity(runs),
        });
    }
    for _ in 0..runs {
        for f in &mut figures {
            let start = start_once(&bin_dir.join(f.name), f.name)?;
            f.inits.push(start.init);
            f.hwm_kib.push(start.hwm_kib);
        }
    }
    print_table(bin_dir, runs, &mut figures);
    Ok(())
}

fn print_table(bin_dir: &Path, runs: usize, figures: &mut [Figures]) {
    println!(
        "## Cold start ({runs} starts each, binaries in {}; init = spawn to the first /next)\n",
        bin_dir.display()
    );
    println!(
        "| binary | init p50 | init p90 | ratio (p50) | peak RSS | binary size | goal ≤ {GOAL_RATIO}× |"
    );
    println!("|---|---|---|---|---|---|---|");
    for f in figures.iter_mut() {
        f.inits.sort();
        f.hwm_kib.sort();
    }
    let base = ms(percentile(&figures[0].inits, 50));
    let mut worst: f64 = 0.0;
    for (i, f) in figures.iter().enumerate() {
        let p50 = ms(percentile(&f.inits, 50));
        let ratio = p50 / base;
        let verdict = if i == 0 {
            "baseline"
        } else if ratio <= GOAL_RATIO {
            "ok"
        } else {
            "OVER"
        };
        if i > 0 {
            worst = worst.max(ratio);
        }
        println!(
            "| {} | {p50:.2} ms | {:.2} ms | {ratio:.2}× | {:.1} MiB | {:.1} MB | {verdict} |",
            f.name,
            ms(percentile(&f.inits, 90)),
            percentile(&f.hwm_kib, 50) as f64 / 1024.0,
            f.bytes as f64 / 1e6,
        );
    }
    println!("\nworst function: {worst:.2}× the baseline's median init (goal ≤ {GOAL_RATIO}×)\n");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`th percentile of sorted `xs` (nearest rank).
fn percentile<T: Copy>(xs: &[T], p: usize) -> T {
    let rank = (xs.len() * p).div_ceil(100).clamp(1, xs.len());
    xs[rank - 1]
}

/// One cold start of `path`: spawn it against a fresh emulated Runtime API and wait
/// for its first request, which must be `/next`.
fn start_once(path: &Path, name: &str) -> Result<Start> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the Runtime API")?;
    let api = listener.local_addr()?;
    let (tx, rx) = mpsc::channel();
    // The first request line, stamped when it has been read; the connection is kept
    // open (unanswered) so the function stays blocked in its first /next.
    std::thread::spawn(move || {
        let first = listener
            .accept()
            .map_err(anyhow::Error::from)
            .and_then(|(s, _)| {
                let mut line = String::new();
                BufReader::new(s.try_clone()?).read_line(&mut line)?;
                Ok((Instant::now(), line, s))
            });
        let _ = tx.send(first);
    });
    let mut cmd = Command::new(path);
    cmd.env_clear()
        .envs(lambda_env(name, &api.to_string()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    let outcome = wait_first_request(&rx, &mut child);
    let hwm_kib = peak_rss_kib(child.id());
    let _ = child.kill();
    let stderr = stderr_of(child);
    let (at, line, mut stream) = match outcome {
        Ok(first) => first,
        Err(e) => bail!("{name}: {e:#}; its stderr: {stderr}"),
    };
    let _ = stream.write_all(b"HTTP/1.1 410 Gone\r\ncontent-length: 0\r\n\r\n");
    if !line.starts_with("GET /2018-06-01/runtime/invocation/next ") {
        bail!(
            "{name}: first Runtime API request was {:?}, not /next; its stderr: {stderr}",
            line.trim_end()
        );
    }
    Ok(Start {
        init: at.duration_since(t0),
        hwm_kib: hwm_kib.with_context(|| format!("{name}: reading its VmHWM"))?,
    })
}

type FirstRequest = Result<(Instant, String, TcpStream)>;

fn wait_first_request(rx: &mpsc::Receiver<FirstRequest>, child: &mut Child) -> FirstRequest {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(first) => return first,
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the Runtime API thread stopped"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(status) = child.try_wait()? {
            bail!("exited ({status}) before asking for an event");
        }
        if Instant::now() > deadline {
            bail!("no /next within {START_TIMEOUT:?}");
        }
    }
}

fn stderr_of(child: Child) -> String {
    let out = child
        .wait_with_output()
        .map(|o| o.stderr)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    let text = text.trim();
    if text.is_empty() {
        "(empty)".to_owned()
    } else {
        text.chars().take(2_000).collect()
    }
}

/// `VmHWM` of a live process, in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM line")
}

/// The environment Lambda gives a function (provided.al2023 on arm64 or x86), with the
/// template's settings. AWS endpoints point at a closed loopback port: init must not
/// call out.
fn lambda_env(name: &str, runtime_api: &str) -> Vec<(String, String)> {
    let home = std::env::temp_dir().join("conduit-bench-coldstart-home");
    let _ = std::fs::create_dir_all(&home);
    let account = "123456789012";
    let region = "eu-west-1";
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", format!("conduit-{name}")),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/conduit-{name}"),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/12/05/[$LATEST]0123456789abcdef".to_owned(),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".to_owned()),
        ("AWS_REGION", region.to_owned()),
        ("AWS_DEFAULT_REGION", region.to_owned()),
        ("AWS_ACCESS_KEY_ID", "ASIABENCHCOLDSTART00".to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "bench-cold-start-not-a-secret".to_owned(),
        ),
        ("AWS_SESSION_TOKEN", "bench-cold-start-session".to_owned()),
        // Port 9 (discard) on loopback: closed here, so any call fails at once.
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_owned()),
        ("HOME", home.display().to_string()),
        ("LAMBDA_TASK_ROOT", "/var/task".to_owned()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_owned()),
        ("_HANDLER", "bootstrap".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ("CONDUIT_TABLE", "conduit-Table".to_owned()),
        (
            "CONDUIT_KMS_KEY_ID",
            format!("arn:aws:kms:{region}:{account}:key/00000000-0000-4000-8000-000000000000"),
        ),
        ("CONDUIT_PLATFORM_SECRET_ID", "conduit-platform".to_owned()),
        (
            "CONDUIT_DASHBOARD_ORIGINS",
            "https://app.example.com".to_owned(),
        ),
        ("CONDUIT_LOG_LEVEL", "info".to_owned()),
        (
            "CONDUIT_PUBLIC_BASE_URL",
            "https://api.example.com".to_owned(),
        ),
        ("CONDUIT_EVENT_BUS", "conduit-events".to_owned()),
        ("CONDUIT_SYNC_SCHEDULE_GROUP", "conduit-sync".to_owned()),
        (
            "CONDUIT_SYNC_SCHEDULER_ROLE_ARN",
            format!("arn:aws:iam::{account}:role/conduit-scheduler"),
        ),
        (
            "CONDUIT_SYNC_RUNS_ARN",
            format!("arn:aws:lambda:{region}:{account}:function:conduit-sync-runs"),
        ),
        (
            "CONDUIT_SYNC_QUEUE_URL",
            format!("https://sqs.{region}.amazonaws.com/{account}/conduit-sync"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentile_is_nearest_rank() {
        let xs: Vec<u32> = (1..=20).collect();
        assert_eq!(percentile(&xs, 50), 10);
        assert_eq!(percentile(&xs, 90), 18);
        assert_eq!(percentile(&[7], 90), 7);
    }
}
