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
/// documentation, benchmarking, reserved or unique-local. An IPv6 address that
/// carries an IPv4 address (mapped, compatible, SIIT, NAT64, 6to4, Teredo) is public
/// only if every IPv4 address it carries is, since the network may deliver it there.
/// The URL check and the resolver's filter both ask this one function.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Embedded::Carries(first, second) => {
                is_public_v4(first) && second.is_none_or(is_public_v4)
            }
            Embedded::LocalOnly => false,
            Embedded::None => is_public_v6(v6),
        },
    }
}

/// What an IPv6 address says about IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedded {
    /// It stands for one IPv4 address (two for Teredo: server and client).
    Carries(Ipv4Addr, Option<Ipv4Addr>),
    /// A translation prefix whose layout is local to a network (RFC 8215
    /// `64:ff9b:1::/48`): whatever it carries cannot be read, so it is never public.
    LocalOnly,
    /// Plain IPv6.
    None,
}

fn v4_at(s: &[u16; 8], i: usize) -> Ipv4Addr {
    let [a, b] = s[i].to_be_bytes();
    let [c, d] = s[i + 1].to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// The IPv4 addresses an IPv6 address embeds, by the standard layouts.
fn embedded_v4(ip: Ipv6Addr) -> Embedded {
    let s = ip.segments();
    match s {
        // ::a.b.c.d (IPv4-compatible, which also covers :: and ::1) and
        // ::ffff:a.b.c.d (IPv4-mapped).
        [0, 0, 0, 0, 0, 0 | 0xffff, _, _] => Embedded::Carries(v4_at(&s, 6), None),
        // ::ffff:0:a.b.c.d (SIIT, RFC 6145).
        [0, 0, 0, 0, 0xffff, 0, _, _] => Embedded::Carries(v4_at(&s, 6), None),
        // 64:ff9b::/96 (NAT64 well-known prefix, RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Embedded::Carries(v4_at(&s, 6), None),
        // 64:ff9b:1::/48 (NAT64 local-use prefix, RFC 8215).
        [0x64, 0xff9b, 1, ..] => Embedded::LocalOnly,
        // 2002::/16 (6to4, RFC 3056): the IPv4 address follows the prefix.
        [0x2002, ..] => Embedded::Carries(v4_at(&s, 1), None),
        // 2001::/32 (Teredo, RFC 4380): server address, then the client's, inverted.
        [0x2001, 0, ..] => {
            let client = Ipv4Addr::from(!u32::from(v4_at(&s, 6)));
            Embedded::Carries(v4_at(&s, 2), Some(client))
        }
        _ => Embedded::None,
    }
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Only 2000::/3 is allocated as global unicast: everything else (unspecified,
    // loopback, discard-only 100::/64, unique-local fc00::/7, link-local fe80::/10,
    // site-local fec0::/10, multicast ff00::/8, reserved) is not public.
    let global_unicast = (s[0] & 0xe000) == 0x2000;
    // 2001::/23: IETF protocol assignments (benchmarking 2001:2::/48, ORCHID…).
    let protocol = s[0] == 0x2001 && s[1] < 0x0200;
    // 2001:db8::/32 and 3fff::/20: documentation.
    let documentation = (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] & 0xfff0) == 0x3ff0;
    global_unicast && !protocol && !documentation
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        // 0.0.0.0/8: "this network".
        || a == 0
        // 100.64.0.0/10: carrier-grade NAT.
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24: IETF protocol assignments; 192.88.99.0/24: 6to4 relays.
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 88 && c == 99)
        // 198.18.0.0/15: benchmarking.
        || (a == 198 && (b == 18 || b == 19))
        // 240.0.0.0/4: reserved (and broadcast).
        || a >= 240)
}

/// Whether the client may connect to the IP address `ip` under `policy`.
fn may_connect(ip: IpAddr, policy: &UrlPolicy) -> bool {
    is_public(ip) || (policy.allow_loopback_http && ip.is_loopback())
}

