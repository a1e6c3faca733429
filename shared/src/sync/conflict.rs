//! Field-level change and conflict detection between the app's record and a CRM's,
//! against the values both had at their last sync (the link's base snapshot).
//!
//! Values are compared in the app's field space (CRM values already mapped and
//! transformed). For each mapped field:
//! - changed on one side only → it flows to the other side (if the field's direction
//!   allows);
//! - changed on both sides to different values → a conflict, which the strategy
//!   settles (`last_write_wins` by record modification time, `crm_wins`, `app_wins`) or
//!   keeps for review (`manual_review`: nothing is written for that field);
//! - changed on both sides to the same value, or on neither → nothing to do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A record's mapped values: field → value (None: empty or absent).
pub type Values = BTreeMap<String, Option<String>>;

/// How a sync config settles a field changed on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The side whose record changed last wins.
    LastWriteWins,
    /// The CRM's value wins.
    CrmWins,
    /// The app's value wins.
    AppWins,
    /// Neither: the conflict is stored for a person to resolve.
    ManualReview,
}

/// Which way a mapped field may flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Both ways.
    Bidirectional,
    /// App → CRM only.
    Push,
    /// CRM → app only.
    Pull,
    /// Not synced.
    None,
}

impl Direction {
    fn push(self) -> bool {
        matches!(self, Self::Bidirectional | Self::Push)
    }
    fn pull(self) -> bool {
        matches!(self, Self::Bidirectional | Self::Pull)
    }
}

/// One side of the comparison.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// Its mapped values.
    pub values: &'a Values,
    /// When its record last changed.
    pub modified_at: OffsetDateTime,
}

/// A field changed on both sides, as stored for review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldConflict {
    /// The app field.
    pub field: String,
    /// The value both had at the last sync.
    pub base: Option<String>,
    /// The app's value now.
    pub app: Option<String>,
    /// The CRM's value now.
    pub crm: Option<String>,
}

/// What to do with one record pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Fields to write to the CRM.
    pub push: Values,
    /// Fields to write to the app.
    pub pull: Values,
    /// Conflicts kept for review (manual_review).
    pub conflicts: Vec<FieldConflict>,
    /// Conflicts the strategy settled.
    pub resolved: usize,
}

impl Plan {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.push.is_empty() && self.pull.is_empty() && self.conflicts.is_empty()
    }
}

fn value<'v>(values: &'v Values, field: &str) -> Option<&'v str> {
    values.get(field).and_then(|v| v.as_deref())
}

