//! `devhost`: runs Conduit locally.
//!
//! ```text
//! devhost up [--port 3000] [--sandbox-port 9100] [--stack-name conduit-local] [--schedule-every SECONDS]
//! devhost token --tenant T --user U --role admin|member [--ttl 3600]
//! devhost invoke <FunctionLogicalId|binary> <event.json>
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use devhost::env::{LOCAL_DASHBOARD_ORIGIN, LocalEnv, LocalEnvOptions};
use devhost::jwt::LocalJwt;
use devhost::moto::MotoServer;
use devhost::registry::FunctionRegistry;
use devhost::state::StackFile;

#[global_allocator]
static ALLOCATOR: conduit::app::Allocator = conduit::app::Allocator;

const USAGE: &str = "\
devhost — run Conduit locally (moto + provider sandbox + every HTTP function of template.yaml)

USAGE:
  devhost up [--port 3000] [--sandbox-port 9100] [--stack-name conduit-local] [--schedule-every SECONDS]
      Starts moto (unless AWS_ENDPOINT_URL is set), the provider sandbox, creates the
      template's tables, keys, secrets, queues, event bus and schedule groups, serves
      the HTTP API, polls the queues of the template's SQS events into their functions
      and fires the template's rate schedules and the EventBridge Scheduler schedules
      of the stack (rate schedules every SECONDS instead, with --schedule-every).
      Prints the URL, tokens and a curl session; runs until Ctrl-C.
  devhost token --tenant T --user U --role admin|member [--ttl 3600]
      Prints a token the running dev host accepts (signed with .local/jwt.key).
  devhost invoke <FunctionLogicalId|binary> <event.json>
      Runs one function once on an event file against the running local stack, like
      `sam local invoke -e`: an HTTP function on an API Gateway HTTP API event (prints
      its response), an event-driven one on its event — an EventBridge scheduled event,
      an SQS event, a Scheduler schedule's Input (prints its result).
";

/// Tokens printed by `up` last this long.
const UP_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// Hand-parsed `--flag value` / `--flag=value` options and positional arguments.
struct Args {
    flags: BTreeMap<String, String>,
    positional: Vec<String>,
}

