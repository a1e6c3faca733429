//! Converts the provider catalogue (`providers.yaml`) to JSON at build time: functions
//! parse it on every cold start, and JSON parses several times faster than YAML.
//! The YAML stays the source; a unit test checks both read the same.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-changed=providers.yaml");
    let yaml = match std::fs::read_to_string("providers.yaml") {
        Ok(text) => text,
        Err(e) => fail(&format!("reading providers.yaml: {e}")),
    };
    let value: serde_yaml_ng::Value = match serde_yaml_ng::from_str(&yaml) {
        Ok(value) => value,
        Err(e) => fail(&format!("providers.yaml is not YAML: {e}")),
    };
    let json = match serde_json::to_string(&value) {
        Ok(json) => json,
        Err(e) => fail(&format!("providers.yaml has no JSON form: {e}")),
    };
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        fail("OUT_DIR is not set");
    };
    if let Err(e) = std::fs::write(out.join("providers.json"), json) {
        fail(&format!("writing providers.json: {e}"));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("shared/build.rs: {message}");
    std::process::exit(1);
}
