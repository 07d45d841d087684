//! A parameter form from a release's JSON schema (SlapOS's `software.cfg.json`: each
//! software type names its `request` schema, a JSON schema object whose `properties`
//! are the instance parameters), and the parameters back from the submitted form.
//! Only the flat shapes a form can carry are generated (string, number, integer,
//! boolean, enum); a schema with anything else falls back to raw parameters.

use std::collections::BTreeMap;

/// The kind of control a parameter gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Text,
    Integer,
    Number,
    Bool,
    Choice(Vec<String>),
}

/// One parameter of the form.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub title: String,
    pub description: Option<String>,
    pub kind: Kind,
    pub default: Option<String>,
    pub required: bool,
}

/// Longest schema-driven form: a schema with more properties is shown raw.
const MAX_FIELDS: usize = 200;

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The form's fields, or None when the schema has shapes a flat form cannot carry.
pub fn fields(schema: &serde_json::Value) -> Option<Vec<Field>> {
    let props = schema.get("properties")?.as_object()?;
    if props.len() > MAX_FIELDS {
        return None;
    }
    let required: Vec<&str> = schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, p) in props {
        let kind = if let Some(choices) = p.get("enum").and_then(|e| e.as_array()) {
            Kind::Choice(choices.iter().filter_map(scalar).collect())
        } else {
            match p.get("type").and_then(|t| t.as_str()).unwrap_or("string") {
                "string" => Kind::Text,
                "integer" => Kind::Integer,
                "number" => Kind::Number,
                "boolean" => Kind::Bool,
                _ => return None,
            }
        };
        out.push(Field {
            name: name.clone(),
            title: p
                .get("title")
                .and_then(|t| t.as_str())
                .unwrap_or(name)
                .to_owned(),
            description: p
                .get("description")
                .and_then(|t| t.as_str())
                .map(str::to_owned),
            kind,
            default: p.get("default").and_then(scalar),
            required: required.contains(&name.as_str()),
        });
    }
    Some(out)
}

/// The form field that carries parameter `name`.
pub fn input_name(name: &str) -> String {
    format!("p.{name}")
}

/// The parameters from a submitted form: each field's text, checked against its kind;
/// empty optional fields left out.
pub fn parameters(
    fields: &[Field],
    form: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for f in fields {
        let raw = form
            .get(&input_name(&f.name))
            .map(|s| s.trim())
            .unwrap_or("");
        let value = match &f.kind {
            Kind::Bool => Some(if raw.is_empty() { "false" } else { "true" }.to_owned()),
            _ if raw.is_empty() => {
                if f.required {
                    return Err(format!("{} is required", f.title));
                }
                None
            }
            Kind::Text => Some(raw.to_owned()),
            Kind::Integer => {
                raw.parse::<i64>()
                    .map_err(|_| format!("{} must be a whole number", f.title))?;
                Some(raw.to_owned())
            }
            Kind::Number => {
                let n = raw
                    .parse::<f64>()
                    .map_err(|_| format!("{} must be a number", f.title))?;
                if !n.is_finite() {
                    return Err(format!("{} must be a number", f.title));
                }
                Some(raw.to_owned())
            }
            Kind::Choice(choices) => {
                if !choices.iter().any(|c| c == raw) {
                    return Err(format!("{} must be one of the choices", f.title));
                }
                Some(raw.to_owned())
            }
        };
        if let Some(v) = value {
            out.insert(f.name.clone(), v);
        }
    }
    Ok(out)
}

/// Raw parameters: a JSON object whose values are strings, numbers or booleans (kept as
/// their text), or empty for none.
pub fn raw_parameters(text: &str) -> Result<BTreeMap<String, String>, String> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("parameters are not JSON: {e}"))?;
    let obj = v.as_object().ok_or("parameters must be a JSON object")?;
    obj.iter()
        .map(|(k, v)| {
            scalar(v)
                .map(|s| (k.clone(), s))
                .ok_or_else(|| format!("parameter {k}: a string, number or boolean"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_from_a_schema_and_parameters_back() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"title": "Name", "type": "string", "default": "world"},
                "count": {"type": "integer"},
                "color": {"enum": ["red", "blue"]},
                "loud": {"type": "boolean"}
            }
        });
        let f = fields(&schema).unwrap();
        assert_eq!(f.len(), 4);
        let name = f.iter().find(|f| f.name == "name").unwrap();
        assert!(name.required);
        assert_eq!(name.default.as_deref(), Some("world"));
        let form: BTreeMap<String, String> =
            [("p.name", "<b>x</b>"), ("p.count", "3"), ("p.color", "red")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let p = parameters(&f, &form).unwrap();
        assert_eq!(p["name"], "<b>x</b>");
        assert_eq!(p["loud"], "false");
        let mut bad = form.clone();
        bad.insert("p.count".into(), "three".into());
        assert!(parameters(&f, &bad).is_err());
        bad.insert("p.count".into(), "3".into());
        bad.insert("p.color".into(), "green".into());
        assert!(parameters(&f, &bad).is_err());
        bad.remove("p.name");
        assert!(parameters(&f, &bad).is_err());
        // nested shapes: no generated form
        assert!(fields(&serde_json::json!({"properties": {"x": {"type": "object"}}})).is_none());
    }

    #[test]
    fn raw_parameters_are_a_flat_object() {
        assert_eq!(raw_parameters(" ").unwrap().len(), 0);
        let p = raw_parameters(r#"{"a": "1", "b": 2, "c": true}"#).unwrap();
        assert_eq!(p["b"], "2");
        assert!(raw_parameters("[1]").is_err());
        assert!(raw_parameters(r#"{"a": {"b": 1}}"#).is_err());
    }
}
