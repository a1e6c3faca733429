//! `make fuzz`: schemathesis against the running dev host, from `infra/openapi.yaml`.
//!
//! Starts the local stack the way the scenario harness does (moto, the provider
//! sandbox, the dev host on free 127.0.0.1 ports), seeds one tenant with resources
//! (a Zendesk and a HubSpot OAuth connection, a bidirectional contacts config that has
//! run twice, records, a stored conflict, a tenant OAuth app) so path parameters also
//! hit things that exist, writes a schemathesis config binding those ids to the
//! operations' parameters (half the cases; the others are generated), runs
//! schemathesis from the project's venv, prints its summary and exits with its
//! status. Deterministic: a fixed seed and a fixed number of examples per operation.
//!
//! ```text
//! cargo run -p scenarios --bin fuzz [-- --max-examples 20 --seed 11 [-- ST-RUN-ARGS…]]
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use devhost::{LocalEnv, LocalEnvOptions};
use serde_json::{Value, json};

/// The tenant the fuzzer works in.
const TENANT: &str = "fuzz";
/// Cases per operation and phase (hypothesis `max_examples`) unless `--max-examples`.
const MAX_EXAMPLES: u32 = 20;
/// The hypothesis seed unless `--seed`.
const SEED: u64 = 11;
/// The checks run on every response (README: "The fuzzer").
const CHECKS: [&str; 7] = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "ignored_auth",
];
/// What `negative_data_rejection` accepts as a refusal of invalid input.
const REFUSALS: [&str; 13] = [
    "400", "401", "403", "404", "405", "406", "409", "412", "413", "415", "422", "428", "429",
];
/// The dashboard origin OAuth flows return to (a `DashboardOrigins` entry of local stacks).
const RETURN_TO: &str = "http://localhost:5173/integrations";

fn main() -> ExitCode {
    // The handlers run in-process on this runtime, as under `devhost up`.
    let runtime = match conduit::app::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fuzz: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fuzz: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Options {
    max_examples: u32,
    seed: u64,
    /// Arguments after `--`, passed on to `st run` (e.g. `--include-name 'GET /v1/providers'`).
    extra: Vec<String>,
}

fn options() -> Result<Options> {
    let mut out = Options {
        max_examples: MAX_EXAMPLES,
        seed: SEED,
        extra: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            out.extra = args.by_ref().collect();
            break;
        }
        let value = args.next().ok_or_else(|| anyhow!("{arg} needs a value"))?;
        match arg.as_str() {
            "--max-examples" => out.max_examples = value.parse().context("--max-examples")?,
            "--seed" => out.seed = value.parse().context("--seed")?,
            other => bail!(
                "unknown option {other}; expected --max-examples N, --seed N, -- ST-RUN-ARGS…"
            ),
        }
    }
    Ok(out)
}

