//! The memory tools as the model sees them: their definitions (OpenAI chat tool shape;
//! providers translate them with the rest of the request), the names memproxy answers to
//! (its own and the original proxy's), and the reading of a call's arguments into a
//! [`Call`]. Whatever goes wrong with a call is a [`ToolError`], which knows the hint
//! the model gets with it.

use std::time::Duration;

use serde_json::{json, Map, Value};

/// Searches the caller's memories.
pub const SEARCH: &str = "memory_search";
/// Reads one memory by id.
pub const GET: &str = "memory_get";
/// The original proxy's name for [`SEARCH`], still answered.
pub const SEARCH_ALIAS: &str = "supermemoryToolSearch";
/// The original proxy's name for [`GET`], still answered.
pub const GET_ALIAS: &str = "supermemoryToolGetDocument";

/// Results of a search when the model names no `limit`.
pub const DEFAULT_LIMIT: usize = 5;
/// Results of a search at most (a larger `limit` is lowered to it).
pub const MAX_LIMIT: usize = 20;

/// Argument names accepted for a memory id (`id` and the original proxy's aliases).
const ID_NAMES: [&str; 3] = ["id", "document_id", "doc_id"];

/// One of the memory tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `memory_search` (or `supermemoryToolSearch`).
    Search,
    /// `memory_get` (or `supermemoryToolGetDocument`).
    Get,
}

impl Tool {
    /// The memory tool called `name` (its own name or the original proxy's), if any.
    pub fn named(name: &str) -> Option<Tool> {
        match name {
            SEARCH | SEARCH_ALIAS => Some(Tool::Search),
            GET | GET_ALIAS => Some(Tool::Get),
            _ => None,
        }
    }

    /// The tool's own name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Search => SEARCH,
            Tool::Get => GET,
        }
    }

    /// Arguments that work, shown to the model with an error.
    fn example(self) -> &'static str {
        match self {
            Tool::Search => r#"{"query": "the user's preferred editor", "limit": 5}"#,
            Tool::Get => r#"{"id": "<an id from memory_search results>"}"#,
        }
    }
}

/// A call with readable arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// The best `limit` memories for `query`.
    Search { query: String, limit: usize },
    /// One memory, in full.
    Get { id: String },
}

/// Why a memory tool call produced no result. It goes back to the model as the call's
/// result (`{"error", "hint"}`), never to the client as an HTTP error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("the arguments are not a JSON object: {0}")]
    BadJson(String),
    #[error("missing required argument `{0}`")]
    Missing(&'static str),
    #[error("argument `{name}` {problem}")]
    Invalid {
        name: &'static str,
        problem: &'static str,
    },
    /// No memory of the caller has this id (other users' ids look the same).
    #[error("no memory with id `{0}`")]
    NotFound(String),
    #[error("the memory store did not answer within {} s ({attempts} attempts)", .after.as_secs_f64())]
    Timeout { after: Duration, attempts: u32 },
    #[error("the memory store failed: {0}")]
    Store(String),
}

impl ToolError {
    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, ToolError::Timeout { .. } | ToolError::Store(_))
    }

    /// A short, fixed label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            ToolError::BadJson(_) | ToolError::Missing(_) | ToolError::Invalid { .. } => {
                "bad_arguments"
            }
            ToolError::NotFound(_) => "not_found",
            ToolError::Timeout { .. } => "timeout",
            ToolError::Store(_) => "store_error",
        }
    }

    /// What the model can do about it.
    pub fn hint(&self, tool: Tool) -> String {
        match self {
            ToolError::BadJson(_) | ToolError::Missing(_) | ToolError::Invalid { .. } => {
                format!(
                    "call {} again with arguments like {}",
                    tool.name(),
                    tool.example()
                )
            }
            ToolError::NotFound(_) => {
                format!("pass an id exactly as {SEARCH} returned it, or search again with {SEARCH}")
            }
            ToolError::Timeout { .. } => {
                "memory is slow right now: try once more, or answer without it".into()
            }
            ToolError::Store(_) => "memory is unavailable right now: answer without it".into(),
        }
    }

    /// The tool result the model reads.
    pub fn to_result(&self, tool: Tool) -> Value {
        json!({"error": self.to_string(), "hint": self.hint(tool)})
    }
}

