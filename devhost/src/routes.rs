//! Route matching as the HTTP API does it: path templates with `{param}` and greedy
//! `{param+}` segments, the most specific route winning (a static segment beats a
//! parameter, a parameter beats a greedy one, a named method beats `ANY`).

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use crate::template::Route;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Static(String),
    Param(String),
    Greedy(String),
}

impl Segment {
    fn rank(&self) -> u8 {
        match self {
            Segment::Static(_) => 0,
            Segment::Param(_) => 1,
            Segment::Greedy(_) => 2,
        }
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    route: Route,
    segments: Vec<Segment>,
}

/// The routes of the HTTP API, ready to match requests.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Compiled>,
}

/// A matched route and its path parameters (percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// The route.
    pub route: &'a Route,
    /// The path parameters by name.
    pub params: BTreeMap<String, String>,
}

fn compile(path: &str) -> Result<Vec<Segment>> {
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) if name.ends_with('+') => {
                if i + 1 != parts.len() {
                    bail!("greedy parameter {{{name}}} must be the last segment of {path}");
                }
                Segment::Greedy(name.trim_end_matches('+').to_owned())
            }
            Some(name) if !name.is_empty() => Segment::Param(name.to_owned()),
            Some(_) => bail!("empty parameter name in {path}"),
            None => Segment::Static((*part).to_owned()),
        };
        out.push(segment);
    }
    Ok(out)
}

/// Decodes `%XX` escapes; invalid escapes and non-UTF-8 results stay as they were.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl RouteTable {
    /// Compiles `routes`; two routes with the same method and path are an error.
    pub fn new(routes: Vec<Route>) -> Result<Self> {
        let mut compiled: Vec<Compiled> = Vec::with_capacity(routes.len());
        for route in routes {
            let segments = compile(&route.path)?;
            if let Some(dup) = compiled
                .iter()
                .find(|c| c.route.method == route.method && same_shape(&c.segments, &segments))
            {
                bail!(
                    "route {} is declared by both {}.{} and {}.{}",
                    route.route_key(),
                    dup.route.function,
                    dup.route.event,
                    route.function,
                    route.event
                );
            }
            compiled.push(Compiled { route, segments });
        }
        Ok(Self { routes: compiled })
    }

    /// Every route.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().map(|c| &c.route)
    }

    /// The most specific route matching `method` and the raw `path`.
    pub fn find(&self, method: &str, path: &str) -> Option<RouteMatch<'_>> {
        if !path.starts_with('/') {
            return None;
        }
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        let mut best: Option<(Vec<u8>, u8, RouteMatch<'_>)> = None;
        for c in &self.routes {
            let method_rank = if c.route.method == method {
                0
            } else if c.route.method == "ANY" {
                1
            } else {
                continue;
            };
            let Some(params) = match_segments(&c.segments, &parts) else {
                continue;
            };
            let ranks: Vec<u8> = c.segments.iter().map(Segment::rank).collect();
            let better = match &best {
                None => true,
                Some((r, m, _)) => (&ranks, method_rank) < (r, *m),
            };
            if better {
                best = Some((
                    ranks,
                    method_rank,
                    RouteMatch {
                        route: &c.route,
                        params,
                    },
                ));
            }
        }
        best.map(|(_, _, m)| m)
    }
}

/// Whether two path templates match the same paths (parameter names aside).
fn same_shape(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Segment::Static(x), Segment::Static(y)) => x == y,
            (Segment::Param(_), Segment::Param(_)) | (Segment::Greedy(_), Segment::Greedy(_)) => {
                true
            }
            _ => false,
        })
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    for (i, segment) in segments.iter().enumerate() {
        match segment {
            Segment::Static(s) => {
                if parts.get(i) != Some(&s.as_str()) {
                    return None;
                }
            }
            Segment::Param(name) => {
                let part = parts.get(i).filter(|p| !p.is_empty())?;
                params.insert(name.clone(), percent_decode(part));
            }
            Segment::Greedy(name) => {
                let rest = parts
                    .get(i..)
                    .filter(|r| !r.is_empty() && !r.iter().all(|p| p.is_empty()))?;
                params.insert(name.clone(), percent_decode(&rest.join("/")));
                return Some(params);
            }
        }
    }
    (parts.len() == segments.len()).then_some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> Route {
        Route {
            function: "F".into(),
            event: format!("{method} {path}"),
            method: method.into(),
            path: path.into(),
            api: None,
            authorizer: None,
            scopes: vec![],
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route("GET", "/v1/connections"),
            route("POST", "/v1/connections"),
            route("GET", "/v1/connections/{id}"),
            route("POST", "/v1/connections/test"),
            route("POST", "/v1/connections/{id}/test"),
            route("ANY", "/v1/files/{path+}"),
            route("GET", "/v1/files/{path+}"),
        ])
        .unwrap()
    }

    #[test]
    fn a_static_segment_beats_a_parameter() {
        let t = table();
        let m = t.find("POST", "/v1/connections/test").unwrap();
        assert_eq!(m.route.path, "/v1/connections/test");
        assert!(m.params.is_empty());
        let m = t.find("POST", "/v1/connections/abc/test").unwrap();
        assert_eq!(m.route.path, "/v1/connections/{id}/test");
        assert_eq!(m.params["id"], "abc");
        let m = t.find("GET", "/v1/connections/test").unwrap();
        assert_eq!(m.route.path, "/v1/connections/{id}");
        assert_eq!(m.params["id"], "test");
    }

    #[test]
    fn misses_and_methods() {
        let t = table();
        assert!(t.find("DELETE", "/v1/connections").is_none());
        assert!(t.find("GET", "/v1/connections/").is_none());
        assert!(t.find("GET", "/v1/connections/a/b").is_none());
        assert!(t.find("GET", "/v1").is_none());
        assert!(t.find("GET", "/nope").is_none());
        let m = t.find("GET", "/v1/connections/a%20b").unwrap();
        assert_eq!(m.params["id"], "a b");
    }

    #[test]
    fn greedy_parameters_and_any() {
        let t = table();
        let m = t.find("GET", "/v1/files/a/b/c").unwrap();
        assert_eq!(m.route.method, "GET");
        assert_eq!(m.params["path"], "a/b/c");
        let m = t.find("PUT", "/v1/files/a").unwrap();
        assert_eq!(m.route.method, "ANY");
        assert!(t.find("PUT", "/v1/files").is_none());
    }

    #[test]
    fn duplicates_are_refused() {
        let err =
            RouteTable::new(vec![route("GET", "/a/{x}"), route("GET", "/a/{y}")]).unwrap_err();
        assert!(err.to_string().contains("GET /a/{y}"), "{err}");
    }
}
