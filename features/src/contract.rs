//! The OpenAPI documents under `contracts/openapi/`, loaded at run time as validators:
//! every response a suite sees is matched to a documented operation and status, and its
//! headers, body and SSE frames are checked against the schemas (JSON Schema draft 4,
//! which OpenAPI 3.0 schemas are a subset of, with the document's `components` as the
//! root of `#/components/...` references). The contract also records which
//! (operation, status) pairs were seen, so a documented answer no test produces shows up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use hyper::Method;
use jsonschema::Validator;
use orchd_testkit::Event;
use serde_json::{json, Value};

use crate::client::Response;

/// A response the documents do not describe, or describe otherwise.
#[derive(Debug)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Contract {
    operations: Vec<Operation>,
    seen: Mutex<BTreeSet<(String, u16)>>,
}

struct Operation {
    id: String,
    method: Method,
    /// Path segments; `None` is a `{parameter}`.
    segments: Vec<Option<String>>,
    template: String,
    responses: BTreeMap<u16, ResponseSpec>,
}

struct ResponseSpec {
    headers: Vec<HeaderSpec>,
    /// Media type -> body schema (none for bodies that are not JSON).
    content: BTreeMap<String, Option<Validator>>,
    /// `x-sse-events`: event name -> schema of its `data`.
    events: BTreeMap<String, Validator>,
}

struct HeaderSpec {
    name: String,
    required: bool,
    kind: ValueKind,
    schema: Validator,
}

#[derive(Clone, Copy)]
enum ValueKind {
    Integer,
    Number,
    Text,
}

impl Contract {
    /// Loads `contracts/openapi/{data,control}.yaml` of this repository (OrchQueue).
    pub fn load_default() -> Contract {
        Contract::load_named(&["data.yaml", "control.yaml"])
    }

    /// Loads every document: OrchQueue's and the OpenAI-compatible routes'.
    pub fn load_all() -> Contract {
        Contract::load_named(&["data.yaml", "control.yaml", "openai.yaml"])
    }

    /// Loads `contracts/openapi/openai.yaml`, the OpenAI-compatible routes.
    pub fn load_openai() -> Contract {
        Contract::load_named(&["openai.yaml"])
    }

    fn load_named(names: &[&str]) -> Contract {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts/openapi");
        let files: Vec<_> = names.iter().map(|n| dir.join(n)).collect();
        Contract::load(&files).unwrap_or_else(|e| panic!("contracts/openapi: {e}"))
    }

    pub fn load(files: &[impl AsRef<Path>]) -> Result<Contract, String> {
        let mut operations = Vec::new();
        for file in files {
            let file = file.as_ref();
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let doc: Value =
                serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            load_doc(&doc, &mut operations).map_err(|e| format!("{}: {e}", file.display()))?;
        }
        Ok(Contract {
            operations,
            seen: Mutex::new(BTreeSet::new()),
        })
    }

