//! `.local/stack.json`: what `devhost up` started, so `devhost token` and
//! `devhost invoke` can reach the running local stack.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::paths::{JWT_KEY_FILE, STACK_FILE, local_dir};

/// The running local stack, as `devhost up` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackFile {
    /// The AWS endpoint (moto).
    pub aws_endpoint: String,
    /// The stack name.
    pub stack_name: String,
    /// The provider sandbox's base URL.
    pub sandbox_url: String,
    /// The dev host's base URL.
    pub devhost_url: String,
    /// The template parameter values used.
    pub parameters: BTreeMap<String, String>,
    /// The local additions to every function's environment.
    pub local_env: BTreeMap<String, String>,
    /// The `iss` of local tokens.
    pub jwt_issuer: String,
    /// The `aud` of local tokens.
    pub jwt_audience: String,
    /// The process id of `devhost up`.
    pub pid: u32,
}

impl StackFile {
    /// `<repo>/.local/stack.json`.
    pub fn path() -> Result<PathBuf> {
        Ok(local_dir()?.join(STACK_FILE))
    }

    /// `<repo>/.local/jwt.key`.
    pub fn jwt_key_path() -> Result<PathBuf> {
        Ok(local_dir()?.join(JWT_KEY_FILE))
    }

    /// Reads the running stack's description.
    pub fn load() -> Result<Self> {
        let path = Self::path()?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} — is `devhost up` running?", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes the description, creating `.local/`.
    pub fn save(&self) -> Result<()> {
        let path = Self::path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text =
            serde_json::to_string_pretty(self).context("serialising the stack description")?;
        std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// Removes the description (when `devhost up` stops).
    pub fn remove() {
        if let Ok(path) = Self::path() {
            let _ = std::fs::remove_file(path);
        }
    }
}
