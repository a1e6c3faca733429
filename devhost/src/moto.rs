//! moto in server mode on a free loopback port: the local stand-in for DynamoDB, KMS,
//! Secrets Manager, SQS and EventBridge.
//!
//! The child never outlives this process: it is killed on drop, and on Linux it is also
//! spawned with `PR_SET_PDEATHSIG = SIGKILL` from a dedicated thread that lives as long
//! as the process (the signal fires when the *spawning thread* exits), so a test binary
//! that keeps a [`MotoServer`] in a static, or a process that is killed, leaves no
//! moto behind.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How long moto may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times a port race (moto could not bind) is retried.
const PORT_ATTEMPTS: usize = 5;

/// Runs moto's own server entry point with DynamoDB requests served one at a time
/// (moto's `TransactWriteItems` deep-copies the tables to roll back without a lock, so a
/// write racing a transaction could fail with a 500 real DynamoDB never returns), moto's
/// hot paths patched for speed, and DynamoDB made as strict as DynamoDB: partition
/// throughput per key value, fault knobs, delayed GSIs (see [`DdbKnobs`]). The patches
/// apply only to the moto version they were written for; see the file's header.
const LAUNCHER: &str = include_str!("moto_launcher.py");

/// How strict the local DynamoDB is (the launcher's knobs). [`MotoServer::start`] leaves
/// them to the environment it inherits (`CONDUIT_DDB_*`, so `make dev` passes them
/// through); [`MotoServer::start_with_knobs`] sets them for one server.
#[derive(Debug, Clone, PartialEq)]
pub struct DdbKnobs {
    /// Throttle beyond 1,000 WCU/s and 3,000 RCU/s per partition-key value (counted
    /// either way).
    pub partition_limits: bool,
    /// Share of `TransactWriteItems` cancelled with a `TransactionConflict` reason.
    pub conflict: f64,
    /// Share of `TransactWriteItems` cancelled with a `ThrottlingError` reason and of
    /// plain writes answered `ProvisionedThroughputExceededException`.
    pub throttle: f64,
    /// Seed of the fault draws.
    pub fault_seed: u64,
    /// A GSI query sees no item version younger than this.
    pub gsi_delay: Duration,
    /// Apply the launcher's patches to moto (false: moto as released, for comparison).
    pub patched: bool,
}

impl Default for DdbKnobs {
    fn default() -> Self {
        Self {
            partition_limits: true,
            conflict: 0.0,
            throttle: 0.0,
            fault_seed: 1,
            gsi_delay: Duration::ZERO,
            patched: true,
        }
    }
}

impl DdbKnobs {
    /// The launcher's environment for these knobs.
    fn env(&self) -> [(&'static str, String); 5] {
        let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
        [
            ("CONDUIT_MOTO_PATCHES", flag(self.patched)),
            ("CONDUIT_DDB_PARTITION_LIMITS", flag(self.partition_limits)),
            (
                "CONDUIT_DDB_FAULTS",
                format!("conflict:{},throttle:{}", self.conflict, self.throttle),
            ),
            ("CONDUIT_DDB_FAULT_SEED", self.fault_seed.to_string()),
            (
                "CONDUIT_DDB_GSI_DELAY_MS",
                self.gsi_delay.as_millis().to_string(),
            ),
        ]
    }
}

/// A running `moto_server`, killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl MotoServer {
    /// The `moto_server` of the project's virtualenv (`$CONDUIT_VENV/bin`, else
    /// `<repo>/.venv/bin`), if it exists.
    pub fn find_binary() -> Option<PathBuf> {
        let bin = crate::paths::venv_dir()?.join("bin").join("moto_server");
        bin.is_file().then_some(bin)
    }

    /// Starts the virtualenv's `moto_server` on a free loopback port and waits until it
    /// answers.
    pub fn start() -> Result<Self> {
        let bin = Self::find_binary().ok_or_else(|| {
            anyhow!(
                "moto_server not found: install the project's virtualenv (.venv with moto[server]) \
                 or point CONDUIT_VENV at one"
            )
        })?;
        Self::start_with(&bin)
    }

