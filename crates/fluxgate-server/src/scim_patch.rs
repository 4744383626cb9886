//! SCIM's attribute paths on a resource as JSON: resolving them, comparing (filters), and
//! PATCH's add, replace and remove (RFC 7644 3.5.2), with and without a path, and with value
//! paths (`emails[type eq "work"].value`). Attribute names are case-insensitive; an attribute
//! of an extension schema lives under its URN.

use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, PatchPath, ValFilter};
use scim_v2::models::others::{OperationTarget, PatchOperation};
use serde_json::{Map, Value};

const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:";
/// The extension schemas whose whole object a path may name.
const EXTENSIONS: &[&str] = &[
    "urn:ietf:params:scim:schemas:extension:fluxgate:2.0:User",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
];

/// The extension a path names as a whole (`urn:…:2.0:User`, which parses as attribute `User`
/// of the schema `urn:…:2.0`), if it does.
fn whole_extension(path: &PatchPath) -> Option<&'static str> {
    let PatchPath::Attr(p) = path else {
        return None;
    };
    let full = format!("{}:{}", p.uri.as_deref()?, p.name);
    if p.sub_attr.is_some() {
        return None;
    }
    EXTENSIONS
        .iter()
        .copied()
        .find(|e| e.eq_ignore_ascii_case(&full))
}

/// A SCIM error: status, `scimType`, detail.
#[derive(Debug)]
pub struct ScimError(pub http::StatusCode, pub Option<&'static str>, pub String);

fn bad(kind: &'static str, detail: impl Into<String>) -> ScimError {
    ScimError(http::StatusCode::BAD_REQUEST, Some(kind), detail.into())
}

/// A key of an object, case-insensitively (SCIM attribute names are).
pub fn get_ci<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// The object an attribute path's name lives in: the resource, or an extension's object.
fn container<'a>(doc: &'a Value, p: &AttrPath) -> Option<&'a Map<String, Value>> {
    let o = doc.as_object()?;
    match &p.uri {
        Some(u) if !u.starts_with(CORE) => get_ci(o, u)?.as_object(),
        _ => Some(o),
    }
}

fn container_mut<'a>(
    doc: &'a mut Value,
    p: &AttrPath,
) -> Result<&'a mut Map<String, Value>, ScimError> {
    let o = doc
        .as_object_mut()
        .ok_or_else(|| bad("invalidSyntax", "not an object"))?;
    match &p.uri {
        Some(u) if !u.starts_with(CORE) => {
            let key = o
                .keys()
                .find(|k| k.eq_ignore_ascii_case(u))
                .cloned()
                .unwrap_or_else(|| u.clone());
            let ext = o.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !ext.is_object() {
                *ext = Value::Object(Map::new());
            }
            ext.as_object_mut()
                .ok_or_else(|| bad("invalidSyntax", "not an object"))
        }
        _ => Ok(o),
    }
}

/// The key of `name` in `o` (as stored), or `name` itself when absent.
fn key_of(o: &Map<String, Value>, name: &str) -> String {
    o.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_owned())
}

/// The value an attribute path names (without its sub-attribute).
pub fn resolve<'a>(doc: &'a Value, p: &AttrPath) -> Option<&'a Value> {
    get_ci(container(doc, p)?, &p.name)
}

fn case_exact(p: &AttrPath) -> bool {
    p.name.eq_ignore_ascii_case("id") || p.name.eq_ignore_ascii_case("externalId")
}

/// Compares one scalar with a filter's value.
fn compare(v: &Value, op: &CompareOp, c: &CompValue, exact: bool) -> bool {
    let norm = |s: &str| {
        if exact {
            s.to_owned()
        } else {
            s.to_lowercase()
        }
    };
    match (v, c) {
        (Value::String(s), CompValue::Str(t)) => {
            let (s, t) = (norm(s), norm(t));
            match op {
                CompareOp::Eq => s == t,
                CompareOp::Ne => s != t,
                CompareOp::Co => s.contains(&t),
                CompareOp::Sw => s.starts_with(&t),
                CompareOp::Ew => s.ends_with(&t),
                CompareOp::Gt => s > t,
                CompareOp::Ge => s >= t,
                CompareOp::Lt => s < t,
                CompareOp::Le => s <= t,
            }
        }
        (Value::Bool(b), CompValue::True) => matches!(op, CompareOp::Eq) == *b,
        (Value::Bool(b), CompValue::False) => matches!(op, CompareOp::Eq) != *b,
        (Value::Number(n), CompValue::Number(m)) => {
            let (a, b) = (n.as_f64().unwrap_or(0.0), m.as_f64().unwrap_or(0.0));
            match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Gt => a > b,
                CompareOp::Ge => a >= b,
                CompareOp::Lt => a < b,
                CompareOp::Le => a <= b,
                _ => false,
            }
        }
        (Value::Null, CompValue::Null) => matches!(op, CompareOp::Eq),
        (_, CompValue::Null) => matches!(op, CompareOp::Ne),
        _ => matches!(op, CompareOp::Ne),
    }
}

