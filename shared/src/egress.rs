//! Outbound HTTP: one client for every provider call, which never follows redirects,
//! times out, and never reaches private, loopback or link-local addresses through a
//! tenant-supplied host name (SSRF). Catalogue hosts come from the catalogue; local
//! use may send them to the provider sandbox through deployment config only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// What tenant URLs may point at.
#[derive(Debug, Clone, Copy, Default)]
pub struct UrlPolicy {
    /// Local use only: plain http to loopback addresses is allowed.
    pub allow_loopback_http: bool,
}

/// Why a tenant URL was refused. Safe to show (never repeats credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("must be a URL")]
    Malformed,
    /// Not https (or http to loopback where allowed).
    #[error("must use https")]
    Scheme,
    /// Carries user:password.
    #[error("may not carry credentials; use the credential fields")]
    Userinfo,
    /// Has a fragment or no host.
    #[error("must name a host and carry no #fragment")]
    Shape,
    /// Names or resolves to an address that is not public.
    #[error("must point to a public address")]
    NotPublic,
}

/// Validates a URL a tenant gave: https only, no credentials or fragment, and an IP
/// literal must be public. Host names are checked again at connect time, by the
/// client's resolver, so a name that later resolves inside the network is refused.
pub fn validate_tenant_url(value: &str, policy: &UrlPolicy) -> Result<Url, UrlError> {
    let url = Url::parse(value).map_err(|_| UrlError::Malformed)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Userinfo);
    }
    if url.fragment().is_some() || url.host().is_none() || url.cannot_be_a_base() {
        return Err(UrlError::Shape);
    }
    let loopback_ok = policy.allow_loopback_http && host_is_loopback(&url);
    match url.scheme() {
        "https" => {}
        "http" if loopback_ok => {}
        _ => return Err(UrlError::Scheme),
    }
    if !loopback_ok {
        match url.host() {
            Some(Host::Ipv4(ip)) if !is_public(IpAddr::V4(ip)) => return Err(UrlError::NotPublic),
            Some(Host::Ipv6(ip)) if !is_public(IpAddr::V6(ip)) => return Err(UrlError::NotPublic),
            Some(Host::Domain(d))
                if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") =>
            {
                return Err(UrlError::NotPublic);
            }
            _ => {}
        }
    }
    Ok(url)
}

fn host_is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// True for addresses on the public internet: not loopback, private, link-local
/// (cloud metadata), carrier-grade NAT, unspecified, multicast, broadcast,
/// documentation or unique-local, including IPv4 addresses mapped into IPv6.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || is_documentation_v6(v6))
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_documentation_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    s[0] == 0x2001 && s[1] == 0x0db8
}

/// Resolves host names and drops every address that is not public (unless loopback
/// is allowed for local use), so no DNS answer can steer a request inside.
#[derive(Debug, Clone)]
struct GuardedResolver {
    allow_loopback: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()) || (allow_loopback && a.ip().is_loopback()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} does not resolve to a public address").into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Builds the outbound client: no redirects, bounded time, guarded DNS.
pub fn client(policy: &UrlPolicy) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("conduit/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver {
            allow_loopback: policy.allow_loopback_http,
        }))
        .build()
}

/// Sends a catalogue URL to the local sandbox when deployment config says so:
/// `https://host/path?q` becomes `{origin}/host/path?q`. Other URLs pass unchanged.
pub fn rewrite_origin(url: &str, origin: Option<&Url>) -> String {
    match (origin, url.strip_prefix("https://")) {
        (Some(origin), Some(rest)) => {
            format!("{}/{}", origin.as_str().trim_end_matches('/'), rest)
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "104.16.0.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn tenant_urls_follow_the_policy() {
        let strict = UrlPolicy::default();
        let local = UrlPolicy {
            allow_loopback_http: true,
        };
        assert!(validate_tenant_url("https://api.example.com/v1", &strict).is_ok());
        assert_eq!(
            validate_tenant_url("http://api.example.com", &strict),
            Err(UrlError::Scheme)
        );
        assert_eq!(
            validate_tenant_url("http://127.0.0.1:9/x", &strict),
            Err(UrlError::Scheme)
        );
        assert_eq!(
            validate_tenant_url("https://[::1]/x", &strict),
            Err(UrlError::NotPublic)
        );
        assert_eq!(
            validate_tenant_url("https://localhost/x", &strict),
            Err(UrlError::NotPublic)
        );
        assert_eq!(
            validate_tenant_url("ftp://example.com", &strict),
            Err(UrlError::Scheme)
        );
        assert_eq!(
            validate_tenant_url("https://a:b@example.com", &strict),
            Err(UrlError::Userinfo)
        );
        assert_eq!(
            validate_tenant_url("not a url", &strict),
            Err(UrlError::Malformed)
        );
        assert!(validate_tenant_url("http://127.0.0.1:9/x", &local).is_ok());
        assert_eq!(
            validate_tenant_url("http://10.0.0.1/x", &local),
            Err(UrlError::Scheme)
        );
    }

    #[test]
    fn origin_rewrite_only_touches_https_urls() {
        let o = Url::parse("http://127.0.0.1:9100").unwrap();
        assert_eq!(
            rewrite_origin(
                "https://acme.zendesk.com/api/v2/users/me.json?x=1",
                Some(&o)
            ),
            "http://127.0.0.1:9100/acme.zendesk.com/api/v2/users/me.json?x=1"
        );
        assert_eq!(rewrite_origin("https://a.b/c", None), "https://a.b/c");
        assert_eq!(
            rewrite_origin("http://127.0.0.1:1/c", Some(&o)),
            "http://127.0.0.1:1/c"
        );
    }

    #[tokio::test]
    async fn the_client_refuses_names_that_resolve_to_loopback() {
        let client = client(&UrlPolicy::default()).unwrap();
        let err = client.get("http://localhost:9/").send().await.unwrap_err();
        assert!(err.is_connect() || err.is_request(), "{err:?}");
    }
}
