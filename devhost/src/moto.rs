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

/// Runs moto's own server entry point with one change: DynamoDB requests are served one
/// at a time. moto's `TransactWriteItems` deep-copies the tables to roll back on failure
/// without taking a lock, so a write racing a transaction could fail with a 500 that
/// real DynamoDB never returns. Other services (SQS long polls in particular) keep
/// moto's threaded server.
const LAUNCHER: &str = r#"
import sys, threading
import moto.server as server

dynamodb = threading.Lock()
run_simple = server.run_simple

# Python's full collections walk every tracked object, and moto keeps every stored
# item as a few dozen of them: with 100,000 records a full collection stopped moto for
# hundreds of milliseconds, longer as the tables grew. What survived a full collection
# is long-lived (stored items, mostly acyclic, freed by reference counting when they
# are replaced or deleted): freeze it, so later full collections see only what is new.
import gc
full_collection = threading.Event()

def collected(phase, info):
    if phase == "stop" and info.get("generation") == 2:
        full_collection.set()

gc.callbacks.append(collected)

def serialised(app):
    def serve(environ, start_response):
        if full_collection.is_set():
            full_collection.clear()
            gc.freeze()
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return app(environ, start_response)
        with dynamodb:
            result = app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
    return serve

# werkzeug's development server answers every request on a new connection and a new
# thread ("Connection: close"), then waits up to 10 ms for stray bytes: a third of
# moto's time under a sync's load went there. waitress (a production WSGI server, in
# the project's requirements) keeps connections alive and serves them from a pool; a
# thread may wait out an SQS long poll, so the pool is large.
def serve(host, port, app, **kw):
    try:
        import waitress
    except ImportError:
        return run_simple(host, port, serialised(app), **kw)
    waitress.serve(serialised(app), host=host, port=port, threads=64,
                   connection_limit=1000, channel_timeout=600, asyncore_use_poll=True,
                   _quiet=True)

server.run_simple = serve

# moto answers a table query by sorting every item of the table (all partitions, with
# Python-level comparisons), then skipping to the start key item by item: a 100-item
# page of a 100,000-item partition took seconds. A query of the table itself (not an
# index) only needs its own partition, in key order from the start key on, and (with
# no key condition or filter to skip items) one item past the limit: hand moto's own
# query just those. Same answers, in the time of the page.
from bisect import bisect_left, bisect_right
from moto.dynamodb.models.table import Table
from moto.dynamodb.models.dynamo_type import DynamoType

query = Table.query

def sort_key(key):
    # cast_value, without its chain of type tests for the usual string keys.
    return key.value if key.type == "S" else key.cast_value

# A partition's range keys in order, kept per table until a key is added to it or
# removed from it (a write that replaces an item keeps its key). Outside the table, so
# a transaction's copy of the tables does not copy it.
import weakref
sorted_cache = weakref.WeakKeyDictionary()

def sorted_keys(table, hash_key, part):
    cache = sorted_cache.setdefault(table, {})
    entry = cache.get(hash_key)
    if entry is None:
        pairs = sorted(((sort_key(r), r) for r in part), key=lambda p: p[0])
        entry = ([k for k, _ in pairs], [r for _, r in pairs])
        cache[hash_key] = entry
    return entry

put_item = Table.put_item
delete_item = Table.delete_item

def keyed_put_item(self, item_attrs, *args, **kwargs):
    cache = sorted_cache.get(self)
    if cache and self.range_key_attr:
        hash_value = DynamoType(item_attrs.get(self.hash_key_attr))
        part = self.items.get(hash_value)
        range_attr = item_attrs.get(self.range_key_attr)
        if part is None or range_attr is None or DynamoType(range_attr) not in part:
            cache.pop(hash_value, None)
    return put_item(self, item_attrs, *args, **kwargs)

def keyed_delete_item(self, hash_key, range_key):
    cache = sorted_cache.get(self)
    if cache:
        cache.pop(hash_key, None)
    return delete_item(self, hash_key, range_key)

Table.put_item = keyed_put_item
Table.delete_item = keyed_delete_item