/// The scalars a path names: a value; each element of a multi-valued one (its `value`, or its
/// sub-attribute); a complex one's sub-attribute.
fn scalars<'a>(v: &'a Value, sub: Option<&str>) -> Vec<&'a Value> {
    let pick = |x: &'a Value| -> Option<&'a Value> {
        match (x, sub) {
            (Value::Object(o), Some(s)) => get_ci(o, s),
            (Value::Object(o), None) => get_ci(o, "value"),
            (other, None) => Some(other),
            _ => None,
        }
    };
    match v {
        Value::Array(items) => items.iter().filter_map(pick).collect(),
        other => pick(other).into_iter().collect(),
    }
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Whether resource (or element) `doc` satisfies one attribute expression.
pub fn attr_matches(a: &AttrExp, doc: &Value) -> bool {
    match a {
        AttrExp::Present(p) => resolve(doc, p)
            .map(|v| scalars(v, p.sub_attr.as_deref()))
            .is_some_and(|xs| xs.into_iter().any(present)),
        AttrExp::Comparison(p, op, c) => {
            let values = resolve(doc, p)
                .map(|v| scalars(v, p.sub_attr.as_deref()))
                .unwrap_or_default();
            if matches!(op, CompareOp::Ne) {
                let eq = CompareOp::Eq;
                !values.iter().any(|v| compare(v, &eq, c, case_exact(p)))
            } else {
                values.iter().any(|v| compare(v, op, c, case_exact(p)))
            }
        }
    }
}

/// Whether one element of a multi-valued attribute satisfies a value filter.
pub fn val_matches(f: &ValFilter, item: &Value) -> bool {
    match f {
        ValFilter::Attr(a) => attr_matches(a, item),
        ValFilter::Not(x) => !val_matches(x, item),
        ValFilter::And(xs) => xs.iter().all(|x| val_matches(x, item)),
        ValFilter::Or(xs) => xs.iter().any(|x| val_matches(x, item)),
    }
}

/// The sub-attributes a value filter pins with `eq` (for an element PATCH adds).
fn pinned(f: &ValFilter, out: &mut Map<String, Value>) {
    match f {
        ValFilter::Attr(AttrExp::Comparison(p, CompareOp::Eq, c)) => {
            let v = match c {
                CompValue::Str(s) => Value::String(s.clone()),
                CompValue::True => Value::Bool(true),
                CompValue::False => Value::Bool(false),
                CompValue::Number(n) => Value::Number(n.clone()),
                CompValue::Null => Value::Null,
            };
            out.insert(p.name.clone(), v);
        }
        ValFilter::And(xs) => xs.iter().for_each(|x| pinned(x, out)),
        _ => {}
    }
}

fn read_only(p: &AttrPath) -> bool {
    p.uri.is_none()
        && ["id", "meta", "schemas"]
            .iter()
            .any(|r| p.name.eq_ignore_ascii_case(r))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Add,
    Replace,
}

/// Applies one PATCH operation to resource `doc`.
pub fn apply(doc: &mut Value, op: PatchOperation) -> Result<(), ScimError> {
    match op {
        PatchOperation::Add(t) => target(doc, t, Mode::Add),
        PatchOperation::Replace(t) => target(doc, t, Mode::Replace),
        PatchOperation::Remove { path, value } => remove(doc, &path, value.as_ref()),
    }
}