async fn run() -> Result<ExitCode> {
    let options = options()?;
    let root = devhost::paths::repo_root()?;
    let work = root.join(".local").join("fuzz");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let log = std::fs::File::create(work.join("devhost.log")).context("creating the log")?;
    conduit::telemetry::init_with_writer("info", move || {
        log.try_clone().expect("clone the log file handle")
    });

    let started = Instant::now();
    eprintln!("fuzz: starting moto, the sandbox and the dev host…");
    // Unthrottled: schemathesis's bursts pass the stage's 100 requests/s at times,
    // and a 429 where a check expects 401 would make the run depend on timing. The
    // throttle has its own unit test and runs under `make dev`.
    let env = LocalEnv::start(LocalEnvOptions {
        throttle: false,
        ..LocalEnvOptions::default()
    })
    .await?;
    let admin = env
        .jwt
        .mint(TENANT, "fuzz-admin", "admin", Duration::from_secs(3600))?;
    let api = Api {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        base: env.url(),
        sandbox: env.sandbox.url(),
        token: admin.clone(),
    };
    eprintln!("fuzz: seeding tenant {TENANT:?} at {}…", api.base);
    let seeds = seed(&api).await.context("seeding")?;
    eprintln!(
        "fuzz: seeded in {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        seeds.summary()
    );

    let config = work.join("schemathesis.toml");
    std::fs::write(&config, schemathesis_config(&options, &api, &seeds))
        .context("writing schemathesis.toml")?;
    let status = schemathesis(&root, &work, &config, &options.extra).await?;
    eprintln!(
        "fuzz: schemathesis {} after {:.0}s (seed {}, {} examples per operation and phase; dev host log: {})",
        if status.success() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64(),
        options.seed,
        options.max_examples,
        work.join("devhost.log").display()
    );
    drop(env);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `schemathesis run` from the project's venv; its output goes to ours.
async fn schemathesis(
    root: &Path,
    work: &Path,
    config: &Path,
    extra: &[String],
) -> Result<std::process::ExitStatus> {
    let venv = devhost::paths::venv_dir().ok_or_else(|| anyhow!("no venv directory"))?;
    let st = venv.join("bin").join("st");
    ensure!(
        st.is_file(),
        "{} is missing: run `make venv` (schemathesis is pinned in infra/requirements.txt)",
        st.display()
    );
    let spec = fuzzed_spec(root, work)?;
    let mut child = tokio::process::Command::new(&st)
        .arg("--no-color")
        .arg("--config-file")
        .arg(config)
        .arg("run")
        .arg(&spec)
        .args(extra)
        .current_dir(work)
        .env("SCHEMATHESIS_HOOKS", "")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", st.display()))?;
    child.wait().await.context("waiting for schemathesis")
}

/// `infra/openapi.yaml` without the optional `If-Match` header, written to `work`.
/// With it, most generated bodies would be refused with 412 (a random version never
/// matches, and handlers check it before they look at the body), so body
/// validation would go untested.
fn fuzzed_spec(root: &Path, work: &Path) -> Result<PathBuf> {
    let source = root.join("infra").join("openapi.yaml");
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    let mut spec: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", source.display()))?;
    let if_match = serde_yaml_ng::Value::from("#/components/parameters/IfMatch");
    if let Some(paths) = spec
        .get_mut("paths")
        .and_then(serde_yaml_ng::Value::as_mapping_mut)
    {
        for (_, item) in paths.iter_mut() {
            let Some(item) = item.as_mapping_mut() else {
                continue;
            };
            for (_, op) in item.iter_mut() {
                if let Some(params) = op
                    .get_mut("parameters")
                    .and_then(serde_yaml_ng::Value::as_sequence_mut)
                {
                    params.retain(|p| p.get("$ref") != Some(&if_match));
                }
            }
        }
    }
    let out = work.join("openapi.yaml");
    std::fs::write(&out, serde_yaml_ng::to_string(&spec)?)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// Ids of what the seeding created.
#[derive(Default)]
struct Seeds {
    connections: Vec<String>,
    configs: Vec<String>,
    mappings: Vec<String>,
    records: Vec<String>,
    logs: Vec<String>,
    conflicts: Vec<String>,
    /// The config whose mappings the field-mapping operations change.
    mapping_config: String,
    /// A config, a mapping and a record that the DELETE operations may remove.
    doomed_config: String,
    doomed_mapping: String,
    doomed_record: String,
    /// A webhook integration, one the DELETE may remove, and a dispatch of the first.
    integrations: Vec<String>,
    doomed_integration: String,
    dispatches: Vec<String>,
}

impl Seeds {
    fn summary(&self) -> String {
        format!(
            "{} connections, {} configs, {} mappings, {} records, {} logs, {} conflicts",
            self.connections.len(),
            self.configs.len() + 2,
            self.mappings.len(),
            self.records.len(),
            self.logs.len(),
            self.conflicts.len()
        )
    }
}

/// The dev host and the sandbox, as the admin of the fuzz tenant.
struct Api {
    http: reqwest::Client,
    base: String,
    sandbox: String,
    token: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// A call that must answer `want`.
    async fn expect(
        &self,
        want: u16,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let (status, value) = self.call(method, path, body).await?;
        ensure!(status == want, "{method} {path}: {status} {value}");
        Ok(value)
    }

    async fn sandbox(&self, path: &str, body: Value) -> Result<()> {
        let resp = self
            .http
            .post(format!("{}{path}", self.sandbox))
            .json(&body)
            .send()
            .await?;
        ensure!(
            resp.status().is_success(),
            "sandbox {path}: {}",
            resp.status()
        );
        Ok(())
    }

    /// The `Location` of a GET that redirects.
    async fn location(&self, url: &str) -> Result<String> {
        let resp = self.http.get(url).send().await?;
        ensure!(
            resp.status().as_u16() == 302,
            "GET {url}: {}",
            resp.status()
        );
        resp.headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("GET {url}: no Location"))
    }

    /// Connects `provider` through OAuth: start, the sandbox approves, the callback
    /// connects; returns the connection's id.
    async fn oauth_connect(&self, provider: &str) -> Result<String> {
        let start = self
            .expect(
                200,
                "POST",
                &format!("/v1/oauth/{provider}/start"),
                Some(json!({"return_to": RETURN_TO})),
            )
            .await?;
        let callback = self.location(&text(&start, "authorize_url")?).await?;
        let back = self.location(&callback).await?;
        query_param(&back, "connection_id")
            .ok_or_else(|| anyhow!("the {provider} OAuth callback did not connect: {back}"))
    }

    /// Creates a sync config of one entity on `connection` (mappings auto-mapped).
    async fn create_config(
        &self,
        connection: &str,
        entity: &str,
        direction: &str,
        frequency: &str,
        strategy: &str,
    ) -> Result<Value> {
        self.expect(
            201,
            "POST",
            "/v1/sync/configs",
            Some(json!({
                "connection_id": connection,
                "name": format!("Fuzz {entity} ({direction})"),
                "direction": direction,
                "frequency": {"type": frequency},
                "entities": [entity],
                "conflict_strategy": strategy,
            })),
        )
        .await
    }

    /// Triggers a run of `config` and waits until it is over.
    async fn run_sync(&self, config: &str) -> Result<Vec<String>> {
        let started = self
            .expect(
                202,
                "POST",
                "/v1/sync/trigger",
                Some(json!({"config_id": config})),
            )
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self
                .expect(
                    200,
                    "GET",
                    &format!("/v1/sync/configs/{config}/status"),
                    None,
                )
                .await?;
            if status["running"] == json!(false) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the run did not finish: {status}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(strings(&started["logs"], "id"))
    }
}

/// The `key` of every object in the array `list`.
fn strings(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i[key].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn text(value: &Value, key: &str) -> Result<String> {
    value[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no {key} in {value}"))
}

/// The value of query parameter `name` in `url`.
fn query_param(url: &str, name: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    parsed
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn seed(api: &Api) -> Result<Seeds> {
    let mut s = Seeds::default();
    let zendesk = api
        .expect(
            201,
            "POST",
            "/v1/connections",
            Some(json!({
                "provider": "zendesk",
                "label": "Fuzz support desk",
                "credentials": {"subdomain": "acme", "email": "admin@acme.test", "api_token": "zd-sandbox-token-0001"},
            })),
        )
        .await?;
    s.connections.push(text(&zendesk, "id")?);

    let hubspot = api.oauth_connect("hubspot").await?;
    s.connections.push(hubspot.clone());

    api.sandbox(
        "/_sandbox/hubspot/seed",
        json!({"object": "contacts", "count": 20}),
    )
    .await?;
    let config = api
        .create_config(
            &hubspot,
            "contacts",
            "bidirectional",
            "manual",
            "manual_review",
        )
        .await?;
    let config_id = text(&config, "id")?;
    s.configs.push(config_id.clone());
    s.logs.extend(api.run_sync(&config_id).await?);

    // A conflict: one contact changed on both sides, then a second run.
    let records = api
        .expect(200, "GET", "/v1/records/contacts?limit=5", None)
        .await?;
    s.records = strings(&records["records"], "id");
    let record = s
        .records
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("the first run pulled no contacts"))?;
    let view = api
        .expect(200, "GET", &format!("/v1/records/contacts/{record}"), None)
        .await?;
    let crm_id = view["links"][0]["crm_id"]
        .as_str()
        .ok_or_else(|| anyhow!("the pulled contact has no link: {view}"))?
        .to_owned();
    api.expect(
        200,
        "PATCH",
        &format!("/v1/records/contacts/{record}"),
        Some(json!({"fields": {"job_title": "CTO (app)"}})),
    )
    .await?;
    api.sandbox(
        "/_sandbox/hubspot/update",
        json!({"object": "contacts", "id": crm_id, "properties": {"jobtitle": "CTO (HubSpot)"}}),
    )
    .await?;
    s.logs.extend(api.run_sync(&config_id).await?);
    let conflicts = api.expect(200, "GET", "/v1/sync/conflicts", None).await?;
    s.conflicts = strings(&conflicts["conflicts"], "id");
    ensure!(!s.conflicts.is_empty(), "the second run stored no conflict");

    let company = api
        .expect(
            201,
            "POST",
            "/v1/records/companies",
            Some(json!({"fields": {"name": "Fuzz Ltd", "domain": "fuzz.example"}})),
        )
        .await?;
    s.records.push(text(&company, "id")?);
    let doomed = api
        .expect(
            201,
            "POST",
            "/v1/records/companies",
            Some(json!({"fields": {"name": "Doomed Ltd", "domain": "doomed.example"}})),
        )
        .await?;
    s.doomed_record = text(&doomed, "id")?;
    let companies = api
        .create_config(&hubspot, "companies", "pull", "hourly", "crm_wins")
        .await?;
    s.doomed_config = text(&companies, "id")?;

    // The field-mapping operations work on a config of their own (a config PATCH
    // changing entities would drop the contacts config's mappings under them).
    let salesforce = api.oauth_connect("salesforce").await?;
    s.connections.push(salesforce.clone());
    let mapped = api
        .create_config(&salesforce, "contacts", "pull", "manual", "last_write_wins")
        .await?;
    s.mapping_config = text(&mapped, "id")?;
    s.mappings = strings(&mapped["mappings"], "id");
    ensure!(
        s.mappings.len() >= 2,
        "the Salesforce config has too few mappings: {mapped}"
    );
    s.doomed_mapping = s.mappings.last().cloned().unwrap_or_default();
    api.expect(
        201,
        "PUT",
        "/v1/providers/salesforce/app-credentials",
        Some(
            json!({"client_id": "fuzz-salesforce-app", "client_secret": "fuzz-salesforce-secret"}),
        ),
    )
    .await?;

    // Integrations: a webhook (its sends fail where no endpoint answers, so its
    // dispatch has steps to show), and one for the DELETE.
    let webhook = |name: &str| {
        json!({
            "name": name,
            "provider": "webhook",
            "action": "deliver",
            "triggers": [{"event": "conversation_ended"}],
            "webhook": {"url": "https://hooks.example.com/conduit"},
        })
    };
    let hook = api
        .expect(
            201,
            "POST",
            "/v1/integrations",
            Some(webhook("Fuzz webhook")),
        )
        .await?;
    s.integrations.push(text(&hook, "id")?);
    let doomed = api
        .expect(
            201,
            "POST",
            "/v1/integrations",
            Some(webhook("Doomed webhook")),
        )
        .await?;
    s.doomed_integration = text(&doomed, "id")?;
    let sent = api
        .expect(
            200,
            "POST",
            &format!("/v1/integrations/{}/send", s.integrations[0]),
            Some(json!({"event_type": "conversation_ended"})),
        )
        .await?;
    s.dispatches.push(text(&sent, "id")?);
    Ok(s)
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| toml_str(i)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The schemathesis configuration: target, auth, generation, checks, and the seeded
/// ids bound to the operations that read or change them (DELETEs only get generated
/// ids, so the seeds live through the run).
fn schemathesis_config(options: &Options, api: &Api, seeds: &Seeds) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "seed = {}", options.seed);
    let _ = writeln!(out, "base-url = {}", toml_str(&api.base));
    // One worker: with two, CPython's AST constructor can fail under schemathesis's
    // threads ("recursion depth mismatch", python/cpython#106905) and end a run that
    // found nothing wrong.
    let _ = writeln!(out, "workers = 1");
    let _ = writeln!(out, "request-timeout = 30.0");
    // Report every distinct failure of an operation, not only its first.
    let _ = writeln!(out, "continue-on-failure = true");
    let _ = writeln!(
        out,
        "headers = {{ Authorization = {} }}",
        toml_str(&format!("Bearer {}", api.token))
    );
    let _ = writeln!(out, "\n[generation]");
    let _ = writeln!(out, "mode = \"all\"");
    let _ = writeln!(out, "max-examples = {}", options.max_examples);
    let _ = writeln!(out, "database = \"none\"");
    // Negative cases may add keys the schema does not allow (bodies refuse unknown
    // keys at every depth, queries unknown parameters).
    let _ = writeln!(out, "allow-extra-parameters = true");
    let _ = writeln!(out, "\n[phases.stateful]\nenabled = false");
    // Ids seen in responses would let a DELETE remove the seeds early; DELETEs get
    // their own seeds below.
    for phase in ["examples", "coverage", "fuzzing"] {
        let _ = writeln!(
            out,
            "\n[phases.{phase}]\nextra-data-sources = {{ responses = false }}"
        );
    }
    let _ = writeln!(out, "\n[checks]\nenabled = false");
    for check in CHECKS {
        let _ = writeln!(out, "{check}.enabled = true");
    }
    // Every refusal of invalid input is a 4xx that changes nothing; a 412 (stale
    // If-Match checked before the body) and a 413 are refusals too. A 5xx is not
    // (not_a_server_error reports it).
    let _ = writeln!(
        out,
        "negative_data_rejection.expected-statuses = {}",
        toml_list(&REFUSALS.map(str::to_owned))
    );
    let dictionaries: [(&str, &[String]); 6] = [
        ("connections", &seeds.connections),
        ("configs", &seeds.configs),
        ("mappings", &seeds.mappings),
        ("records", &seeds.records),
        ("logs", &seeds.logs),
        ("conflicts", &seeds.conflicts),
    ];
    for (name, values) in dictionaries {
        if !values.is_empty() {
            let _ = writeln!(
                out,
                "\n[dictionaries.{name}]\nvalues = {}",
                toml_list(values)
            );
        }
    }
    // Path parameters of the operations that read or change a seeded resource are
    // fixed to it in every phase (DELETEs to seeds of their own, so the others live
    // through the run; connections are deleted by generated ids only); ids in queries
    // and bodies are drawn from the seeds in half the fuzzing phase's cases and
    // generated otherwise.
    let first = |ids: &[String]| ids.first().cloned().unwrap_or_default();
    let fixed: [(&str, Vec<(&str, String)>); 13] = [
        (
            "^DELETE /v1/integrations/\\{id\\}$",
            vec![("path.id", seeds.doomed_integration.clone())],
        ),
        (
            "^(GET|PUT|PATCH|POST) /v1/integrations/\\{id\\}",
            vec![("path.id", first(&seeds.integrations))],
        ),
        (
            "^(GET|POST) /v1/dispatches/\\{id\\}",
            vec![("path.id", first(&seeds.dispatches))],
        ),
        (
            "^DELETE /v1/sync/configs/\\{id\\}$",
            vec![("path.id", seeds.doomed_config.clone())],
        ),
        (
            "^DELETE /v1/sync/configs/\\{id\\}/field-mappings/\\{mapping_id\\}$",
            vec![
                ("path.id", seeds.mapping_config.clone()),
                ("path.mapping_id", seeds.doomed_mapping.clone()),
            ],
        ),
        (
            "^DELETE /v1/records/\\{entity\\}/\\{id\\}$",
            vec![("path.id", seeds.doomed_record.clone())],
        ),
        (
            "^(GET|POST|PATCH) /v1/connections/\\{id\\}",
            vec![("path.id", first(&seeds.connections))],
        ),
        (
            "^(GET|POST|PATCH) /v1/sync/configs/\\{id\\}(/(pause|resume|available-fields|auto-map|preview|status))?$",
            vec![("path.id", first(&seeds.configs))],
        ),
        (
            "^(GET|POST) /v1/sync/configs/\\{id\\}/field-mappings$",
            vec![("path.id", seeds.mapping_config.clone())],
        ),
        (
            "^PATCH /v1/sync/configs/\\{id\\}/field-mappings/\\{mapping_id\\}$",
            vec![
                ("path.id", seeds.mapping_config.clone()),
                ("path.mapping_id", first(&seeds.mappings)),
            ],
        ),
        (
            "^(GET|PUT|PATCH) /v1/records/\\{entity\\}/\\{id\\}$",
            vec![("path.id", first(&seeds.records))],
        ),
        (
            "^(GET|POST) /v1/sync/logs/\\{id\\}",
            vec![("path.id", first(&seeds.logs))],
        ),
        (
            "^(GET|POST) /v1/sync/conflicts/\\{id\\}",
            vec![("path.id", first(&seeds.conflicts))],
        ),
    ];
    for (name, parameters) in fixed {
        let bound: Vec<String> = parameters
            .iter()
            .map(|(parameter, value)| format!("{} = {}", toml_str(parameter), toml_str(value)))
            .collect();
        let _ = writeln!(
            out,
            "\n[[operations]]\ninclude-name-regex = {}\nparameters = {{ {} }}",
            toml_str(name),
            bound.join(", ")
        );
    }
    let drawn: [(&str, &str, &str); 4] = [
        ("^POST /v1/sync/trigger$", "body.config_id", "configs"),
        (
            "^GET /v1/sync/(logs|conflicts)$",
            "query.config_id",
            "configs",
        ),
        (
            "^GET /v1/sync/configs$",
            "query.connection_id",
            "connections",
        ),
        (
            "^POST /v1/sync/configs$",
            "body.connection_id",
            "connections",
        ),
    ];
    for (name, parameter, dictionary) in drawn {
        let _ = writeln!(
            out,
            "\n[[operations]]\ninclude-name-regex = {}\nparameters = {{ {} = {{ dictionary = {}, probability = 0.5 }} }}",
            toml_str(name),
            toml_str(parameter),
            toml_str(dictionary)
        );
    }
    out
}
