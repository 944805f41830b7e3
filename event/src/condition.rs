//! Rules for condition trees: small enough to evaluate on every activity, and only filters
//! that make sense for their metric.

use http_api::events::{Condition, Leaf, LeafFilter, Metric};
use http_api::text;
use service_kit::FieldError;

pub const MAX_DEPTH: usize = http_api::events::MAX_CONDITION_DEPTH;
pub const MAX_LEAVES: usize = 20;
pub const MAX_CHILDREN: usize = 10;
pub const MAX_VALUE: u32 = 1_000_000;
/// The longest quest id or item code, in characters.
pub const MAX_CODE: usize = 64;

/// Every problem with `condition`, each naming where it is (`condition.all[1].filter`).
pub fn validate(condition: &Condition) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut leaves = 0;
    walk(condition, "condition", 1, &mut leaves, &mut errors);
    if leaves > MAX_LEAVES {
        errors.push(FieldError::new(
            "condition",
            format!("has {leaves} leaves; at most {MAX_LEAVES}"),
        ));
    }
    errors
}

fn walk(
    node: &Condition,
    path: &str,
    depth: usize,
    leaves: &mut usize,
    errors: &mut Vec<FieldError>,
) {
    if depth > MAX_DEPTH {
        errors.push(FieldError::new(
            path,
            format!("nests deeper than {MAX_DEPTH} levels"),
        ));
        return;
    }
    let (kind, children) = match node {
        Condition::All { all } => ("all", all),
        Condition::Any { any } => ("any", any),
        Condition::Leaf(leaf) => {
            *leaves += 1;
            leaf_errors(leaf, path, errors);
            return;
        }
    };
    if children.is_empty() || children.len() > MAX_CHILDREN {
        errors.push(FieldError::new(
            format!("{path}.{kind}"),
            format!("needs 1 to {MAX_CHILDREN} conditions"),
        ));
    }
    for (i, child) in children.iter().enumerate() {
        walk(
            child,
            &format!("{path}.{kind}[{i}]"),
            depth + 1,
            leaves,
            errors,
        );
    }
}

fn leaf_errors(leaf: &Leaf, path: &str, errors: &mut Vec<FieldError>) {
    if leaf.op != ">=" {
        errors.push(FieldError::new(
            format!("{path}.op"),
            "only \">=\" is supported",
        ));
    }
    if !(1..=MAX_VALUE).contains(&leaf.value) {
        errors.push(FieldError::new(
            format!("{path}.value"),
            format!("must be 1 to {MAX_VALUE}"),
        ));
    }
    let Some(filter) = &leaf.filter else {
        return;
    };
    let allowed = match leaf.metric {
        Metric::QuestCompleted => (true, false),
        Metric::ItemAcquired | Metric::ItemUsed => (false, true),
        Metric::LoginDays | Metric::LoginStreak | Metric::Level => (false, false),
    };
    let LeafFilter {
        quest_id,
        item_code,
    } = filter;
    for (name, value, ok) in [
        ("questId", quest_id, allowed.0),
        ("itemCode", item_code, allowed.1),
    ] {
        match value {
            Some(_) if !ok => errors.push(FieldError::new(
                format!("{path}.filter.{name}"),
                format!("does not apply to {:?}", leaf.metric),
            )),
            Some(v) if !text::is_visible_text(v, MAX_CODE) => errors.push(FieldError::new(
                format!("{path}.filter.{name}"),
                "must be 1 to 64 characters, not all blank, without control characters",
            )),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Condition {
        serde_json::from_value(value).unwrap()
    }

    fn fields(condition: serde_json::Value) -> Vec<String> {
        validate(&parse(condition))
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_sensible_tree_passes() {
        let tree = json!({ "all": [
            { "metric": "LOGIN_DAYS", "op": ">=", "value": 3 },
            { "any": [
                { "metric": "QUEST_COMPLETED", "op": ">=", "value": 1, "filter": { "questId": "q1" } },
                { "metric": "ITEM_USED", "op": ">=", "value": 5, "filter": { "itemCode": "potion" } }
            ]}
        ]});
        assert!(fields(tree).is_empty());
    }

    #[test]
    fn bad_leaves_are_named_by_path() {
        let tree = json!({ "all": [
            { "metric": "LEVEL", "op": ">", "value": 0, "filter": { "questId": "q" } },
        ]});
        assert_eq!(
            fields(tree),
            [
                "condition.all[0].op",
                "condition.all[0].value",
                "condition.all[0].filter.questId"
            ]
        );
    }

    #[test]
    fn depth_size_and_empty_groups_are_limited() {
        let leaf = json!({ "metric": "LEVEL", "op": ">=", "value": 2 });
        let deep = json!({ "all": [{ "all": [{ "all": [{ "all": [leaf] }] }] }] });
        assert_eq!(fields(deep), ["condition.all[0].all[0].all[0].all[0]"]);
        let wide = json!({ "any": [
            { "all": vec![leaf.clone(); 10] },
            { "all": vec![leaf.clone(); 10] },
            { "all": [leaf] }
        ]});
        assert_eq!(fields(wide), ["condition"]);
        assert_eq!(fields(json!({ "any": [] })), ["condition.any"]);
    }

    #[test]
    fn unknown_metrics_and_fields_do_not_parse() {
        assert!(
            serde_json::from_value::<Condition>(
                json!({ "metric": "GOLD", "op": ">=", "value": 1 })
            )
            .is_err()
        );
        assert!(
            serde_json::from_value::<Condition>(
                json!({ "metric": "LEVEL", "op": ">=", "value": 1, "x": 1 })
            )
            .is_err()
        );
    }
}