fn target(doc: &mut Value, t: OperationTarget, mode: Mode) -> Result<(), ScimError> {
    match t {
        OperationTarget::WithPath { path, value } => {
            let value = value.ok_or_else(|| bad("invalidValue", "the operation needs a value"))?;
            set(doc, &path, value, mode)
        }
        OperationTarget::WithoutPath { value } => {
            for (k, v) in value {
                // An extension's whole object, or an attribute (possibly URN-qualified).
                let is_ext =
                    k.starts_with("urn:") && !k.to_lowercase().starts_with(CORE) && v.is_object();
                if is_ext && k.matches(':').count() >= 5 && !k.contains('.') {
                    if let Value::Object(inner) = v {
                        for (sub, x) in inner {
                            let p = AttrPath {
                                uri: Some(k.clone()),
                                name: sub,
                                sub_attr: None,
                            };
                            set(doc, &PatchPath::Attr(p), x, mode)?;
                        }
                    }
                    continue;
                }
                let path: PatchPath = k.parse().map_err(|e| {
                    bad(
                        "invalidPath",
                        format!("{k:?} is not an attribute path: {e}"),
                    )
                })?;
                set(doc, &path, v, mode)?;
            }
            Ok(())
        }
    }
}

fn set(doc: &mut Value, path: &PatchPath, value: Value, mode: Mode) -> Result<(), ScimError> {
    if let Some(ext) = whole_extension(path) {
        let Value::Object(new) = value else {
            return Err(bad("invalidValue", format!("{ext} takes an object")));
        };
        let o = doc
            .as_object_mut()
            .ok_or_else(|| bad("invalidSyntax", "not an object"))?;
        let key = key_of(o, ext);
        match (mode, o.get_mut(&key)) {
            (Mode::Add, Some(Value::Object(m))) => m.extend(new),
            _ => {
                o.insert(key, Value::Object(new));
            }
        }
        return Ok(());
    }
    match path {
        PatchPath::Attr(p) => {
            if read_only(p) {
                return Err(bad("mutability", format!("{} is read-only", p.name)));
            }
            let o = container_mut(doc, p)?;
            let key = key_of(o, &p.name);
            match &p.sub_attr {
                Some(sub) => {
                    let inner = o.entry(key).or_insert_with(|| Value::Object(Map::new()));
                    if !inner.is_object() {
                        *inner = Value::Object(Map::new());
                    }
                    if let Value::Object(m) = inner {
                        let k = key_of(m, sub);
                        m.insert(k, value);
                    }
                }
                None => match (mode, o.get_mut(&key), value) {
                    (Mode::Add, Some(Value::Array(items)), Value::Array(new)) => {
                        for x in new {
                            if !items.contains(&x) {
                                items.push(x);
                            }
                        }
                    }
                    (Mode::Add, Some(Value::Object(m)), Value::Object(new)) => m.extend(new),
                    (_, _, v) => {
                        o.insert(key, v);
                    }
                },
            }
            Ok(())
        }
        PatchPath::Value(vp) => {
            let p = &vp.attr;
            let o = container_mut(doc, p)?;
            let key = key_of(o, &p.name);
            let items = o.entry(key).or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(items) = items else {
                return Err(bad(
                    "invalidPath",
                    format!("{} is not multi-valued", p.name),
                ));
            };
            let mut hit = false;
            for item in items.iter_mut().filter(|x| val_matches(&vp.filter, x)) {
                hit = true;
                match (&vp.sub_attr, item) {
                    (Some(sub), Value::Object(m)) => {
                        let k = key_of(m, sub);
                        m.insert(k, value.clone());
                    }
                    (None, item) => *item = value.clone(),
                    _ => {}
                }
            }
            if !hit {
                // What the filter pins, and the value: the element Entra ID means to add.
                let mut m = Map::new();
                pinned(&vp.filter, &mut m);
                match (&vp.sub_attr, value) {
                    (Some(sub), v) => {
                        m.insert(sub.clone(), v);
                    }
                    (None, Value::Object(v)) => m.extend(v),
                    (None, _) => return Err(bad("noTarget", "no element matches the filter")),
                }
                items.push(Value::Object(m));
            }
            Ok(())
        }
    }
}

