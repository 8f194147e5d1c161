//! What the tests of this crate alone need: an in-process orchd on 127.0.0.1:0
//! ([`TestServer`]) and the `orchd` binary as a process ([`process`]). Everything else
//! (the HTTP/SSE client, the frame rules, `wait_until`, task bodies, the fake engine)
//! is the shared test support, `orchd_testkit`.

#![allow(dead_code)]

pub mod process;

use std::net::SocketAddr;

use orchd_http::{serve, Config, Server};
use orchd_testkit::{Client, Response};

/// An in-process orchd, shut down when dropped.
pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
}

impl TestServer {
    pub fn start(mut config: Config) -> TestServer {
        config.server.addr = "127.0.0.1:0".parse().unwrap();
        // `.ci/run` runs the tests once per runtime: ORCHD_RUNTIME picks it, as for the
        // binary (which reads it itself).
        if let Ok(runtime) = std::env::var("ORCHD_RUNTIME") {
            config.server.runtime = runtime.parse().expect("ORCHD_RUNTIME names a runtime");
        }
        let server = serve(config).expect("orchd starts");
        let addr = server.local_addr();
        TestServer {
            server: Some(server),
            addr,
        }
    }

    /// A config with `shards` shards and everything else default.
    pub fn config(shards: usize) -> Config {
        let mut c = Config::default();
        c.server.shards = shards;
        c
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.client().send("GET", path, headers, b"")
    }

    /// A POST with `body` on a fresh connection.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.client().send("POST", path, headers, body)
    }

    pub fn shutdown(mut self) {
        self.server
            .take()
            .unwrap()
            .shutdown()
            .expect("clean shutdown");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown();
        }
    }
}