impl Args {
    fn parse(raw: &[String], known: &[&str]) -> Result<Self> {
        let mut flags = BTreeMap::new();
        let mut positional = Vec::new();
        let mut it = raw.iter();
        while let Some(arg) = it.next() {
            if let Some(flag) = arg.strip_prefix("--") {
                let (name, value) = match flag.split_once('=') {
                    Some((n, v)) => (n.to_owned(), v.to_owned()),
                    None => (
                        flag.to_owned(),
                        it.next()
                            .cloned()
                            .ok_or_else(|| anyhow!("--{flag} needs a value"))?,
                    ),
                };
                if !known.contains(&name.as_str()) {
                    bail!("unknown option --{name}\n\n{USAGE}");
                }
                flags.insert(name, value);
            } else {
                positional.push(arg.clone());
            }
        }
        Ok(Self { flags, positional })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| anyhow!("--{name} is required\n\n{USAGE}"))
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow!("--{name} must be a number, got {v:?}")),
        }
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let result = match raw.first().map(String::as_str) {
        Some("up") => runtime().and_then(|rt| rt.block_on(up(&raw[1..]))),
        Some("token") => token(&raw[1..]),
        Some("invoke") => runtime().and_then(|rt| rt.block_on(invoke(&raw[1..]))),
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow!("unknown command {other:?}\n\n{USAGE}")),
        None => Err(anyhow!("{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("devhost: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // Every function's handler runs in-process on these threads.
    conduit::app::runtime().context("starting the async runtime")
}

async fn up(raw: &[String]) -> Result<()> {
    let args = Args::parse(
        raw,
        &["port", "sandbox-port", "stack-name", "schedule-every"],
    )?;
    if let Some(extra) = args.positional.first() {
        bail!("unexpected argument {extra:?}\n\n{USAGE}");
    }
    let port: u16 = args.number("port", 3000)?;
    let sandbox_port: u16 = args.number("sandbox-port", 9100)?;
    let stack_name = args.get("stack-name").unwrap_or("conduit-local").to_owned();
    let schedule_every = match args.get("schedule-every") {
        None => None,
        Some(_) => match args.number::<u64>("schedule-every", 0)? {
            0 => bail!("--schedule-every must be at least 1 (seconds)"),
            secs => Some(Duration::from_secs(secs)),
        },
    };
    conduit::telemetry::init_with_writer("info", std::io::stderr);

    let (moto, aws_endpoint) = match std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
    {
        Some(endpoint) => (None, endpoint),
        None => {
            eprintln!("starting moto…");
            let moto = tokio::task::spawn_blocking(MotoServer::start)
                .await
                .context("starting moto")??;
            let endpoint = moto.endpoint();
            (Some(moto), endpoint)
        }
    };

    let key = devhost::jwt::random_key();
    let env = LocalEnv::start(LocalEnvOptions {
        stack_name: Some(stack_name.clone()),
        aws_endpoint: Some(aws_endpoint.clone()),
        port,
        sandbox_port,
        jwt_key: Some(key),
        run_schedules: true,
        schedule_every,
        throttle: true,
        ..LocalEnvOptions::default()
    })
    .await?;
    env.jwt.save_key(&StackFile::jwt_key_path()?)?;
    StackFile {
        aws_endpoint: aws_endpoint.clone(),
        stack_name: stack_name.clone(),
        sandbox_url: env.sandbox.url(),
        devhost_url: env.url(),
        parameters: env.stack.parameter_values().clone(),
        local_env: env.stack.local_env().clone(),
        jwt_issuer: env.jwt.issuer.clone(),
        jwt_audience: env.jwt.audience.clone(),
        pid: std::process::id(),
    }
    .save()?;

    let admin = env.jwt.mint("demo", "dev-admin", "admin", UP_TOKEN_TTL)?;
    let member = env.jwt.mint("demo", "dev-member", "member", UP_TOKEN_TTL)?;
    print_banner(
        &env,
        &aws_endpoint,
        &stack_name,
        &admin,
        &member,
        schedule_every,
    );

    wait_for_stop().await;
    eprintln!("stopping…");
    env.shutdown().await;
    // What the run put on DynamoDB's partitions: a key over its limit here would be
    // throttled in an account.
    if moto.is_some() {
        let endpoint = aws_endpoint.clone();
        match tokio::task::spawn_blocking(move || devhost::CapacityReport::fetch(&endpoint)).await {
            Ok(Ok(report)) => eprint!("{}", report.render()),
            Ok(Err(error)) => eprintln!("no capacity report from the local DynamoDB: {error:#}"),
            Err(error) => eprintln!("no capacity report from the local DynamoDB: {error}"),
        }
    }
    StackFile::remove();
    drop(moto);
    Ok(())
}

fn print_banner(
    env: &LocalEnv,
    aws_endpoint: &str,
    stack_name: &str,
    admin: &str,
    member: &str,
    schedule_every: Option<Duration>,
) {
    let url = env.url();
    let body = r#"{"provider":"zendesk","auth_method":"api_token","label":"Acme Zendesk","credentials":{"subdomain":"acme","email":"admin@acme.test","api_token":"zd-sandbox-token-0001"}}"#;
    let start = format!(r#"{{"return_to":"{LOCAL_DASHBOARD_ORIGIN}/integrations"}}"#);
    let schedules = schedule_lines(env, schedule_every);
    println!(
        r#"
Conduit is running locally.

  API (dev host)    {url}
  Provider sandbox  {sandbox}
  AWS (moto)        {aws_endpoint}   stack {stack_name}

Tokens for tenant "demo" (12 h; more with `devhost token --tenant demo --user dev-admin --role admin`):

  export CONDUIT_URL={url}
  export TOKEN={admin}
  export MEMBER_TOKEN={member}

Try it — create a Zendesk connection against the sandbox, list, test and delete it:

  ID=$(curl -s -X POST "$CONDUIT_URL/v1/connections" \
    -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{body}' \
    | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4); echo "$ID"
  curl -s "$CONDUIT_URL/v1/connections" -H "authorization: Bearer $MEMBER_TOKEN"
  curl -s -X POST "$CONDUIT_URL/v1/connections/$ID/test" -H "authorization: Bearer $TOKEN"
  curl -s -X DELETE -o /dev/null -w '%{{http_code}}\n' "$CONDUIT_URL/v1/connections/$ID" -H "authorization: Bearer $TOKEN"

Connect HubSpot through OAuth (the sandbox approves at once; or open $AUTH_URL in a browser):

  AUTH_URL=$(curl -s -X POST "$CONDUIT_URL/v1/oauth/hubspot/start" \
    -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{start}' \
    | grep -o '"authorize_url":"[^"]*"' | cut -d'"' -f4); echo "$AUTH_URL"
  CALLBACK=$(curl -s -o /dev/null -w '%{{redirect_url}}' "$AUTH_URL")   # the sandbox approves and sends the browser back
  curl -s -o /dev/null -w '%{{redirect_url}}\n' "$CALLBACK"              # → {LOCAL_DASHBOARD_ORIGIN}/integrations?status=connected&connection_id=con_…
  curl -s "$CONDUIT_URL/v1/connections?provider=hubspot" -H "authorization: Bearer $TOKEN"
  curl -s "$CONDUIT_URL/_devhost/events"                                # what Conduit published on EventBridge
  curl -s "$CONDUIT_URL/_devhost/queues"                                # the queues' depths and their pollers

Sync its contacts both ways (after connecting HubSpot above):

{sync}
{schedules}
Dispatch a product event through a chain — Genesys log_call (10) → TechnologyOne
create_job (20) → Salesforce send_summary (30) on conversation_ended:

{dispatch}
Ctrl-C stops everything.
"#,
        sandbox = env.sandbox.url(),
        sync = sync_demo(&env.sandbox.url()),
        dispatch = dispatch_demo(&env.sandbox.url()),
    );
}

/// The banner's record-sync walk-through: seed the sandbox portal, configure a
/// bidirectional sync, run it, read records, logs and status, then make a conflict on
/// both sides and resolve it.
fn sync_demo(sandbox: &str) -> String {
    let auth = r#"-H "authorization: Bearer $TOKEN""#;
    let json = r#"-H 'content-type: application/json'"#;
    let config = r#"'{"connection_id":"'$CONN'","name":"HubSpot contacts","direction":"bidirectional","frequency":{"type":"manual"},"entities":["contacts"],"conflict_strategy":"manual_review"}'"#;
    let lines = [
        format!(r#"  export SANDBOX={sandbox}"#),
        r#"  curl -s -X POST "$SANDBOX/_sandbox/hubspot/seed" -d '{"object":"contacts","count":200}' -o /dev/null   # 200 contacts in the sandbox portal"#.to_owned(),
        format!(r#"  CONN=$(curl -s "$CONDUIT_URL/v1/connections?provider=hubspot" {auth} | grep -o '"id":"con_[^"]*"' | head -1 | cut -d'"' -f4)"#),
        format!(r#"  CFG=$(curl -s -X POST "$CONDUIT_URL/v1/sync/configs" {auth} {json} -d {config} \"#),
        r#"    | grep -o '"id":"scfg_[^"]*"' | head -1 | cut -d'"' -f4); echo "$CFG"   # fields auto-mapped"#.to_owned(),
        format!(r#"  curl -s -X POST "$CONDUIT_URL/v1/sync/trigger" {auth} {json} -d '{{"config_id":"'$CFG'"}}'"#),
        format!(r#"  curl -s "$CONDUIT_URL/v1/sync/configs/$CFG/status" {auth}           # live progress, then the finished run"#),
        format!(r#"  curl -s "$CONDUIT_URL/v1/records/contacts?limit=2" {auth}           # records, their HubSpot links, where each value came from"#),
        format!(r#"  curl -s "$CONDUIT_URL/v1/sync/logs?config_id=$CFG" {auth}"#),
        String::new(),
        "Make a conflict — one contact changed on both sides — run again, and resolve it:".to_owned(),
        String::new(),
        format!(r#"  REC=$(curl -s "$CONDUIT_URL/v1/records/contacts?limit=1" {auth} | grep -o '"id":"rec_[^"]*"' | head -1 | cut -d'"' -f4)"#),
        format!(r#"  CRM=$(curl -s "$CONDUIT_URL/v1/records/contacts/$REC" {auth} | grep -o '"crm_id":"[^"]*"' | head -1 | cut -d'"' -f4)"#),
        format!(r#"  curl -s -X PATCH "$CONDUIT_URL/v1/records/contacts/$REC" {auth} {json} -d '{{"fields":{{"job_title":"CTO (app)"}}}}' -o /dev/null"#),
        r#"  curl -s -X POST "$SANDBOX/_sandbox/hubspot/update" -d '{"object":"contacts","id":"'$CRM'","properties":{"jobtitle":"CTO (HubSpot)"}}' -o /dev/null"#.to_owned(),
        format!(r#"  curl -s -X POST "$CONDUIT_URL/v1/sync/trigger" {auth} {json} -d '{{"config_id":"'$CFG'"}}'; sleep 2"#),
        format!(r#"  CFL=$(curl -s "$CONDUIT_URL/v1/sync/conflicts" {auth} | tee /dev/stderr | grep -o '"id":"cfl_[^"]*"' | head -1 | cut -d'"' -f4)"#),
        format!(r#"  curl -s -X POST "$CONDUIT_URL/v1/sync/conflicts/$CFL/resolve" {auth} {json} -d '{{"values":{{"job_title":"CTO and co-founder"}}}}'"#),
        r#"  curl -s "$SANDBOX/_sandbox/hubspot/records?object=contacts" | grep -o '"jobtitle":"CTO and co-founder"'   # pushed to HubSpot"#.to_owned(),
    ];
    lines.join("\n") + "\n"
}

/// The banner's dispatch walk-through: connect Genesys (OAuth), TechnologyOne
/// (credentials) and Salesforce (OAuth) in the sandbox, create the three integrations
/// on `conversation_ended`, publish an event, read the dispatch log, and see the three
/// records in the sandbox in order, the Genesys note's id inside the TechnologyOne job.
fn dispatch_demo(sandbox: &str) -> String {
    let auth = r#"-H "authorization: Bearer $TOKEN""#;
    let json = r#"-H 'content-type: application/json'"#;
    let back = format!("{LOCAL_DASHBOARD_ORIGIN}/integrations");
    let t1 = r#"'{"provider":"technologyone","label":"Council","credentials":{"subdomain":"council","username":"CONDUIT","password":"t1-sandbox-pass-0001"}}'"#;
    let event = r#"'{"schema_version":1,"type":"conversation_ended","event_id":"evt_demo_1","tenant_id":"demo","occurred_at":"2026-12-05T03:12:44Z","conversation":{"id":"conv_demo_1","channel":"voice","direction":"inbound","duration_seconds":312,"summary":"Wants the bin collection moved to Friday."},"contact":{"name":"Dana Lee","email":"dana@example.com","phone":"+61290001234"}}'"#;
    let lines = [
        format!(r#"  export SANDBOX={sandbox}"#),
        format!(r#"  connect() {{ A=$(curl -s -X POST "$CONDUIT_URL/v1/oauth/$1/start" {auth} {json} -d "$2" | grep -o '"authorize_url":"[^"]*"' | cut -d'"' -f4)"#),
        r#"    curl -s -o /dev/null -w '%{redirect_url}' "$(curl -s -o /dev/null -w '%{redirect_url}' "$A")" | grep -o 'con_[0-9a-z]*'; }   # the sandbox approves at once"#.to_owned(),
        format!(r#"  GEN=$(connect genesys '{{"return_to":"{back}","fields":{{"region":"mypurecloud.com"}}}}'); echo "$GEN""#),
        format!(r#"  SF=$(connect salesforce '{{"return_to":"{back}"}}'); echo "$SF""#),
        format!(r#"  T1=$(curl -s -X POST "$CONDUIT_URL/v1/connections" {auth} {json} -d {t1} | grep -o '"id":"con_[^"]*"' | head -1 | cut -d'"' -f4); echo "$T1""#),
        format!(r#"  integrate() {{ curl -s -X POST "$CONDUIT_URL/v1/integrations" {auth} {json} -d '{{"name":"'$1'","provider":"'$1'","action":"'$2'","connection_id":"'$3'","priority":'$4',"triggers":[{{"event":"conversation_ended"}}]}}' | grep -o '"id":"int_[^"]*"' | head -1 | cut -d'"' -f4; }}"#),
        "  integrate genesys log_call $GEN 10; integrate technologyone create_job $T1 20; integrate salesforce send_summary $SF 30".to_owned(),
        format!(r#"  DSP=$(curl -s -X POST "$CONDUIT_URL/v1/events" {auth} {json} -d {event} | grep -o '"dispatch_id":"[^"]*"' | cut -d'"' -f4); sleep 3"#),
        format!(r#"  curl -s "$CONDUIT_URL/v1/dispatches/$DSP" {auth}            # each step: status, attempts, external id, request summary"#),
        r#"  curl -s "$SANDBOX/_sandbox/dispatch/requests" | grep -o '"method":"POST","path":"[^"]*","provider":"[a-z]*","query":\[[^]]*\],"route":"[a-z_.]*","seq":[0-9]*'   # what each stand-in received, in order"#.to_owned(),
        r#"  curl -s "$SANDBOX/_sandbox/dispatch/technologyone/records" | grep -o '"Notes":"[^"]*"'   # genesys_log_call: <the Genesys note id>"#.to_owned(),
    ];
    lines.join("\n") + "\n"
}

/// The banner's lines about the template's schedules.
fn schedule_lines(env: &LocalEnv, every: Option<Duration>) -> String {
    let mut out = String::from("Schedules:\n\n");
    let schedules = env.devhost.schedules();
    if schedules.is_empty() {
        out.push_str("  (none in the template)\n");
    }
    for s in schedules {
        let how = match (s.enabled, s.expression.period(), every) {
            (false, _, _) => "disabled in the template: not run".to_owned(),
            (true, None, _) => "cron: not run locally".to_owned(),
            (true, Some(_), Some(every)) => {
                format!("runs every {}s (--schedule-every)", every.as_secs())
            }
            (true, Some(_), None) => {
                "runs at that rate (faster: --schedule-every SECONDS)".to_owned()
            }
        };
        out.push_str(&format!(
            "  {} {} {}: {how}\n",
            s.function, s.event, s.expression
        ));
    }
    if schedules
        .iter()
        .any(|s| s.function == "TokenRefreshFunction")
    {
        out.push_str(
            "  once, now: make invoke FN=TokenRefreshFunction EVENT=events/token-refresh/scheduled.json\n",
        );
    }
    for (id, group) in env.stack.schedule_groups() {
        let how = match every {
            Some(every) => format!("rate() ones every {}s (--schedule-every)", every.as_secs()),
            None => "when due".to_owned(),
        };
        out.push_str(&format!(
            "  EventBridge Scheduler schedules in {group} ({id}): fired {how}\n"
        ));
    }
    out
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn token(raw: &[String]) -> Result<()> {
    let args = Args::parse(raw, &["tenant", "user", "role", "ttl"])?;
    let tenant = args.required("tenant")?;
    let user = args.required("user")?;
    let role = args.required("role")?;
    if !matches!(role, "admin" | "member") {
        bail!("--role must be admin or member, got {role:?}");
    }
    let ttl: u64 = args.number("ttl", 3600)?;
    let running = StackFile::load()?;
    let jwt = LocalJwt::load(
        &StackFile::jwt_key_path()?,
        running.jwt_issuer,
        running.jwt_audience,
    )?;
    println!(
        "{}",
        jwt.mint(tenant, user, role, Duration::from_secs(ttl))?
    );
    Ok(())
}

async fn invoke(raw: &[String]) -> Result<()> {
    let args = Args::parse(raw, &[])?;
    let [function, event] = args.positional.as_slice() else {
        bail!("invoke takes a function and an event file\n\n{USAGE}");
    };
    conduit::telemetry::init_with_writer("info", std::io::stderr);
    let response = devhost::invoke::invoke_from_files(
        function,
        &PathBuf::from(event),
        &FunctionRegistry::conduit(),
    )
    .await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&response).context("rendering the response")?
    );
    Ok(())
}
