//! Stream conditions compiled once per snapshot ([`CompiledCondition::compile`]) and evaluated per click
//! ([`CompiledCondition::matches`]).
//!
//! Compiling does all the work that doesn't depend on the click: regexes are built, CIDRs parsed, `in`
//! lists become sets, numbers become decimals, and operands of case-insensitive fields are folded.
//!
//! **Case.** `country, region, city, deviceType, os, browser, language, isp, currency, dayOfWeek` compare
//! case-insensitively (Unicode lowercase of both sides, for every operator including `regex`). Everything
//! else — `source, sourceClickId, referrer, userAgent, utm…, sub1…sub10, param:NAME` — compares exactly.
//!
//! **Types.** `asn, hour, trafficbackDepth, cost` are numbers: `eq`/`in` compare values (`0.5` equals
//! `0.50`), and every field works with `gt`/`gte`/`lt`/`lte` when its value reads as a decimal — a value that
//! doesn't (or a missing one) never matches them. `isBot, isUnique` compare with `true`/`false`; `ip`
//! compares addresses (IPv4-mapped IPv6 is read as IPv4) and works with `cidr` (a bare address is a /32 or
//! /128). `param:NAME` compares text exactly, or numerically when the operand is a JSON number.
//! Text operators (`contains`, `startsWith`, `endsWith`, `regex`) see numbers and addresses as text.
//!
//! **Missing values.** A field the click doesn't have (an empty string, no IP, no cost) matches
//! `notExists`, `ne`, `notIn` and `notContains` — each negative operator is exactly the negation of its
//! positive one — and nothing else. `hour`, `dayOfWeek`, `isBot`, `isUnique`, `trafficbackDepth` always
//! exist. An empty `all` matches; an empty `any` never does.

mod eval;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use regex::Regex;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use traffoflex_crds::condition::{FieldType, MAX_CONDITION_DEPTH};
use traffoflex_crds::{Condition, ConditionField, ConditionOp, ConditionRule, ConditionValue};

use super::text::fold;

/// Largest compiled regex (the same limit validation uses).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Lists up to this long are scanned; longer ones are hashed.
const SMALL_SET: usize = 8;

/// A condition tree ready to evaluate.
#[derive(Debug)]
pub struct CompiledCondition(Node);

/// A node of the tree. Every part of it sits behind an `Arc`, so that equal rules and equal subtrees of
/// different conditions are kept once ([`NodeCache`]): streams whose trees differ still tend to repeat their
/// rules (`country in […]`, `isBot eq false`) and whole branches (a template's tree with one rule added), and
/// those are most of a tree's memory.
#[derive(Clone, Debug)]
enum Node {
    All(Arc<[Node]>),
    Any(Arc<[Node]>),
    Not(Arc<Node>),
    Rule(Arc<Rule>),
}

/// Compiled rules and subtrees (not whole trees) by the SHA-256 of their JSON (equal trees serialise equally),
/// each with its height, shared by every condition compiled with the same cache.
#[derive(Default)]
pub struct NodeCache(HashMap<[u8; 32], (Node, usize)>);

#[derive(Debug)]
struct Rule {
    field: ConditionField,
    /// Compare case-insensitively (operands are already folded).
    fold: bool,
    test: Test,
}

