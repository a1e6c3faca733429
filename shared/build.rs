//! Converts the data catalogues (`providers.yaml`, `integration-templates.yaml`) to JSON
//! at build time: functions parse them on every cold start, and JSON parses several
//! times faster than YAML. The YAML stays the source; unit tests check both read the same.

use std::path::PathBuf;

/// Each catalogue: its YAML source and the JSON file written to `OUT_DIR`.
const CATALOGUES: [(&str, &str); 2] = [
    ("providers.yaml", "providers.json"),
    ("integration-templates.yaml", "integration-templates.json"),
];

fn main() {
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        fail("OUT_DIR is not set");
    };
    for (source, target) in CATALOGUES {
        println!("cargo::rerun-if-changed={source}");
        let yaml = match std::fs::read_to_string(source) {
            Ok(text) => text,
            Err(e) => fail(&format!("reading {source}: {e}")),
        };
        let value: serde_yaml_ng::Value = match serde_yaml_ng::from_str(&yaml) {
            Ok(value) => value,
            Err(e) => fail(&format!("{source} is not YAML: {e}")),
        };
        let json = match serde_json::to_string(&value) {
            Ok(json) => json,
            Err(e) => fail(&format!("{source} has no JSON form: {e}")),
        };
        if let Err(e) = std::fs::write(out.join(target), json) {
            fail(&format!("writing {target}: {e}"));
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("shared/build.rs: {message}");
    std::process::exit(1);
}