/// Resolves host names and drops every address that is not public (unless loopback
/// is allowed for local use), so no DNS answer can steer a request inside.
#[derive(Debug, Clone)]
struct GuardedResolver {
    policy: UrlPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| may_connect(a.ip(), &policy))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} does not resolve to a public address").into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The outbound client: no redirects, bounded time, no proxy taken from the
/// environment, guarded DNS, and IP-literal hosts checked on every send (reqwest
/// connects to literals without asking the resolver). Derefs to the reqwest client to
/// build requests; send them with [`Egress::send`].
#[derive(Debug, Clone)]
pub struct Egress {
    client: reqwest::Client,
    policy: UrlPolicy,
}

/// Why an outbound request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The URL names an IP address the policy forbids; nothing was sent.
    #[error("the host is not a public address")]
    NotPublic,
    /// The request could not be built or the transport failed.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

impl SendError {
    /// Whether the provider did not answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Http(e) if e.is_timeout())
    }

    /// The error without the URL (which may carry credentials in its query).
    pub fn without_url(self) -> Self {
        match self {
            Self::Http(e) => Self::Http(e.without_url()),
            other => other,
        }
    }
}

impl Egress {
    /// Builds the client for `policy`.
    pub fn new(policy: &UrlPolicy) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // HTTP(S)_PROXY in the environment would send tenant URLs through a host
            // this guard never checks.
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("conduit/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { policy: *policy }))
            .build()?;
        Ok(Self {
            client,
            policy: *policy,
        })
    }

    /// Sends `req` unless its host is an IP address the policy forbids.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, SendError> {
        let (client, req) = req.build_split();
        let req = req?;
        let literal = match req.url().host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if literal.is_some_and(|ip| !may_connect(ip, &self.policy)) {
            return Err(SendError::NotPublic);
        }
        Ok(client.execute(req).await?)
    }
}

impl std::ops::Deref for Egress {
    type Target = reqwest::Client;

