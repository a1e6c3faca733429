//! `sandbox --port 9100`: runs the provider sandbox until Ctrl-C.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

const DEFAULT_PORT: u16 = 9100;
const USAGE: &str = "usage: sandbox [--port N]   (default 9100; 0 picks a free port)";

/// What the command line asked for.
enum Command {
    Serve { port: u16 },
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut port = DEFAULT_PORT;
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--port" | "-p" => args.next().ok_or_else(|| format!("{arg} needs a value"))?,
            other => match other.strip_prefix("--port=") {
                Some(value) => value.to_owned(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        };
        port = value
            .parse()
            .map_err(|_| format!("invalid port {value:?}"))?;
    }
    Ok(Command::Serve { port })
}

#[tokio::main]
async fn main() -> ExitCode {
    let port = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Serve { port }) => port,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("sandbox: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let sandbox = match sandbox::Sandbox::start(port).await {
        Ok(sandbox) => sandbox,
        Err(error) => {
            tracing::error!(%error, port, "sandbox could not bind");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(url = %sandbox.url(), "sandbox listening");

    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(%error, "cannot wait for Ctrl-C; stopping");
    }
    sandbox.shutdown().await;
    tracing::info!("sandbox stopped");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn port_forms() {
        assert!(matches!(parse(&[]), Ok(Command::Serve { port: 9100 })));
        assert!(matches!(
            parse(&["--port", "0"]),
            Ok(Command::Serve { port: 0 })
        ));
        assert!(matches!(
            parse(&["--port=9200"]),
            Ok(Command::Serve { port: 9200 })
        ));
        assert!(matches!(
            parse(&["-p", "1"]),
            Ok(Command::Serve { port: 1 })
        ));
        assert!(matches!(parse(&["--help"]), Ok(Command::Help)));
    }

    #[test]
    fn bad_arguments() {
        assert!(parse(&["--port"]).is_err());
        assert!(parse(&["--port", "99999"]).is_err());
        assert!(parse(&["--verbose"]).is_err());
    }
}
