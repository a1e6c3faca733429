//! Where things live: the repository root (the folder holding `template.yaml`), the
//! git-ignored `.local/` folder with the running stack's description and JWT key, and
//! the project's virtualenv.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The folder, relative to the repository root, holding local state (git-ignored).
pub const LOCAL_DIR: &str = ".local";
/// The running stack's description, written by `devhost up`.
pub const STACK_FILE: &str = "stack.json";
/// The local JWT signing key, written by `devhost up`.
pub const JWT_KEY_FILE: &str = "jwt.key";

fn is_repo_root(dir: &Path) -> bool {
    dir.join("template.yaml").is_file() && dir.join("Cargo.toml").is_file()
}

/// The repository root: the nearest folder at or above the current directory holding
/// `template.yaml` and `Cargo.toml`, else the workspace this crate was built in.
pub fn repo_root() -> Result<PathBuf> {
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if is_repo_root(dir) {
                return Ok(dir.to_path_buf());
            }
        }
    }
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if is_repo_root(&built_in) {
        return Ok(built_in.canonicalize().unwrap_or(built_in));
    }
    bail!(
        "cannot find the repository root (a folder with template.yaml and Cargo.toml) at or above the current directory"
    )
}

/// `<repo>/.local`.
pub fn local_dir() -> Result<PathBuf> {
    Ok(repo_root()?.join(LOCAL_DIR))
}

/// The virtualenv holding `moto_server`: `$CONDUIT_VENV`, else `<repo>/.venv`.
pub fn venv_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CONDUIT_VENV").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    repo_root().ok().map(|root| root.join(".venv"))
}