def partition_query(self, hash_key, range_comparison, range_objs, limit,
                    exclusive_start_key, scan_index_forward, projection_expressions,
                    index_name=None, *args, **kwargs):
    if index_name or hash_key is None or not self.range_key_attr:
        return query(self, hash_key, range_comparison, range_objs, limit,
                     exclusive_start_key, scan_index_forward, projection_expressions,
                     index_name, *args, **kwargs)
    part = self.items.get(hash_key)
    keys, ranges = sorted_keys(self, hash_key, part) if part else ([], [])
    start = (exclusive_start_key or {}).get(self.range_key_attr)
    lo, hi = 0, len(keys)
    if start is not None:
        start = sort_key(DynamoType(start))
        if scan_index_forward is False:
            hi = bisect_left(keys, start)
        else:
            lo = bisect_right(keys, start)
    simple = not range_comparison and not kwargs.get("range_key_conditions") and not any(
        k not in ("hash_key_conditions", "range_key_conditions") for k in kwargs)
    if simple and limit:
        if scan_index_forward is False:
            lo = max(lo, hi - (limit + 1))
        else:
            hi = min(hi, lo + limit + 1)
    items = [part[r] for r in ranges[lo:hi]]
    self.all_items = lambda: items
    try:
        return query(self, hash_key, range_comparison, range_objs, limit,
                     None, scan_index_forward, projection_expressions,
                     index_name, *args, **kwargs)
    finally:
        del self.all_items

Table.query = partition_query

# A new item checked its size attribute by attribute, summing every attribute so far
# each time (quadratic in the attributes): the same check with a running total.
from moto.dynamodb.exceptions import ItemSizeTooLarge
from moto.dynamodb.models import dynamo_type

def item_init(self, hash_key, range_key, attrs):
    self.hash_key = hash_key
    self.range_key = range_key
    self.attrs = dynamo_type.LimitedSizeDict()
    total = 0
    for key, value in attrs.items():
        value = dynamo_type.DynamoType(value)
        total += dynamo_type.bytesize(key) + value.size()
        if total > 405000:
            raise ItemSizeTooLarge
        dict.__setitem__(self.attrs, key, value)

dynamo_type.Item.__init__ = item_init

# moto serialises every attribute value of an answer through the service model, looking
# up each of AttributeValue's ten members by several spellings: most of a query's time.
# A value of one scalar member is already in wire form: copy it.
from moto.core.serialize import BaseJSONSerializer

serialize_structure = BaseJSONSerializer._serialize_type_structure
SCALARS = {"S": str, "N": str, "BOOL": bool, "NULL": bool}

def fast_structure(self, serialized, value, shape, key):
    if key and shape.name == "AttributeValue" and type(value) is dict and len(value) == 1:
        ((kind, scalar),) = value.items()
        if type(scalar) is SCALARS.get(kind, type(None)) and (kind != "NULL" or scalar):
            self._default_serialize(serialized, {kind: scalar}, shape, key)
            return
    serialize_structure(self, serialized, value, shape, key)

BaseJSONSerializer._serialize_type_structure = fast_structure

# The same on the way in: the request parser walks the service model for every
# attribute value of every item; a value of one scalar member parses to itself. And
# answers convert each stored value to a dict recursively; a scalar one is one dict.
from moto.core.parse import BaseJSONParser
from moto.dynamodb import responses as dynamodb_responses
from moto.dynamodb.models import utilities as dynamodb_utilities

parse_structure = BaseJSONParser._parse_structure

def fast_parse_structure(self, shape, value):
    if shape.name == "AttributeValue" and type(value) is dict and len(value) == 1:
        ((kind, scalar),) = value.items()
        if type(scalar) is SCALARS.get(kind, type(None)):
            return {kind: scalar}
    return parse_structure(self, shape, value)

BaseJSONParser._parse_structure = fast_parse_structure

to_dict = dynamodb_utilities.dynamo_to_dict
SCALAR_KINDS = frozenset(SCALARS)

def fast_to_dict(obj):
    kind = type(obj)
    if kind is DynamoType:
        if obj.type in SCALAR_KINDS:
            return {obj.type: obj.value}
        return to_dict(obj)
    if kind is dict:
        return {k: fast_to_dict(v) for k, v in obj.items()}
    if kind is list:
        return [fast_to_dict(v) for v in obj]
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    return to_dict(obj)

dynamodb_utilities.dynamo_to_dict = fast_to_dict
dynamodb_responses.dynamo_to_dict = fast_to_dict

# Per request, moto lists its own package directory to find the backend, and werkzeug
# logs a line: list it once, log warnings and errors only.
import logging
from moto import backends

modules = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: iter(modules)
logging.getLogger("werkzeug").setLevel(logging.WARNING)
server.main(sys.argv[1:])
"#;

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

    /// Starts `binary` (a `moto_server`) on a free loopback port and waits until it
    /// answers. Blocks the calling thread for as long as moto takes to start.
    pub fn start_with(binary: &Path) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            match Self::try_start(binary)? {
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
    fn try_start(binary: &Path) -> Result<Result<Self>> {
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