/// Compares `app` and `crm` with `base` over `fields` (app field, direction).
pub fn reconcile(
    fields: &[(String, Direction)],
    base: &Values,
    app: Side<'_>,
    crm: Side<'_>,
    strategy: Strategy,
) -> Plan {
    let mut plan = Plan::default();
    for (field, direction) in fields {
        if *direction == Direction::None {
            continue;
        }
        let b = value(base, field);
        let a = value(app.values, field);
        let c = value(crm.values, field);
        let app_changed = a != b;
        let crm_changed = c != b;
        match (app_changed, crm_changed) {
            (false, false) => {}
            (true, false) => {
                if direction.push() {
                    plan.push.insert(field.clone(), a.map(str::to_owned));
                }
            }
            (false, true) => {
                if direction.pull() {
                    plan.pull.insert(field.clone(), c.map(str::to_owned));
                }
            }
            (true, true) if a == c => {}
            (true, true) => {
                // A one-way field has one owner: the side it flows from wins.
                let winner = match (direction, strategy) {
                    (Direction::Push, _) => Some(true),
                    (Direction::Pull, _) => Some(false),
                    (_, Strategy::AppWins) => Some(true),
                    (_, Strategy::CrmWins) => Some(false),
                    (_, Strategy::LastWriteWins) => Some(app.modified_at >= crm.modified_at),
                    (_, Strategy::ManualReview) => None,
                };
                match winner {
                    Some(true) => {
                        plan.push.insert(field.clone(), a.map(str::to_owned));
                        plan.resolved += 1;
                    }
                    Some(false) => {
                        plan.pull.insert(field.clone(), c.map(str::to_owned));
                        plan.resolved += 1;
                    }
                    None => plan.conflicts.push(FieldConflict {
                        field: field.clone(),
                        base: b.map(str::to_owned),
                        app: a.map(str::to_owned),
                        crm: c.map(str::to_owned),
                    }),
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, Option<&str>)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect()
    }

    fn fields(dir: Direction) -> Vec<(String, Direction)> {
        ["email", "phone", "name"]
            .iter()
            .map(|f| ((*f).to_owned(), dir))
            .collect()
    }

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s)
    }

    #[test]
    fn one_sided_changes_flow_and_equal_changes_do_nothing() {
        let base = vals(&[
            ("email", Some("a@x")),
            ("phone", Some("1")),
            ("name", Some("A")),
        ]);
        let app = vals(&[
            ("email", Some("b@x")),
            ("phone", Some("1")),
            ("name", Some("Z")),
        ]);
        let crm = vals(&[("email", Some("a@x")), ("phone", None), ("name", Some("Z"))]);
        let plan = reconcile(
            &fields(Direction::Bidirectional),
            &base,
            Side {
                values: &app,
                modified_at: at(1),
            },
            Side {
                values: &crm,
                modified_at: at(2),
            },
            Strategy::ManualReview,
        );
        assert_eq!(plan.push, vals(&[("email", Some("b@x"))]));
        assert_eq!(
            plan.pull,
            vals(&[("phone", None)]),
            "a cleared field flows too"
        );
        assert!(plan.conflicts.is_empty(), "same change on both sides");
    }

    #[test]
    fn strategies_settle_conflicts() {
        let base = vals(&[("email", Some("a@x"))]);
        let app = vals(&[("email", Some("app@x"))]);
        let crm = vals(&[("email", Some("crm@x"))]);
        let f = fields(Direction::Bidirectional);
        let run = |s, app_at, crm_at| {
            reconcile(
                &f,
                &base,
                Side {
                    values: &app,
                    modified_at: at(app_at),
                },
                Side {
                    values: &crm,
                    modified_at: at(crm_at),
                },
                s,
            )
        };
        assert_eq!(
            run(Strategy::AppWins, 1, 2).push,
            vals(&[("email", Some("app@x"))])
        );
        assert_eq!(
            run(Strategy::CrmWins, 2, 1).pull,
            vals(&[("email", Some("crm@x"))])
        );
        assert_eq!(
            run(Strategy::LastWriteWins, 1, 2).pull,
            vals(&[("email", Some("crm@x"))])
        );
        assert_eq!(
            run(Strategy::LastWriteWins, 3, 2).push,
            vals(&[("email", Some("app@x"))])
        );
        assert_eq!(run(Strategy::LastWriteWins, 3, 2).resolved, 1);
        let manual = run(Strategy::ManualReview, 1, 2);
        assert!(manual.push.is_empty() && manual.pull.is_empty());
        assert_eq!(
            manual.conflicts,
            [FieldConflict {
                field: "email".into(),
                base: Some("a@x".into()),
                app: Some("app@x".into()),
                crm: Some("crm@x".into()),
            }]
        );
    }

    #[test]
    fn directions_limit_the_flow() {
        let base = vals(&[("email", Some("a")), ("phone", Some("1"))]);
        let app = vals(&[("email", Some("b")), ("phone", Some("1"))]);
        let crm = vals(&[("email", Some("a")), ("phone", Some("2"))]);
        let side = |v| Side {
            values: v,
            modified_at: at(0),
        };
        let push_only = reconcile(
            &fields(Direction::Push),
            &base,
            side(&app),
            side(&crm),
            Strategy::CrmWins,
        );
        assert_eq!(push_only.push, vals(&[("email", Some("b"))]));
        assert!(push_only.pull.is_empty());
        let none = reconcile(
            &fields(Direction::None),
            &base,
            side(&app),
            side(&crm),
            Strategy::CrmWins,
        );
        assert!(none.is_empty());
        // A pull-only field changed on both sides: the CRM owns it, whatever the strategy.
        let both = vals(&[("email", Some("c")), ("phone", Some("1"))]);
        let pulled = reconcile(
            &fields(Direction::Pull),
            &base,
            side(&app),
            side(&both),
            Strategy::AppWins,
        );
        assert_eq!(pulled.pull, vals(&[("email", Some("c"))]));
    }
}