/// The definitions added to a request's `tools`, leaving out names in `taken` (a tool the
/// client defined itself under one of these names stays the client's).
pub fn definitions(taken: &[String]) -> Vec<Value> {
    let search = json!({
        "type": "function",
        "function": {
            "name": SEARCH,
            "description": "Search the user's long-term memory: facts, preferences and \
                earlier conversations they had with you. Use it when the answer may depend \
                on something the user told you before. Returns the best matches, best \
                first, each with an id for memory_get.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for, in a few words."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                              "description": format!("How many results at most (default {DEFAULT_LIMIT}).")}
                },
                "required": ["query"]
            }
        }
    });
    let get = json!({
        "type": "function",
        "function": {
            "name": GET,
            "description": "Read one memory of the user in full, by the id memory_search gave.",
            "parameters": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "description": "The memory's id."}
                },
                "required": ["id"]
            }
        }
    });
    [(SEARCH, search), (GET, get)]
        .into_iter()
        .filter(|(name, _)| !taken.iter().any(|t| t == name))
        .map(|(_, def)| def)
        .collect()
}

/// Reads a call's JSON arguments. Empty arguments are an empty object; unknown members
/// (the original proxy's `containerTag`: searches always cover the caller's own memory)
/// are ignored.
pub fn parse(tool: Tool, arguments: &str) -> Result<Call, ToolError> {
    let args: Map<String, Value> = if arguments.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(arguments) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(ToolError::BadJson("expected an object".into())),
            Err(e) => return Err(ToolError::BadJson(e.to_string())),
        }
    };
    match tool {
        Tool::Search => {
            let query = match args.get("query") {
                None | Some(Value::Null) => return Err(ToolError::Missing("query")),
                Some(Value::String(q)) if q.trim().is_empty() => {
                    return Err(ToolError::Invalid {
                        name: "query",
                        problem: "must not be empty",
                    })
                }
                Some(Value::String(q)) => q.trim().to_string(),
                Some(_) => {
                    return Err(ToolError::Invalid {
                        name: "query",
                        problem: "must be a string",
                    })
                }
            };
            Ok(Call::Search {
                query,
                limit: limit(args.get("limit"))?,
            })
        }
        Tool::Get => {
            let given = ID_NAMES
                .iter()
                .find_map(|k| args.get(*k).filter(|v| !v.is_null()));
            let id = match given {
                None => return Err(ToolError::Missing("id")),
                Some(Value::String(s)) => s.trim().to_string(),
                Some(Value::Number(n)) => n.to_string(),
                Some(_) => {
                    return Err(ToolError::Invalid {
                        name: "id",
                        problem: "must be a string",
                    })
                }
            };
            if id.is_empty() {
                return Err(ToolError::Invalid {
                    name: "id",
                    problem: "must not be empty",
                });
            }
            Ok(Call::Get { id })
        }
    }
}

