//! `infra/openapi.yaml` describes exactly the HTTP routes of `template.yaml`: every
//! template route has its path and method in the spec and the spec has no other, the
//! public routes (no authorizer) are the ones the spec marks `security: []`, and the
//! spec is valid OpenAPI 3.1 (checked by `openapi-spec-validator` from the venv).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use devhost::paths::{repo_root, venv_dir};
use devhost::template::load_repo_template;
use serde_yaml_ng::Value;

const SPEC: &str = "infra/openapi.yaml";
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec_path() -> PathBuf {
    repo_root().expect("repository root").join(SPEC)
}

fn spec() -> Value {
    let text = std::fs::read_to_string(spec_path()).expect("read infra/openapi.yaml");
    serde_yaml_ng::from_str(&text).expect("infra/openapi.yaml is YAML")
}

/// `(route key, public)` of every operation of the spec.
fn spec_routes(spec: &Value) -> BTreeSet<(String, bool)> {
    let global_security = spec.get("security").is_some_and(non_empty);
    let paths = spec
        .get("paths")
        .and_then(Value::as_mapping)
        .expect("the spec has paths");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let path = path.as_str().expect("paths are strings");
        let item = item.as_mapping().expect("a path item is a mapping");
        for (key, op) in item {
            let Some(method) = key.as_str().filter(|k| METHODS.contains(k)) else {
                continue;
            };
            let public = match op.get("security") {
                Some(security) => !non_empty(security),
                None => !global_security,
            };
            out.insert((format!("{} {path}", method.to_uppercase()), public));
        }
    }
    out
}

fn non_empty(security: &Value) -> bool {
    security.as_sequence().is_some_and(|s| !s.is_empty())
}

/// `(route key, public)` of every HTTP route of the template.
fn template_routes() -> BTreeSet<(String, bool)> {
    load_repo_template()
        .expect("template.yaml parses")
        .routes()
        .iter()
        .map(|r| (r.route_key(), r.is_public()))
        .collect()
}

#[test]
fn the_spec_and_the_template_have_the_same_routes() {
    let template = template_routes();
    let spec = spec_routes(&spec());
    let keys = |set: &BTreeSet<(String, bool)>| -> BTreeSet<String> {
        set.iter().map(|(k, _)| k.clone()).collect()
    };
    let (t, s) = (keys(&template), keys(&spec));
    let missing: Vec<&String> = t.difference(&s).collect();
    let extra: Vec<&String> = s.difference(&t).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "template.yaml and {SPEC} disagree.\n  in the template, not the spec: {missing:?}\n  in the spec, not the template: {extra:?}"
    );
    let auth_differs: Vec<&(String, bool)> = spec.difference(&template).collect();
    assert!(
        auth_differs.is_empty(),
        "public in one and authorised in the other (route, public in the spec): {auth_differs:?}"
    );
    assert!(
        template.len() >= 45,
        "the template lost routes: {}",
        template.len()
    );
}

#[test]
fn the_route_comparison_sees_a_missing_and_an_extra_route() {
    let mut spec = spec();
    let paths = spec
        .get_mut("paths")
        .and_then(Value::as_mapping_mut)
        .expect("paths");
    paths.remove("/v1/sync/trigger");
    paths.insert(
        Value::from("/v1/not-in-the-template"),
        serde_yaml_ng::from_str("get: {responses: {'200': {description: x}}}").expect("yaml"),
    );
    let keys: BTreeSet<String> = spec_routes(&spec).into_iter().map(|(k, _)| k).collect();
    assert!(!keys.contains("POST /v1/sync/trigger"));
    assert!(keys.contains("GET /v1/not-in-the-template"));
    let template: BTreeSet<String> = template_routes().into_iter().map(|(k, _)| k).collect();
    assert_ne!(keys, template);
}

#[test]
fn the_spec_is_valid_openapi_3_1() {
    let spec = spec();
    assert_eq!(
        spec.get("openapi").and_then(Value::as_str),
        Some("3.1.0"),
        "{SPEC} declares OpenAPI 3.1.0"
    );
    let python = venv_dir().map(|v| v.join("bin").join("python"));
    let Some(python) = python.filter(|p| p.is_file()) else {
        eprintln!("skipping the validator: no .venv (run `make venv`)");
        return;
    };
    let out = Command::new(&python)
        .args(["-m", "openapi_spec_validator"])
        .arg(spec_path())
        .output()
        .expect("run openapi_spec_validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused {SPEC}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
