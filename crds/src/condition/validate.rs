//! Validation of a condition tree: operands fit the operator and the field, regexes compile, CIDRs parse.

use ipnet::IpNet;

use super::{Condition, ConditionField, ConditionOp, ConditionRule, ConditionValue, FieldType, MAX_CONDITION_DEPTH};
use crate::validation::{Errors, item, join};

/// Largest compiled regex accepted in a condition (the routing engine holds every one in memory).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(crate) fn validate_condition(errs: &mut Errors, path: &str, condition: &Condition) {
    walk(errs, path, condition, 1);
}

fn walk(errs: &mut Errors, path: &str, condition: &Condition, depth: usize) {
    if depth > MAX_CONDITION_DEPTH {
        errs.add(path, format!("conditions nest too deep: at most {MAX_CONDITION_DEPTH} levels"));
        return;
    }
    match condition {
        Condition::All(children) => {
            let at = join(path, "all");
            for (i, child) in children.iter().enumerate() {
                walk(errs, &item(&at, i), child, depth + 1);
            }
        }
        Condition::Any(children) => {
            let at = join(path, "any");
            if children.is_empty() {
                errs.add(&at, "an empty `any` never matches: add a condition or remove it");
            }
            for (i, child) in children.iter().enumerate() {
                walk(errs, &item(&at, i), child, depth + 1);
            }
        }
        Condition::Not(child) => walk(errs, &join(path, "not"), child, depth + 1),
        Condition::Rule(rule) => validate_rule(errs, path, rule),
    }
}

fn validate_rule(errs: &mut Errors, path: &str, rule: &ConditionRule) {
    let field = match rule.parsed_field() {
        Ok(field) => Some(field),
        Err(message) => {
            errs.add(join(path, "field"), message);
            None
        }
    };
    let op = rule.op;
    let value_path = join(path, "value");
    let values_path = join(path, "values");

    // Which operands the operator takes.
    if op.takes_nothing() {
        if rule.value.is_some() || rule.values.is_some() {
            errs.add(&value_path, format!("`{op}` takes no value: remove `value`/`values`"));
        }
        return;
    }
    if op.takes_list() {
        if rule.value.is_some() {
            errs.add(&value_path, format!("`{op}` compares with a list: put the operands in `values`"));
        }
        match &rule.values {
            None => errs.add(&values_path, format!("`{op}` needs `values`, e.g. [\"DE\", \"AT\"]")),
            Some(list) if list.is_empty() => errs.add(&values_path, format!("`{op}` needs at least one value")),
            Some(_) => {}
        }
    } else if op == ConditionOp::Cidr {
        match (&rule.value, &rule.values) {
            (None, None) => errs.add(&value_path, "`cidr` needs `value` (e.g. \"10.0.0.0/8\") or `values`"),
            (Some(_), Some(_)) => errs.add(&values_path, "give `value` or `values`, not both"),
            (_, Some(list)) if list.is_empty() => errs.add(&values_path, "`cidr` needs at least one CIDR"),
            _ => {}
        }
    } else {
        if rule.values.is_some() {
            errs.add(&values_path, format!("`{op}` compares with one value: use `value` (or `in` for a list)"));
        }
        if rule.value.is_none() {
            errs.add(&value_path, format!("`{op}` needs `value`"));
        }
    }

    // Each operand must suit the operator and the field.
    let operands = rule
        .value
        .iter()
        .map(|v| (value_path.clone(), v))
        .chain(rule.values.iter().flatten().enumerate().map(|(i, v)| (item(&values_path, i), v)));
    let field_type = field.as_ref().map(ConditionField::field_type);
    if let (Some(field), Some(kind)) = (&field, field_type) {
        if op.is_numeric() && !matches!(kind, FieldType::Number | FieldType::Any) {
            errs.add(join(path, "op"), format!("`{op}` compares numbers; `{field}` is not a number"));
        }
        if op == ConditionOp::Cidr && !matches!(kind, FieldType::Ip | FieldType::Any) {
            errs.add(join(path, "op"), format!("`cidr` compares IP addresses; use it with `ip`, not `{field}`"));
        }
    }
    for (at, operand) in operands {
        if let Some(message) = operand_problem(op, field_type, operand) {
            errs.add(at, message);
        } else if field == Some(ConditionField::Hour) && operand.as_f64().is_some_and(|h| !(0.0..=23.0).contains(&h)) {
            errs.add(at, format!("`{}` is not an hour: hours run from 0 to 23", operand.as_text()));
        }
    }
}

fn operand_problem(op: ConditionOp, field: Option<FieldType>, value: &ConditionValue) -> Option<String> {
    let text = value.as_text();
    match op {
        ConditionOp::Regex => {
            let ConditionValue::Text(pattern) = value else {
                return Some("a regex is a string".to_string());
            };
            return regex::RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .err()
                .map(|e| format!("the regex does not compile: {}", one_line(&e.to_string())));
        }
        ConditionOp::Cidr => {
            let ok = text.parse::<IpNet>().is_ok() || text.parse::<std::net::IpAddr>().is_ok();
            return (!ok).then(|| format!("`{text}` is not a CIDR or IP address, e.g. 10.0.0.0/8 or 2001:db8::/32"));
        }
        _ if op.is_numeric() => {
            return value.as_f64().is_none().then(|| format!("`{text}` is not a number"));
        }
        ConditionOp::Contains | ConditionOp::NotContains | ConditionOp::StartsWith | ConditionOp::EndsWith => {
            return text.is_empty().then(|| format!("`{op}` with an empty value matches everything"));
        }
        _ => {}
    }
    // eq, ne, in, notIn: the value must be one the field can take.
    match field? {
        FieldType::Bool => value.as_bool().is_none().then(|| format!("`{text}` is not true or false")),
        FieldType::Number => value.as_f64().is_none().then(|| format!("`{text}` is not a number")),
        FieldType::Weekday => (!crate::schedule::Weekday::ALL.iter().any(|d| d.as_str() == text))
            .then(|| format!("`{text}` is not a day: use mon, tue, wed, thu, fri, sat or sun")),
        FieldType::DeviceType => (!["desktop", "mobile", "tablet"].contains(&text.as_ref()))
            .then(|| format!("`{text}` is not a device type: use desktop, mobile or tablet")),
        FieldType::Text | FieldType::Ip | FieldType::Any => None,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
