//! The state of one scenario: its orchd, the last response, the tasks it submitted and
//! the streams it read.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use hyper::Method;
use orchd_features::{Client, Contract, Event, Opened, Orchd, Response, SseStream};
use orchd_testkit::task_request;
use serde_json::{json, Value};

/// Loaded once: the documents every response is checked against (OrchQueue's and the
/// OpenAI-compatible routes').
pub static CONTRACT: LazyLock<Arc<Contract>> = LazyLock::new(|| Arc::new(Contract::load_all()));

#[derive(cucumber::World)]
#[world(init = Self::new)]
pub struct OrchWorld {
    pub orchd: Option<Orchd>,
    /// Sent as X-API-Key when set; a scenario whose config has keys picks one.
    pub api_key: Option<String>,
    pub last: Option<Response>,
    /// Submitted tasks by their name in the scenario: the request body.
    pub tasks: HashMap<String, Value>,
    /// Sessions by name: their UUID.
    pub sessions: HashMap<String, String>,
    /// The first stream read of each task (complete, or as far as read).
    pub streams: HashMap<String, Vec<Event>>,
    /// Comments (heartbeats) seen on that stream.
    pub comments: HashMap<String, Vec<String>>,
    /// Streams still open (read partly).
    pub open: HashMap<String, SseStream>,
    /// A second full stream of a task (replay).
    pub replays: HashMap<String, Vec<Event>>,
    /// A stream resumed with Last-Event-ID.
    pub resumed: HashMap<String, Vec<Event>>,
    /// X-Tokens-Out of the first cancel of each task.
    pub tokens_out: HashMap<String, u64>,
    /// 201 answers of stored artifacts, in order.
    pub artifacts: Vec<Value>,
    /// Every artifact body a step sent, in order.
    pub stored: Vec<Value>,
    pub pending: Option<tokio::task::JoinHandle<Result<Response, String>>>,
    pub metrics: Option<String>,
    /// Directories to remove when the scenario ends.
    pub scratch: Vec<std::path::PathBuf>,
}

impl std::fmt::Debug for OrchWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchWorld")
            .field("addr", &self.orchd.as_ref().map(|o| o.addr))
            .field("tasks", &self.tasks.keys().collect::<Vec<_>>())
            .field("last_status", &self.last.as_ref().map(|r| r.status))
            .finish_non_exhaustive()
    }
}

impl Drop for OrchWorld {
    fn drop(&mut self) {
        self.open.clear();
        self.orchd.take();
        for d in &self.scratch {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl OrchWorld {
    async fn new() -> Result<Self, std::convert::Infallible> {
        Ok(OrchWorld {
            orchd: None,
            api_key: None,
            last: None,
            tasks: HashMap::new(),
            sessions: HashMap::new(),
            streams: HashMap::new(),
            comments: HashMap::new(),
            open: HashMap::new(),
            replays: HashMap::new(),
            resumed: HashMap::new(),
            tokens_out: HashMap::new(),
            artifacts: Vec::new(),
            stored: Vec::new(),
            pending: None,
            metrics: None,
            scratch: Vec::new(),
        })
    }

    pub fn start(&mut self, toml: &str) {
        self.open.clear();
        self.orchd = None;
        self.orchd = Some(Orchd::start(toml).unwrap_or_else(|e| panic!("orchd starts: {e}")));
    }

    pub fn client(&self) -> Client {
        let orchd = self.orchd.as_ref().expect("a Given step starts orchd");
        Client::new(orchd.addr, self.api_key.as_deref())
    }

    pub fn last(&self) -> &Response {
        self.last.as_ref().expect("a request was sent")
    }

    pub fn last_json(&self) -> Value {
        let r = self.last();
        serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!(
                "{} {} answered no JSON ({e}): {}",
                r.method,
                r.path,
                r.text()
            )
        })
    }

    /// Checks a response against the contract and keeps it as the last one.
    pub fn keep(&mut self, r: Response) {
        check_response(&r);
        self.last = Some(r);
    }

    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let r = self
            .client()
            .send(method.clone(), path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        self.keep(r);
    }

    pub async fn post(&mut self, path: &str, body: &Value) {
        let body = serde_json::to_vec(body).expect("JSON");
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            &body,
        )
        .await;
    }

    pub fn session(&mut self, name: &str) -> String {
        self.sessions
            .entry(name.to_string())
            .or_insert_with(orchd_features::uuid)
            .clone()
    }

    /// The body of a new task with the shared defaults (`orchd_testkit::task_request`,
    /// seed 1); `fields` override them.
    pub fn task_body(&mut self, session: Option<&str>, fields: &[(String, Value)]) -> Value {
        let session = match session {
            Some(name) => self.session(name),
            None => orchd_features::uuid(),
        };
        let mut body = task_request(&orchd_features::uuid(), &session, json!({"seed": 1}));
        for (k, v) in fields {
            body[k.as_str()] = v.clone();
        }
        body
    }

    pub async fn submit(&mut self, name: &str, body: Value) {
        self.tasks.insert(name.to_string(), body.clone());
        self.post("/v1/tasks", &body).await;
    }

    pub fn task_id(&self, name: &str) -> String {
        self.tasks
            .get(name)
            .unwrap_or_else(|| panic!("task {name} was not submitted"))["task_id"]
            .as_str()
            .expect("task_id is text")
            .to_string()
    }

    /// Opens a stream and keeps its head as the last response; `None` when the answer
    /// was not a stream.
    pub async fn open_stream(&mut self, path: &str, headers: &[(&str, &str)]) -> Option<SseStream> {
        match self
            .client()
            .stream(path, headers)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        {
            Opened::Events(s) => {
                self.keep(s.head.clone());
                Some(s)
            }
            Opened::Refused(r) => {
                self.keep(r);
                None
            }
        }
    }

    /// Reads a stream to its end, checking each frame against the contract.
    pub async fn drain_stream(path: &str, mut s: SseStream, into: &mut Vec<Event>) -> Vec<String> {
        while let Some(ev) = s.next().await.unwrap_or_else(|e| panic!("{e}")) {
            check_event(path, &ev);
            into.push(ev);
        }
        s.comments().to_vec()
    }

    pub fn frames(&self, name: &str) -> &[Event] {
        self.streams
            .get(name)
            .unwrap_or_else(|| panic!("task {name} was not streamed"))
    }
}

/// Checks a response against the contract. A path the documents do not have may only
/// be a 404 or 405.
pub fn check_response(r: &Response) {
    if let Err(v) = CONTRACT.check(r) {
        let undocumented_path = v.0.contains("no documented operation");
        let refused = matches!(r.status.as_u16(), 404 | 405);
        if !(undocumented_path && refused) {
            panic!("contract: {v}");
        }
    }
}

pub fn check_event(path: &str, ev: &Event) {
    check_event_of(&Method::GET, path, ev);
}

/// [`check_event`] for a stream answering `method` (the OpenAI routes answer a POST).
pub fn check_event_of(method: &Method, path: &str, ev: &Event) {
    if let Err(v) = CONTRACT.check_event_of(method, path, ev) {
        panic!("contract: {v}");
    }
}