    fn deref(&self) -> &reqwest::Client {
        &self.client
    }
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

/// A provider answer's `Retry-After` in seconds (1 s to an hour), if it gives one.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| std::time::Duration::from_secs(s.clamp(1, 3600)))
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
            "0.1.2.3",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "224.0.0.1",
            "::",
            "::1",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "2001:10::1",
            // IPv4 embedded in IPv6: the metadata service 169.254.169.254 and loopback.
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::169.254.169.254",
            "::ffff:0:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::808:808",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
            // Teredo: public server 8.8.8.8, client 169.254.169.254 inverted.
            "2001:0:808:808:0:0:5601:5601",
            // Teredo: private server.
            "2001:0:a00:1::f7f7:f7f7",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "104.16.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            // Teredo: server 8.8.8.8, client 1.1.1.1 (inverted: fefe:fefe).
            "2001:0:808:808:0:0:fefe:fefe",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    /// Any IPv4 address in every IPv6 layout that embeds one: the IPv6 address is
    /// public exactly when the IPv4 address is.
    #[test]
    fn embedded_ipv4_decides_for_its_ipv6_address() {
        use proptest::prelude::*;
        let layouts: [fn(u32) -> Ipv6Addr; 6] = [
            |v4| Ipv4Addr::from(v4).to_ipv6_mapped(),
            |v4| Ipv6Addr::from(u128::from(v4)),
            |v4| Ipv6Addr::from((0xffff_u128 << 48) | u128::from(v4)),
            |v4| Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(v4)),
            |v4| Ipv6Addr::from((0x2002_u128 << 112) | (u128::from(v4) << 80) | 1),
            // Teredo with a public server (8.8.8.8): the client decides.
            |v4| {
                Ipv6Addr::from(
                    (0x2001_0000_u128 << 96) | (0x0808_0808_u128 << 64) | u128::from(!v4),
                )
            },
        ];
        let config = ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest!(config.clone(), |(v4 in any::<u32>(), layout in 0..6usize)| {
            let v6 = layouts[layout](v4);
            prop_assert_eq!(
                is_public(IpAddr::V6(v6)),
                is_public(IpAddr::V4(Ipv4Addr::from(v4))),
                "{} carrying {}", v6, Ipv4Addr::from(v4)
            );
            // The URL check agrees with the resolver's filter.
            let url = format!("https://[{v6}]/token");
            prop_assert_eq!(
                validate_tenant_url(&url, &UrlPolicy::default()).is_ok(),
                may_connect(IpAddr::V6(v6), &UrlPolicy::default())
            );
        });
        // Whatever the local-use NAT64 prefix carries is never public.
        proptest!(config, |(low in any::<u64>(), mid in any::<u16>())| {
            let v6 = Ipv6Addr::from((0x0064_ff9b_0001_u128 << 80) | (u128::from(mid) << 64) | u128::from(low));
            prop_assert!(!is_public(IpAddr::V6(v6)));
        });
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
        for embedded in [
            "https://[64:ff9b::a9fe:a9fe]/token",
            "https://[::a9fe:a9fe]/token",
            "https://[::ffff:0:a9fe:a9fe]/token",
            "https://[2002:a9fe:a9fe::]/token",
        ] {
            assert_eq!(
                validate_tenant_url(embedded, &strict),
                Err(UrlError::NotPublic),
                "{embedded}"
            );
        }
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
        let client = Egress::new(&UrlPolicy::default()).unwrap();
        let err = client
            .send(client.get("http://localhost:9/"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SendError::Http(e) if e.is_connect() || e.is_request()),
            "{err:?}"
        );
    }

    /// Runs [`proxy_from_the_environment_is_ignored_child`] in a process of its own,
    /// since it sets proxy variables, which are process-wide.
    #[test]
    fn proxy_from_the_environment_is_ignored() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "egress::tests::proxy_from_the_environment_is_ignored_child",
                "--ignored",
                "--nocapture",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }

    #[tokio::test]
    #[ignore = "run by proxy_from_the_environment_is_ignored in its own process"]
    async fn proxy_from_the_environment_is_ignored_child() {
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        proxy.set_nonblocking(true).unwrap();
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_port = target.local_addr().unwrap().port();
        let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
        // SAFETY: this test runs alone in its own process (see the test above).
        unsafe {
            for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"] {
                std::env::set_var(name, &proxy_url);
            }
            std::env::remove_var("NO_PROXY");
            std::env::remove_var("no_proxy");
        }
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = target.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            socket
                .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let client = Egress::new(&UrlPolicy {
            allow_loopback_http: true,
        })
        .unwrap();
        let resp = client
            .send(client.get(format!("http://127.0.0.1:{target_port}/")))
            .await
            .unwrap();
        assert_eq!(resp.status(), 204, "answered by the target itself");
        server.await.unwrap();
        assert!(proxy.accept().is_err(), "the proxy was contacted");
    }

    #[tokio::test]
    async fn the_client_refuses_ip_literals_at_send_time() {
        let strict = Egress::new(&UrlPolicy::default()).unwrap();
        for url in [
            "https://[64:ff9b::a9fe:a9fe]/token",
            "https://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:9/",
            "https://[::ffff:7f00:1]/",
        ] {
            let err = strict.send(strict.post(url)).await.unwrap_err();
            assert!(matches!(err, SendError::NotPublic), "{url}: {err:?}");
        }
        // Local use reaches loopback (the sandbox) and nothing else inside.
        let local = Egress::new(&UrlPolicy {
            allow_loopback_http: true,
        })
        .unwrap();
        let err = local
            .send(local.get("http://127.0.0.1:9/"))
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Http(_)), "{err:?}");
        let err = local
            .send(local.get("https://10.0.0.1/"))
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::NotPublic), "{err:?}");
    }
}
