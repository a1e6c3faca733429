//! Everything at once for scenario tests and `devhost up`: moto (or a given endpoint),
//! the provider sandbox, the stack bootstrapped from `template.yaml`, the dev host and
//! a JWT issuer whose tokens it accepts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_config::SdkConfig;

use crate::jwt::LocalJwt;
use crate::moto::MotoServer;
use crate::registry::FunctionRegistry;
use crate::server::DevHost;
use crate::stack::{LocalStack, StackOptions, bootstrap};
use crate::template::Template;

/// The `JwtAudience` of local stacks.
pub const LOCAL_AUDIENCE: &str = "conduit-local";
/// The `DashboardOrigins` of local stacks.
pub const LOCAL_DASHBOARD_ORIGIN: &str = "http://localhost:5173";

/// The `JwtIssuer` of a local stack whose dev host listens on `port`.
pub fn local_issuer(port: u16) -> String {
    format!("http://127.0.0.1:{port}/local-issuer")
}

/// How to start a [`LocalEnv`]; `Default` suits tests (free ports, a unique stack on
/// the process-wide moto, an in-memory JWT key, every registered function).
#[derive(Debug, Clone, Default)]
pub struct LocalEnvOptions {
    /// The template (default: the repository's `template.yaml`).
    pub template: Option<PathBuf>,
    /// The stack name (default: a fresh unique one, so tests sharing moto don't meet).
    pub stack_name: Option<String>,
    /// An AWS endpoint to use (default: [`MotoServer::shared`]).
    pub aws_endpoint: Option<String>,
    /// The dev host's port (0: a free one).
    pub port: u16,
    /// The sandbox's port (0: a free one).
    pub sandbox_port: u16,
    /// The JWT signing key (default: random, in memory).
    pub jwt_key: Option<Vec<u8>>,
    /// Template parameters over the local defaults (`JwtIssuer`, `JwtAudience`,
    /// `DashboardOrigins`).
    pub parameters: BTreeMap<String, String>,
    /// Secret values by logical id (see [`StackOptions::secret_values`]).
    pub secret_values: BTreeMap<String, String>,
    /// The handlers (default: [`FunctionRegistry::conduit`]).
    pub functions: Option<FunctionRegistry>,
}

/// A running local environment.
#[derive(Debug)]
pub struct LocalEnv {
    /// The AWS endpoint (moto).
    pub aws_endpoint: String,
    /// The SDK configuration reaching it.
    pub aws: SdkConfig,
    /// The provider sandbox.
    pub sandbox: sandbox::Sandbox,
    /// The bootstrapped stack.
    pub stack: LocalStack,
    /// The dev host.
    pub devhost: DevHost,
    /// Issues tokens the dev host accepts.
    pub jwt: LocalJwt,
}

impl LocalEnv {
    /// Starts (or reuses) moto, starts the sandbox, bootstraps the stack with the
    /// sandbox as provider origin, and serves the dev host.
    pub async fn start(options: LocalEnvOptions) -> Result<LocalEnv> {
        let aws_endpoint = match options.aws_endpoint {
            Some(endpoint) => endpoint,
            None => tokio::task::spawn_blocking(|| MotoServer::shared().map(MotoServer::endpoint))
                .await
                .context("starting moto")??,
        };
        let aws = crate::aws::moto_sdk_config(&aws_endpoint).await;
        let sandbox = sandbox::Sandbox::start(options.sandbox_port)
            .await
            .with_context(|| {
                format!(
                    "starting the provider sandbox on port {}",
                    options.sandbox_port
                )
            })?;
        let template_path = match options.template {
            Some(path) => path,
            None => crate::paths::repo_root()?.join("template.yaml"),
        };
        let template = Template::load(&template_path)?;
        let stack_name = options
            .stack_name
            .unwrap_or_else(|| format!("t{}", ulid::Ulid::new().to_string().to_ascii_lowercase()));

        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, options.port))
            .await
            .with_context(|| format!("binding the dev host to 127.0.0.1:{}", options.port))?;
        let port = listener
            .local_addr()
            .context("reading the dev host's port")?
            .port();

        let mut stack_options = StackOptions::new(stack_name)
            .parameter("JwtIssuer", local_issuer(port))
            .parameter("JwtAudience", LOCAL_AUDIENCE)
            .parameter("DashboardOrigins", LOCAL_DASHBOARD_ORIGIN)
            .local_env("CONDUIT_PROVIDER_ORIGIN_OVERRIDE", sandbox.url())
            .local_env("CONDUIT_ALLOW_LOOPBACK_HTTP", "true");
        stack_options.parameters.extend(options.parameters);
        stack_options.secret_values = options.secret_values;
        let stack = bootstrap(&template, &aws, &stack_options).await?;

        let issuer = stack_options.parameters["JwtIssuer"].clone();
        let audience = stack_options.parameters["JwtAudience"].clone();
        let jwt = match options.jwt_key {
            Some(key) => LocalJwt::new(issuer, audience, key),
            None => LocalJwt::random(issuer, audience),
        };
        let functions = options.functions.unwrap_or_else(FunctionRegistry::conduit);
        let devhost =
            DevHost::start_with_listener(&stack, functions, jwt.clone(), listener).await?;
        Ok(LocalEnv {
            aws_endpoint,
            aws,
            sandbox,
            stack,
            devhost,
            jwt,
        })
    }

    /// The dev host's base URL.
    pub fn url(&self) -> String {
        self.devhost.url()
    }

    /// A token for `user` of `tenant` with `role`, valid for an hour.
    pub fn token(&self, tenant: &str, user: &str, role: &str) -> Result<String> {
        self.jwt.mint(tenant, user, role, Duration::from_secs(3600))
    }

    /// Stops the dev host and the sandbox (moto stays: it may be shared).
    pub async fn shutdown(self) {
        self.devhost.shutdown().await;
        self.sandbox.shutdown().await;
    }
}