#[derive(Debug)]
enum Test {
    /// `exists` (`false`) / `notExists` (`true`).
    Exists {
        negate: bool,
    },
    /// `eq`, `in` and their negations.
    Member {
        set: Members,
        negate: bool,
    },
    /// `contains`, `startsWith`, `endsWith` and negations.
    Text {
        op: TextOp,
        needle: Box<str>,
        negate: bool,
    },
    Regex(Regex),
    Cidr(Box<[IpNet]>),
    Compare {
        op: CmpOp,
        rhs: Decimal,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// The operands of `eq`/`in`, sorted by the kind of value they can equal. Kept small, since a snapshot holds
/// one per rule: texts inline, the rarer numbers, addresses and booleans behind one pointer.
#[derive(Debug, Default)]
struct Members {
    texts: TextSet,
    others: Option<Box<OtherMembers>>,
}

#[derive(Debug, Default)]
struct OtherMembers {
    nums: Box<[Decimal]>,
    ips: Box<[IpAddr]>,
    bools: Box<[bool]>,
}

impl Members {
    fn nums(&self) -> &[Decimal] {
        self.others.as_ref().map_or(&[], |o| &o.nums)
    }

    fn ips(&self) -> &[IpAddr] {
        self.others.as_ref().map_or(&[], |o| &o.ips)
    }

    fn bools(&self) -> &[bool] {
        self.others.as_ref().map_or(&[], |o| &o.bools)
    }
}

#[derive(Debug)]
enum TextSet {
    Small(Box<[Box<str>]>),
    // Boxed: a set's own 48 bytes would make every rule of every snapshot that much bigger.
    #[allow(clippy::box_collection)]
    Large(Box<HashSet<Box<str>>>),
}

impl Default for TextSet {
    fn default() -> Self {
        Self::Small(Box::default())
    }
}

impl TextSet {
    fn new(items: Vec<Box<str>>) -> Self {
        if items.len() <= SMALL_SET {
            Self::Small(items.into())
        } else {
            Self::Large(Box::new(items.into_iter().collect()))
        }
    }

    fn contains(&self, text: &str) -> bool {
        match self {
            Self::Small(items) => items.iter().any(|i| **i == *text),
            Self::Large(set) => set.contains(text),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Small(items) => items.is_empty(),
            Self::Large(set) => set.is_empty(),
        }
    }
}

/// Whether a field compares case-insensitively (see the module docs).
pub fn is_case_insensitive(field: &ConditionField) -> bool {
    use ConditionField as F;
    matches!(
        field,
        F::Country
            | F::Region
            | F::City
            | F::DeviceType
            | F::Os
            | F::Browser
            | F::Language
            | F::Isp
            | F::Currency
            | F::DayOfWeek
    )
}

/// A JSON number or numeric string as an exact decimal (`1e3` too).
pub(crate) fn decimal_of(value: &ConditionValue) -> Option<Decimal> {
    let text = match value {
        ConditionValue::Bool(_) => return None,
        ConditionValue::Number(n) => n.to_string(),
        ConditionValue::Text(s) => s.trim().to_string(),
    };
    Decimal::from_str(&text).ok().or_else(|| Decimal::from_scientific(&text).ok())
}

impl CompiledCondition {
    /// Compiles a condition tree; the message says what is wrong (a stream with a bad tree is skipped).
    pub fn compile(condition: &Condition) -> Result<Self, String> {
        Self::compile_with(condition, &mut NodeCache::default())
    }

    /// Compiles a condition tree, taking rules and subtrees equal to ones compiled before from `cache`.
    pub fn compile_with(condition: &Condition, cache: &mut NodeCache) -> Result<Self, String> {
        compile_node(condition, 1, cache).map(Self)
    }
}

/// The node of `condition`, found at `depth` (the root is 1). Below the root: from `cache` when an equal one
/// was compiled before, else compiled and kept there. Whole trees are neither looked up nor kept: whoever
/// compiles many keeps those (the snapshot builder does, by the same key, so a root's JSON is hashed once), and
/// with conditions that all differ they would be most of the cache.
fn compile_node(condition: &Condition, depth: usize, cache: &mut NodeCache) -> Result<Node, String> {
    let too_deep = || format!("conditions nest deeper than {MAX_CONDITION_DEPTH} levels");
    if depth > MAX_CONDITION_DEPTH {
        return Err(too_deep());
    }
    let key = (depth > 1)
        .then(|| serde_json::to_vec(condition).ok().map(|json| <[u8; 32]>::from(Sha256::digest(&json))))
        .flatten();
    if let Some((node, height)) = key.and_then(|k| cache.0.get(&k)) {
        // The same subtree may sit deeper here than where it was compiled.
        return if depth + height - 1 > MAX_CONDITION_DEPTH { Err(too_deep()) } else { Ok(node.clone()) };
    }
    let node = compile_new(condition, depth, cache)?;
    if let Some(k) = key {
        cache.0.insert(k, (node.clone(), node.height()));
    }
    Ok(node)
}

/// Compiles `condition` itself, its children through [`compile_node`].
fn compile_new(condition: &Condition, depth: usize, cache: &mut NodeCache) -> Result<Node, String> {
    let mut child = |c: &Condition| compile_node(c, depth + 1, cache);
    Ok(match condition {
        Condition::All(children) => Node::All(children.iter().map(&mut child).collect::<Result<_, _>>()?),
        Condition::Any(children) => Node::Any(children.iter().map(&mut child).collect::<Result<_, _>>()?),
        Condition::Not(c) => Node::Not(Arc::new(child(c)?)),
        Condition::Rule(rule) => {
            Node::Rule(Arc::new(compile_rule(rule).map_err(|e| format!("`{}` {}: {e}", rule.field, rule.op))?))
        }
    })
}

impl Node {
    /// Levels from this node down to its deepest rule (a rule is 1).
    fn height(&self) -> usize {
        match self {
            Self::All(children) | Self::Any(children) => 1 + children.iter().map(Node::height).max().unwrap_or(0),
            Self::Not(child) => 1 + child.height(),
            Self::Rule(_) => 1,
        }
    }
}

/// The operands of a rule: `value` and `values` together.
fn operands(rule: &ConditionRule) -> impl Iterator<Item = &ConditionValue> {
    rule.value.iter().chain(rule.values.iter().flatten())
}

fn single(rule: &ConditionRule) -> Result<&ConditionValue, String> {
    let mut all = operands(rule);
    match (all.next(), all.next()) {
        (Some(v), None) => Ok(v),
        (None, _) => Err("needs a `value`".into()),
        (Some(_), Some(_)) => Err("takes one `value`".into()),
    }
}

fn compile_rule(rule: &ConditionRule) -> Result<Rule, String> {
    let field = rule.parsed_field()?;
    let fold_case = is_case_insensitive(&field);
    let kind = field.field_type();
    let norm = |text: &str| -> Box<str> { if fold_case { fold(text).into() } else { text.into() } };
    let test = match rule.op {
        ConditionOp::Exists | ConditionOp::NotExists => Test::Exists { negate: rule.op == ConditionOp::NotExists },
        ConditionOp::Eq | ConditionOp::Ne | ConditionOp::In | ConditionOp::NotIn => {
            if operands(rule).next().is_none() {
                return Err("needs `value` or `values`".into());
            }
            let negate = matches!(rule.op, ConditionOp::Ne | ConditionOp::NotIn);
            Test::Member { set: members(kind, operands(rule), norm)?, negate }
        }
        ConditionOp::Contains | ConditionOp::NotContains | ConditionOp::StartsWith | ConditionOp::EndsWith => {
            let op = match rule.op {
                ConditionOp::StartsWith => TextOp::StartsWith,
                ConditionOp::EndsWith => TextOp::EndsWith,
                _ => TextOp::Contains,
            };
            let needle = norm(&single(rule)?.as_text());
            Test::Text { op, needle, negate: rule.op == ConditionOp::NotContains }
        }
        ConditionOp::Regex => {
            let ConditionValue::Text(pattern) = single(rule)? else { return Err("a regex is a string".into()) };
            let re = regex::RegexBuilder::new(pattern)
                .case_insensitive(fold_case)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| format!("the regex does not compile: {e}"))?;
            Test::Regex(re)
        }
        ConditionOp::Cidr => {
            if !matches!(kind, FieldType::Ip | FieldType::Any) {
                return Err("`cidr` works on `ip` and `param:NAME` only".into());
            }
            let nets = operands(rule).map(parse_net).collect::<Result<Box<[IpNet]>, String>>()?;
            if nets.is_empty() {
                return Err("needs a CIDR".into());
            }
            Test::Cidr(nets)
        }
        ConditionOp::Gt | ConditionOp::Gte | ConditionOp::Lt | ConditionOp::Lte => {
            let v = single(rule)?;
            let rhs = decimal_of(v).ok_or_else(|| format!("`{}` is not a number", v.as_text()))?;
            let op = match rule.op {
                ConditionOp::Gt => CmpOp::Gt,
                ConditionOp::Gte => CmpOp::Gte,
                ConditionOp::Lt => CmpOp::Lt,
                _ => CmpOp::Lte,
            };
            Test::Compare { op, rhs }
        }
    };
    Ok(Rule { field, fold: fold_case, test })
}

fn parse_net(value: &ConditionValue) -> Result<IpNet, String> {
    let text = value.as_text();
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| IpNet::from(ip.to_canonical())))
        .map_err(|_| format!("`{text}` is not a CIDR or IP address"))
}

