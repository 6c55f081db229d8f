//! Reading a postback request: its parameters from the query and a JSON or form body, and the redacted
//! one-line description the postback log keeps (secret values replaced by `***`). Pure.

use serde_json::Value;

use super::normalize::MAX_ID_LEN;

/// Parameters whose values never reach a log.
pub const SECRET_PARAMS: &[&str] = &["token", "secret", "key", "signature", "sig", "password", "api_key", "apikey"];

/// Why the request's parameters could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("the body is not a JSON object of plain values: {0}")]
    Json(String),
    #[error("content type `{0}` is not supported: send JSON or a form")]
    MediaType(String),
}

/// The parameters of a request: the body's first (JSON object or form), then the query's.
pub fn parse_params(
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Vec<(String, String)>, ParamsError> {
    let mut out = Vec::new();
    if !body.is_empty() {
        let media = content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "application/json" => json_params(body, &mut out)?,
            "" | "application/x-www-form-urlencoded" => {
                out.extend(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())));
            }
            _ if media.ends_with("+json") => json_params(body, &mut out)?,
            other => return Err(ParamsError::MediaType(other.chars().take(100).collect())),
        }
    }
    out.extend(form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())));
    Ok(out)
}

fn json_params(body: &[u8], out: &mut Vec<(String, String)>) -> Result<(), ParamsError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ParamsError::Json(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(ParamsError::Json("expected an object like {\"clickid\": \"…\"}".into()));
    };
    for (k, v) in map {
        let text = match v {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(ParamsError::Json(format!("`{}` is a list or an object", excerpt(&k))));
            }
        };
        out.push((k, text));
    }
    Ok(())
}

/// `METHOD path?k=v&…` with the values of secret parameters (and `extra`, the network's token parameter)
/// replaced by `***`, each value cut to [`MAX_ID_LEN`] bytes.
pub fn redact(method: &str, path: &str, params: &[(String, String)], extra: Option<&str>) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) || extra.is_some_and(|e| e == k);
        if secret {
            ser.append_pair(k, "***");
        } else {
            ser.append_pair(k, &excerpt(v));
        }
    }
    let q = ser.finish();
    if q.is_empty() { format!("{method} {path}") } else { format!("{method} {path}?{q}") }
}

fn excerpt(v: &str) -> String {
    let mut end = v.len().min(MAX_ID_LEN);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_json_and_form() {
        let p = parse_params("a=1&b=x%20y", None, b"").unwrap();
        assert_eq!(p, vec![("a".into(), "1".into()), ("b".into(), "x y".into())]);
        let p =
            parse_params("q=1", Some("application/json; charset=utf-8"), br#"{"n":12.5,"s":"t","b":true,"z":null}"#)
                .unwrap();
        assert_eq!(p.len(), 4);
        assert!(p.contains(&("n".into(), "12.5".into())) && p.contains(&("b".into(), "true".into())));
        assert_eq!(p.last(), Some(&("q".into(), "1".into())));
        let p = parse_params("", Some("application/x-www-form-urlencoded"), b"a=%41").unwrap();
        assert_eq!(p, vec![("a".into(), "A".into())]);
        assert!(matches!(parse_params("", Some("application/json"), b"{"), Err(ParamsError::Json(_))));
        assert!(matches!(parse_params("", Some("application/json"), b"[1]"), Err(ParamsError::Json(_))));
        assert!(matches!(parse_params("", Some("application/json"), br#"{"a":[1]}"#), Err(ParamsError::Json(_))));
        assert!(matches!(parse_params("", Some("text/plain"), b"a"), Err(ParamsError::MediaType(_))));
    }

    #[test]
    fn secrets_are_redacted() {
        let p: Vec<(String, String)> = [("txid", "T"), ("token", "s3cr3t"), ("Secret", "x"), ("key", "k"), ("pw", "p")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let r = redact("GET", "/postback/n", &p, Some("pw"));
        assert_eq!(r, "GET /postback/n?txid=T&token=***&Secret=***&key=***&pw=***");
        assert!(!r.contains("s3cr3t"));
        assert_eq!(redact("POST", "/x", &[], None), "POST /x");
    }
}