    /// Like [`MotoServer::start`], with the local DynamoDB's knobs set to `knobs`
    /// whatever the environment says.
    pub fn start_with_knobs(knobs: &DdbKnobs) -> Result<Self> {
        let bin = Self::find_binary().ok_or_else(|| {
            anyhow!("moto_server not found: install the project's virtualenv or set CONDUIT_VENV")
        })?;
        Self::start_inner(&bin, Some(knobs))
    }

    /// Starts `binary` (a `moto_server`) on a free loopback port and waits until it
    /// answers. Blocks the calling thread for as long as moto takes to start.
    pub fn start_with(binary: &Path) -> Result<Self> {
        Self::start_inner(binary, None)
    }

    fn start_inner(binary: &Path, knobs: Option<&DdbKnobs>) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match Self::try_start(binary, knobs)? {
                Ok(server) => return Ok(server),
                Err(port_race) => last_error = Some(port_race),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("moto could not start")))
    }

    /// The process-wide moto shared by every caller (started on first use, never
    /// stopped before the process exits).
    pub fn shared() -> Result<&'static MotoServer> {
        static SHARED: Mutex<Option<&'static MotoServer>> = Mutex::new(None);
        let mut guard = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(server) = *guard {
            return Ok(server);
        }
        let server: &'static MotoServer = Box::leak(Box::new(Self::start()?));
        *guard = Some(server);
        Ok(server)
    }

    /// One attempt: `Ok(Err(_))` when moto lost a race for the port (retry).
    fn try_start(binary: &Path, knobs: Option<&DdbKnobs>) -> Result<Result<Self>> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        sweep_stale_dirs();
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "conduit-moto-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log_path = dir.join("moto.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the moto log handle")?;

        // The virtualenv's interpreter sits beside its `moto_server` script.
        let python = binary.with_file_name("python");
        let mut cmd = if python.is_file() {
            let mut cmd = Command::new(&python);
            cmd.args(["-c", LAUNCHER]);
            cmd
        } else {
            Command::new(binary)
        };
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        for (name, value) in knobs.map(DdbKnobs::env).into_iter().flatten() {
            cmd.env(name, value);
        }
        let mut child =
            spawn_tied_to_process(cmd).with_context(|| format!("starting {}", binary.display()))?;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("waiting for moto")? {
                let tail = log_tail(&log_path);
                let _ = std::fs::remove_dir_all(&dir);
                let err = anyhow!(
                    "moto_server exited ({status}) before answering on port {port}:\n{tail}"
                );
                if tail.contains("Address already in use") {
                    return Ok(Err(err));
                }
                return Err(err);
            }
            if answers(port) {
                return Ok(Ok(Self { child, port, dir }));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let tail = log_tail(&log_path);
                let _ = std::fs::remove_dir_all(&dir);
                bail!(
                    "moto_server did not answer on port {port} within {}s:\n{tail}",
                    READY_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The local DynamoDB's hottest-key report so far.
    pub fn capacity(&self) -> Result<crate::ddb_capacity::CapacityReport> {
        crate::ddb_capacity::CapacityReport::fetch(&self.endpoint())
    }

    /// The file moto's output goes to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("moto.log")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the log folders of moto servers whose process is gone (a moto kept in a
/// static is never dropped, so its folder outlives the process).
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("conduit-moto-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(listener
        .local_addr()
        .context("reading the free port")?
        .port())
}

/// Whether an HTTP request to `port` gets an HTTP answer.
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let request = b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).is_err() {
        return false;
    }
    let mut head = [0u8; 7];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1."
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Spawns `cmd` from a thread that lives as long as the process, with the child set to
/// be killed when that thread (so the process) goes away.
fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    set_parent_death_signal(&mut cmd);
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let started = std::thread::Builder::new()
            .name("devhost-spawner".into())
            .spawn(move || {
                for SpawnRequest { mut cmd, reply } in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(error) = started {
            tracing::error!(%error, "cannot start the spawner thread; children will be spawned inline");
        }
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    let sent = spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send(SpawnRequest { cmd, reply });
    match sent {
        Ok(()) => answer
            .recv()
            .map_err(|_| io::Error::other("the spawner thread is gone"))?,
        // No spawner thread: spawn here (the child is still killed on drop).
        Err(mpsc::SendError(SpawnRequest { mut cmd, .. })) => cmd.spawn(),
    }
}

#[cfg(target_os = "linux")]
fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) == -1
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::other("the parent process exited"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_cmd: &mut Command) {}
