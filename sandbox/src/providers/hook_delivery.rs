//! What every webhook stand-in shares: the check of a target URL a provider accepts
//! (absolute `https`, or `http` on a loopback host — the dev host) and the one `POST`
//! a delivery is.

use std::time::Duration;

use serde::Serialize;

/// One request sent to a subscription URL, as sent.
#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    /// Where it went.
    pub url: String,
    /// Its headers (credentials among them, where the provider sends some).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: String,
    /// The answer's status; `None` when none came.
    pub status: Option<u16>,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// Whether a provider would accept `url` as a webhook target.
pub(crate) fn target_ok(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    match u.scheme() {
        "https" => u.host_str().is_some(),
        "http" => matches!(u.host_str(), Some("127.0.0.1" | "localhost")),
        _ => false,
    }
}

/// Sends one delivery; the answer's status and body (`None` when no answer came
/// within `timeout`).
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let mut req = client.post(url).timeout(timeout).body(body.to_owned());
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let answer = req.send().await.ok()?;
    let status = answer.status().as_u16();
    Some((status, answer.text().await.unwrap_or_default()))
}

/// Whether a delivery's answer is a success (2xx).
pub(crate) fn delivered(status: Option<u16>) -> bool {
    status.is_some_and(|s| (200..300).contains(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_https_or_loopback_http() {
        assert!(target_ok("https://hooks.example.com/h"));
        assert!(target_ok("http://127.0.0.1:3000/v1/webhooks/hubspot"));
        assert!(target_ok("http://localhost:3000/v1/webhooks/zoho/t/c"));
        assert!(!target_ok("http://hooks.example.com/h"));
        assert!(!target_ok("ftp://x/y"));
        assert!(!target_ok("/relative"));
    }

    #[test]
    fn only_2xx_is_delivered() {
        assert!(delivered(Some(200)));
        assert!(delivered(Some(204)));
        assert!(!delivered(Some(302)));
        assert!(!delivered(Some(401)));
        assert!(!delivered(None));
    }
}