fn remove(doc: &mut Value, path: &PatchPath, value: Option<&Value>) -> Result<(), ScimError> {
    if let Some(ext) = whole_extension(path) {
        if let Some(o) = doc.as_object_mut() {
            let key = key_of(o, ext);
            o.remove(&key);
        }
        return Ok(());
    }
    match path {
        PatchPath::Attr(p) => {
            if read_only(p) {
                return Err(bad("mutability", format!("{} is read-only", p.name)));
            }
            let o = container_mut(doc, p)?;
            let key = key_of(o, &p.name);
            match (&p.sub_attr, value, o.get_mut(&key)) {
                (Some(sub), _, Some(Value::Object(m))) => {
                    let k = key_of(m, sub);
                    m.remove(&k);
                }
                // Members (or other values) removed by a list of values.
                (None, Some(Value::Array(gone)), Some(Value::Array(items))) => {
                    let ids: Vec<&Value> =
                        gone.iter().map(|g| g.get("value").unwrap_or(g)).collect();
                    items.retain(|x| !ids.contains(&x.get("value").unwrap_or(x)));
                }
                (None, _, _) => {
                    o.remove(&key);
                }
                _ => {}
            }
            Ok(())
        }
        PatchPath::Value(vp) => {
            let o = container_mut(doc, &vp.attr)?;
            let key = key_of(o, &vp.attr.name);
            if let Some(Value::Array(items)) = o.get_mut(&key) {
                match &vp.sub_attr {
                    None => items.retain(|x| !val_matches(&vp.filter, x)),
                    Some(sub) => {
                        for item in items.iter_mut().filter(|x| val_matches(&vp.filter, x)) {
                            if let Value::Object(m) = item {
                                let k = key_of(m, sub);
                                m.remove(&k);
                            }
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(v: Value) -> PatchOperation {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_forms_okta_and_entra_send() {
        let mut doc = json!({
            "userName": "ada@example.com",
            "active": true,
            "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
        });
        // Okta deactivates with a path-less replace; Entra ID the same, capitalised.
        apply(
            &mut doc,
            op(json!({"op": "replace", "value": {"active": false}})),
        )
        .unwrap();
        assert_eq!(doc["active"], false);
        apply(
            &mut doc,
            op(json!({"op": "Replace", "path": "active", "value": true})),
        )
        .unwrap();
        assert_eq!(doc["active"], true);
        // Entra ID: a value path with a sub-attribute, matched and not.
        apply(&mut doc, op(json!({"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ada@new.example"}))).unwrap();
        assert_eq!(doc["emails"][0]["value"], "ada@new.example");
        apply(&mut doc, op(json!({"op": "Add", "path": "emails[type eq \"home\"].value", "value": "ada@home.example"}))).unwrap();
        assert_eq!(
            doc["emails"][1],
            json!({"type": "home", "value": "ada@home.example"})
        );
        apply(
            &mut doc,
            op(json!({"op": "remove", "path": "emails[type eq \"home\"]"})),
        )
        .unwrap();
        assert_eq!(doc["emails"].as_array().unwrap().len(), 1);
        // Dotted and URN-qualified names without a path.
        apply(&mut doc, op(json!({"op": "add", "value": {"name.givenName": "Ada", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Eng"}}))).unwrap();
        assert_eq!(doc["name"]["givenName"], "Ada");
        assert_eq!(
            doc["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
            "Eng"
        );
        // Read-only attributes stay.
        assert!(
            apply(
                &mut doc,
                op(json!({"op": "replace", "path": "id", "value": "x"}))
            )
            .is_err()
        );
    }

    #[test]
    fn filters_compare_case_insensitively_but_ids() {
        let doc = json!({"id": "AbC", "userName": "Ada", "emails": [{"value": "ada@example.com"}], "active": true});
        let f = |s: &str| {
            let f: scim_v2::filter::Filter = s.parse().unwrap();
            match f {
                scim_v2::filter::Filter::Attr(a) => attr_matches(&a, &doc),
                _ => unreachable!(),
            }
        };
        assert!(f("userName eq \"ada\""));
        assert!(f("emails co \"example\""));
        assert!(f("emails.value sw \"ADA\""));
        assert!(f("active eq true"));
        assert!(!f("id eq \"abc\""));
        assert!(f("id eq \"AbC\""));
        assert!(f("userName ne \"bob\""));
        assert!(f("emails pr"));
        assert!(!f("externalId pr"));
    }
}
