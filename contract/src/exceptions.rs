//! Where a published description is stricter than the live API as its provider
//! documents it: each entry relaxes one rule at one place of one operation, and says why
//! and on which documentation page. A violation no entry covers fails the contract test.

use crate::{Rule, Side, Violation};

/// One relaxation of a published description.
#[derive(Debug, Clone, Copy)]
pub struct Exception {
    /// `METHOD /path/template`; a `*` segment matches any one segment.
    pub operation: &'static str,
    /// Request or response.
    pub side: Side,
    /// JSON pointer into the exchange (`/body/…`, `/query/name`); `*` matches one segment.
    pub pointer: &'static str,
    /// The rule relaxed there.
    pub rule: Rule,
    /// Only when the value found has this JSON type (`null`, `object`, `missing`, …).
    pub found: Option<&'static str>,
    /// What is allowed instead, in words.
    pub relaxation: &'static str,
    /// Why the live API differs from the description.
    pub reason: &'static str,
    /// The provider's documentation saying so.
    pub doc: &'static str,
}

impl Exception {
    /// Whether this entry covers `v`.
    pub fn covers(&self, v: &Violation) -> bool {
        self.side == v.side
            && self.rule == v.rule
            && self.found.is_none_or(|f| f == v.found)
            && segments_match(self.operation, &v.operation, ' ')
            && segments_match(self.pointer, &v.pointer, '/')
    }

    /// One line: where, what, why.
    pub fn summary(&self) -> String {
        format!(
            "{} {:?} {} {}{}: {} — {} [{}]",
            self.operation,
            self.side,
            self.pointer,
            self.rule,
            self.found
                .map(|f| format!(" (found {f})"))
                .unwrap_or_default(),
            self.relaxation,
            self.reason,
            self.doc
        )
    }
}

/// `*` in `pattern` matches one segment of `text` (split on `sep` and `/`).
fn segments_match(pattern: &str, text: &str, sep: char) -> bool {
    let p: Vec<&str> = pattern.split([sep, '/']).collect();
    let t: Vec<&str> = text.split([sep, '/']).collect();
    p.len() == t.len() && p.iter().zip(&t).all(|(a, b)| *a == "*" || a == b)
}

/// Every listed exception.
pub const EXCEPTIONS: &[Exception] = &[];

/// The exception table as text, one entry a line (printed by the contract tests).
pub fn table() -> String {
    EXCEPTIONS
        .iter()
        .map(|e| format!("- {}\n", e.summary()))
        .collect()
}
