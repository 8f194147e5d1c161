//! The command line: every flag of orchd-load, its default and its help text.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "orchd-load",
    about = "SSE load against orchd, closed or open loop"
)]
pub struct Args {
    /// orchd address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Concurrent virtual users (one connection each).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Tasks to complete in all.
    #[arg(long, default_value_t = 1024)]
    pub tasks: u64,
    /// max_tokens of every task.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Stop after this many seconds even if tasks remain.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// X-API-Key to send.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Allow a target outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    pub allow_remote: bool,
    /// Instead of tasks: store this many artifacts (POST /v1/artifacts) and report the
    /// write latency.
    #[arg(long, default_value_t = 0)]
    pub artifacts: u64,
    /// Size of each artifact's content, with --artifacts.
    #[arg(long, default_value_t = 4096)]
    pub artifact_bytes: usize,
    /// What to load: `orchd` (submit + stream tasks) or `openai` (stream
    /// `POST /v1/completions` from an OpenAI-compatible engine directly, to compare).
    #[arg(long, default_value = "orchd")]
    pub target: String,
    /// Also scrape /metrics this often (ms) on a keep-alive connection, and report the
    /// scrape latency; 0 = no scrapes.
    #[arg(long, default_value_t = 0)]
    pub scrape_every_ms: u64,
    /// Cancel every task after this many tokens (POST .../cancel on a second, kept-alive
    /// connection of the user) and report cancel latency: from sending the cancel to the
    /// stream's terminal frame.
    #[arg(long)]
    pub cancel_after: Option<u64>,
    /// With --cancel-after: send each cancel on a new connection (connect included).
    #[arg(long)]
    pub cancel_fresh: bool,
    /// `engine` of every task (picks the pools that serve it).
    #[arg(long, default_value = "llamacpp")]
    pub engine: String,
    /// Open loop: task arrivals per second (0 = closed loop with --concurrency users).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Open loop: most tasks in flight at once; an arrival beyond it is dropped by the
    /// generator and counted (a bound on the generator, not a server figure).
    #[arg(long, default_value_t = 20_000)]
    pub max_in_flight: u64,
    /// Also draw the latency percentile curves (time to first token, inter-token, task,
    /// cancel) into this SVG file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}