fn members<'v>(
    kind: FieldType,
    values: impl Iterator<Item = &'v ConditionValue>,
    norm: impl Fn(&str) -> Box<str>,
) -> Result<Members, String> {
    let (mut texts, mut nums, mut ips, mut bools) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in values {
        match kind {
            FieldType::Number => nums.push(decimal_of(v).ok_or_else(|| format!("`{}` is not a number", v.as_text()))?),
            FieldType::Bool => {
                bools.push(v.as_bool().ok_or_else(|| format!("`{}` is not true or false", v.as_text()))?)
            }
            FieldType::Ip => {
                let text = v.as_text();
                let ip = text.trim().parse::<IpAddr>().map_err(|_| format!("`{text}` is not an IP address"))?;
                ips.push(ip.to_canonical());
            }
            FieldType::Any => match v {
                ConditionValue::Number(_) => nums.extend(decimal_of(v)),
                _ => texts.push(norm(&v.as_text())),
            },
            FieldType::Text | FieldType::Weekday | FieldType::DeviceType => texts.push(norm(&v.as_text())),
        }
    }
    let others = (!nums.is_empty() || !ips.is_empty() || !bools.is_empty())
        .then(|| Box::new(OtherMembers { nums: nums.into(), ips: ips.into(), bools: bools.into() }));
    Ok(Members { texts: TextSet::new(texts), others })
}