    /// Checks a whole response (an event-stream response: its head) against the
    /// documents and records the (operation, status) pair.
    pub fn check(&self, r: &Response) -> Result<(), Violation> {
        let path = r.path.split('?').next().unwrap_or_default();
        let op = self.operation(&r.method, path)?;
        let what = format!("{} {} -> {}", r.method, r.path, r.status.as_u16());
        let spec = op.responses.get(&r.status.as_u16()).ok_or_else(|| {
            Violation(format!(
                "{what}: status not documented for {} (documented: {:?}); body: {}",
                op.id,
                op.responses.keys().collect::<Vec<_>>(),
                String::from_utf8_lossy(&r.body)
            ))
        })?;
        self.seen
            .lock()
            .expect("coverage lock")
            .insert((op.id.clone(), r.status.as_u16()));
        for h in &spec.headers {
            let Some(value) = r.headers.get(h.name.as_str()) else {
                if h.required {
                    return Err(Violation(format!(
                        "{what}: required header {} missing",
                        h.name
                    )));
                }
                continue;
            };
            let text = value
                .to_str()
                .map_err(|_| Violation(format!("{what}: header {} is not text", h.name)))?;
            let value = match h.kind {
                ValueKind::Integer => text.parse::<i64>().map(Value::from).ok(),
                ValueKind::Number => text.parse::<f64>().ok().map(|n| json!(n)),
                ValueKind::Text => Some(Value::String(text.to_string())),
            }
            .ok_or_else(|| {
                Violation(format!(
                    "{what}: header {}: {text:?} is not a number",
                    h.name
                ))
            })?;
            errors(&h.schema, &value)
                .map_err(|e| Violation(format!("{what}: header {} = {text:?}: {e}", h.name)))?;
        }
        let is_stream = spec.content.contains_key("text/event-stream");
        if r.body.is_empty() && (spec.content.is_empty() || is_stream) {
            return Ok(());
        }
        let media = r
            .header("content-type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let schema = spec.content.get(&media).ok_or_else(|| {
            Violation(format!(
                "{what}: content type {media:?} not documented (documented: {:?})",
                spec.content.keys().collect::<Vec<_>>()
            ))
        })?;
        if let Some(schema) = schema {
            let body: Value = serde_json::from_slice(&r.body)
                .map_err(|e| Violation(format!("{what}: body is not JSON ({e}): {}", r.text())))?;
            errors(schema, &body).map_err(|e| Violation(format!("{what}: body {body}: {e}")))?;
        }
        Ok(())
    }

    /// Checks one frame of an event stream opened at `path` against `x-sse-events`.
    /// (That it has an id and JSON data the SSE parser has checked.)
    pub fn check_event(&self, path: &str, ev: &Event) -> Result<(), Violation> {
        self.check_event_of(&Method::GET, path, ev)
    }

    /// [`check_event`](Contract::check_event) for a stream answering `method` (the
    /// OpenAI routes stream the answer to a POST).
    pub fn check_event_of(&self, method: &Method, path: &str, ev: &Event) -> Result<(), Violation> {
        let op = self.operation(method, path)?;
        let spec = op
            .responses
            .get(&200)
            .ok_or_else(|| Violation(format!("{}: no 200 documented", op.id)))?;
        let schema = spec.events.get(&ev.event).ok_or_else(|| {
            Violation(format!(
                "{path}: event {:?} not documented (documented: {:?})",
                ev.event,
                spec.events.keys().collect::<Vec<_>>()
            ))
        })?;
        errors(schema, &ev.data)
            .map_err(|e| Violation(format!("{path}: event {} {}: {e}", ev.event, ev.data)))
    }

    /// Every documented (operationId, status) no checked response has produced yet.
    pub fn unexercised(&self) -> Vec<(String, u16)> {
        let seen = self.seen.lock().expect("coverage lock");
        let mut out = Vec::new();
        for op in &self.operations {
            for status in op.responses.keys() {
                if !seen.contains(&(op.id.clone(), *status)) {
                    out.push((op.id.clone(), *status));
                }
            }
        }
        out
    }

    /// Whether `operation_id` documents `status`.
    pub fn documents(&self, operation_id: &str, status: u16) -> bool {
        self.operations
            .iter()
            .any(|o| o.id == operation_id && o.responses.contains_key(&status))
    }

    /// Every documented operation as (operationId, method, path template).
    pub fn operations(&self) -> Vec<(String, Method, String)> {
        self.operations
            .iter()
            .map(|o| (o.id.clone(), o.method.clone(), o.template.clone()))
            .collect()
    }

    fn operation(&self, method: &Method, path: &str) -> Result<&Operation, Violation> {
        let parts: Vec<&str> = path.split('/').collect();
        self.operations
            .iter()
            .find(|o| {
                o.method == method
                    && o.segments.len() == parts.len()
                    && o.segments.iter().zip(&parts).all(|(s, p)| match s {
                        Some(lit) => lit == p,
                        None => !p.is_empty(),
                    })
            })
            .ok_or_else(|| Violation(format!("{method} {path}: no documented operation")))
    }
}