/// `limit`: absent means the default; a number (or a numeric string, as some models
/// send) is kept within 1..=[`MAX_LIMIT`].
fn limit(v: Option<&Value>) -> Result<usize, ToolError> {
    let bad = ToolError::Invalid {
        name: "limit",
        problem: "must be a whole number",
    };
    let n = match v {
        None | Some(Value::Null) => return Ok(DEFAULT_LIMIT),
        Some(Value::Number(n)) => n.as_f64().ok_or(bad)?,
        Some(Value::String(s)) => s.trim().parse::<f64>().map_err(|_| bad)?,
        Some(_) => return Err(bad),
    };
    if !n.is_finite() || n.fract() != 0.0 {
        return Err(ToolError::Invalid {
            name: "limit",
            problem: "must be a whole number",
        });
    }
    Ok(n.clamp(1.0, MAX_LIMIT as f64) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(args: &str) -> Result<Call, ToolError> {
        parse(Tool::Search, args)
    }

    fn get(args: &str) -> Result<Call, ToolError> {
        parse(Tool::Get, args)
    }

    #[test]
    fn names_and_aliases() {
        assert_eq!(Tool::named("memory_search"), Some(Tool::Search));
        assert_eq!(Tool::named("supermemoryToolSearch"), Some(Tool::Search));
        assert_eq!(Tool::named("memory_get"), Some(Tool::Get));
        assert_eq!(Tool::named("supermemoryToolGetDocument"), Some(Tool::Get));
        assert_eq!(Tool::named("get_weather"), None);
        assert_eq!(Tool::named("Memory_Search"), None);
    }

    #[test]
    fn search_arguments() {
        assert_eq!(
            search(r#"{"query": "  tabs or spaces "}"#),
            Ok(Call::Search {
                query: "tabs or spaces".into(),
                limit: DEFAULT_LIMIT
            })
        );
        // The original proxy's containerTag is ignored: the caller's scope is used.
        assert_eq!(
            search(r#"{"query": "x", "limit": 3, "containerTag": "someone-else"}"#),
            Ok(Call::Search {
                query: "x".into(),
                limit: 3
            })
        );
        for (limit, want) in [("0", 1), ("100", MAX_LIMIT), ("\"7\"", 7), ("2.0", 2)] {
            let args = format!(r#"{{"query": "x", "limit": {limit}}}"#);
            assert_eq!(
                search(&args),
                Ok(Call::Search {
                    query: "x".into(),
                    limit: want
                }),
                "{args}"
            );
        }
    }

    #[test]
    fn bad_search_arguments() {
        assert!(matches!(search("{\"query\": "), Err(ToolError::BadJson(_))));
        assert!(matches!(search("[1]"), Err(ToolError::BadJson(_))));
        assert_eq!(search(""), Err(ToolError::Missing("query")));
        assert_eq!(search("{}"), Err(ToolError::Missing("query")));
        assert_eq!(search(r#"{"q": "x"}"#), Err(ToolError::Missing("query")));
        assert!(matches!(
            search(r#"{"query": 5}"#),
            Err(ToolError::Invalid { name: "query", .. })
        ));
        assert!(matches!(
            search(r#"{"query": " "}"#),
            Err(ToolError::Invalid { name: "query", .. })
        ));
        for limit in ["\"many\"", "2.5", "true", "[3]"] {
            let args = format!(r#"{{"query": "x", "limit": {limit}}}"#);
            assert!(
                matches!(search(&args), Err(ToolError::Invalid { name: "limit", .. })),
                "{args}"
            );
        }
    }

    #[test]
    fn get_arguments_and_id_aliases() {
        for args in [
            r#"{"id": "m1"}"#,
            r#"{"document_id": "m1"}"#,
            r#"{"doc_id": " m1 "}"#,
            r#"{"id": null, "doc_id": "m1"}"#,
        ] {
            assert_eq!(get(args), Ok(Call::Get { id: "m1".into() }), "{args}");
        }
        assert_eq!(get(r#"{"id": 42}"#), Ok(Call::Get { id: "42".into() }));
        assert_eq!(get("{}"), Err(ToolError::Missing("id")));
        assert_eq!(get(r#"{"memory": "m1"}"#), Err(ToolError::Missing("id")));
        assert!(matches!(
            get(r#"{"id": ""}"#),
            Err(ToolError::Invalid { name: "id", .. })
        ));
        assert!(matches!(
            get(r#"{"id": {"a": 1}}"#),
            Err(ToolError::Invalid { name: "id", .. })
        ));
    }

    #[test]
    fn errors_read_as_results_with_hints() {
        let r = ToolError::Missing("query").to_result(Tool::Search);
        assert_eq!(r["error"], "missing required argument `query`");
        assert!(r["hint"].as_str().unwrap().contains(r#""query""#), "{r}");
        let r = ToolError::NotFound("m9".into()).to_result(Tool::Get);
        assert!(r["hint"].as_str().unwrap().contains("memory_search"), "{r}");
        let t = ToolError::Timeout {
            after: Duration::from_millis(50),
            attempts: 3,
        };
        assert!(t.retryable());
        assert!(t.to_string().contains("0.05 s (3 attempts)"), "{t}");
        assert!(!ToolError::NotFound("x".into()).retryable());
    }

    #[test]
    fn definitions_leave_out_the_clients_names() {
        let names = |defs: Vec<Value>| -> Vec<String> {
            defs.iter()
                .map(|d| d["function"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(definitions(&[])), vec![SEARCH, GET]);
        assert_eq!(names(definitions(&[SEARCH.to_string()])), vec![GET]);
        let d = &definitions(&[])[0];
        assert_eq!(d["function"]["parameters"]["required"], json!(["query"]));
    }
}
