//! Resolution of LiteLLM's `os.environ/NAME` references anywhere in a parsed config tree.

use serde_json::Value;

use super::ConfigError;

const PREFIX: &str = "os.environ/";

/// Replaces every string `os.environ/NAME` in `value` by the variable's value, read with
/// `lookup`. A missing variable is an error naming it and the config path that used it.
pub fn resolve(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    walk(value, &mut String::new(), lookup)
}

fn walk(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix(PREFIX) {
                let name = name.trim();
                match lookup(name) {
                    Some(v) => *s = v,
                    None => {
                        return Err(ConfigError::MissingEnv {
                            var: name.to_string(),
                            path: display_path(path),
                        })
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, lookup)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                walk(v, path, lookup)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "(root)".into()
    } else {
        path.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_nested_references() {
        let mut v = json!({"model_list": [{"litellm_params": {"api_key": "os.environ/KEY"}}]});
        resolve(&mut v, &|n| (n == "KEY").then(|| "sk-1".to_string())).unwrap();
        assert_eq!(v["model_list"][0]["litellm_params"]["api_key"], "sk-1");
    }

    #[test]
    fn missing_variable_names_var_and_path() {
        let mut v = json!({"model_list": [{"litellm_params": {"api_key": "os.environ/NOPE"}}]});
        let err = resolve(&mut v, &|_| None).unwrap_err().to_string();
        assert!(err.contains("NOPE"), "{err}");
        assert!(
            err.contains("model_list[0].litellm_params.api_key"),
            "{err}"
        );
    }
}