fn errors(schema: &Validator, value: &Value) -> Result<(), String> {
    let errs: Vec<String> = schema
        .iter_errors(value)
        .map(|e| format!("{} (at {})", e, e.instance_path()))
        .collect();
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

fn load_doc(doc: &Value, out: &mut Vec<Operation>) -> Result<(), String> {
    if doc["openapi"] != "3.0.3" {
        return Err(format!("openapi is {}, expected \"3.0.3\"", doc["openapi"]));
    }
    let components = doc.get("components").cloned().unwrap_or(json!({}));
    let compile = |schema: &Value| -> Result<Validator, String> {
        let root = json!({"allOf": [schema], "components": components});
        jsonschema::draft4::options()
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("schema {schema}: {e}"))
    };
    let paths = doc["paths"].as_object().ok_or("no paths")?;
    for (template, item) in paths {
        let item = item.as_object().ok_or("path item is not an object")?;
        for (method, op) in item {
            // A path item also holds `parameters`, `summary` and `description`.
            let method = match method.as_str() {
                "get" => Method::GET,
                "post" => Method::POST,
                "put" => Method::PUT,
                "delete" => Method::DELETE,
                "patch" => Method::PATCH,
                "head" => Method::HEAD,
                "options" => Method::OPTIONS,
                _ => continue,
            };
            let id = op["operationId"]
                .as_str()
                .ok_or_else(|| format!("{method} {template}: no operationId"))?
                .to_string();
            let mut responses = BTreeMap::new();
            let listed = op["responses"]
                .as_object()
                .ok_or_else(|| format!("{id}: no responses"))?;
            for (status, resp) in listed {
                let status: u16 = status
                    .parse()
                    .map_err(|_| format!("{id}: status {status:?} is not a number"))?;
                let resp = resolve(doc, resp)?;
                let mut headers = Vec::new();
                for (name, h) in resp["headers"].as_object().into_iter().flatten() {
                    let h = resolve(doc, h)?;
                    let schema = resolve(doc, &h["schema"])?;
                    let kind = match schema["type"].as_str() {
                        Some("integer") => ValueKind::Integer,
                        Some("number") => ValueKind::Number,
                        _ => ValueKind::Text,
                    };
                    headers.push(HeaderSpec {
                        name: name.to_ascii_lowercase(),
                        required: h["required"] == true,
                        kind,
                        schema: compile(&h["schema"])
                            .map_err(|e| format!("{id} {status} header {name}: {e}"))?,
                    });
                }
                let mut content = BTreeMap::new();
                let mut events = BTreeMap::new();
                for (media, m) in resp["content"].as_object().into_iter().flatten() {
                    // Matched on the type alone: `text/plain; version=0.0.4` documents
                    // what a `text/plain; version=0.0.4; charset=utf-8` answer is.
                    let media = media
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase();
                    let schema = if media == "application/json" {
                        Some(compile(&m["schema"]).map_err(|e| format!("{id} {status}: {e}"))?)
                    } else {
                        None
                    };
                    content.insert(media, schema);
                }
                for (event, s) in resp["x-sse-events"].as_object().into_iter().flatten() {
                    events.insert(
                        event.clone(),
                        compile(s).map_err(|e| format!("{id} event {event}: {e}"))?,
                    );
                }
                responses.insert(
                    status,
                    ResponseSpec {
                        headers,
                        content,
                        events,
                    },
                );
            }
            out.push(Operation {
                id,
                method,
                segments: template
                    .split('/')
                    .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                    .collect(),
                template: template.clone(),
                responses,
            });
        }
    }
    Ok(())
}

/// Follows a local `$ref` (`#/components/...`) to the object it names.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> Result<&'a Value, String> {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r
                .strip_prefix('#')
                .ok_or_else(|| format!("{r}: only local references are supported"))?;
            let target = doc
                .pointer(pointer)
                .ok_or_else(|| format!("{r}: dangling reference"))?;
            resolve(doc, target)
        }
        None => Ok(v),
    }
}
