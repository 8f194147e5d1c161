//! The behaviour suite: `tests/features/*.feature` run by cucumber against a real orchd
//! started per scenario with the config the scenario gives. Every response and SSE frame
//! a step sees is also checked against `contracts/openapi/`.
//!
//! The run fails on any failed, skipped or undefined step, on a step text that does not
//! match exactly one step definition (checked before anything runs, over every feature
//! file), and on a feature file whose scenarios did not all run.
//!
//! Run alone: `cargo test -p orchd-features --test bdd`; one feature or scenario:
//! `cargo test -p orchd-features --test bdd -- --name 'Cancel'` (cucumber's own CLI:
//! `-- --help`).

mod steps;
mod world;

use std::path::{Path, PathBuf};

use cucumber::gherkin::{self, GherkinEnv};
use cucumber::writer::Stats as _;
use cucumber::World as _;

use world::OrchWorld;

fn features_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/features")
}

/// Every feature file, parsed.
fn feature_files() -> Vec<gherkin::Feature> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(features_dir())
        .expect("tests/features")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "feature"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            gherkin::Feature::parse_path(p, GherkinEnv::default())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect()
}

/// Every step of every scenario (outlines expanded with their examples), as
/// (where, step).
fn all_steps(features: &[gherkin::Feature]) -> Vec<(String, gherkin::Step)> {
    let mut out = Vec::new();
    for f in features {
        let file = f
            .path
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let background: Vec<gherkin::Step> =
            f.background.iter().flat_map(|b| b.steps.clone()).collect();
        let scenarios = f
            .scenarios
            .iter()
            .chain(f.rules.iter().flat_map(|r| r.scenarios.iter()));
        for s in scenarios {
            for step in &background {
                out.push((format!("{file}: background"), step.clone()));
            }
            let rows = expand_examples(s);
            for values in &rows {
                for step in &s.steps {
                    let mut step = step.clone();
                    for (name, value) in values {
                        step.value = step.value.replace(&format!("<{name}>"), value);
                    }
                    out.push((format!("{file}:{}: {}", step.position.line, s.name), step));
                }
            }
        }
    }
    out
}

/// One placeholder map per example row; one empty map for a plain scenario.
fn expand_examples(s: &gherkin::Scenario) -> Vec<Vec<(String, String)>> {
    if s.examples.is_empty() {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for ex in &s.examples {
        let Some(table) = &ex.table else { continue };
        let Some((head, rows)) = table.rows.split_first() else {
            continue;
        };
        for row in rows {
            out.push(head.iter().cloned().zip(row.iter().cloned()).collect());
        }
    }
    out
}

/// Scenarios a full run executes: one per example row of an outline.
fn scenario_count(features: &[gherkin::Feature]) -> usize {
    features
        .iter()
        .flat_map(|f| {
            f.scenarios
                .iter()
                .chain(f.rules.iter().flat_map(|r| r.scenarios.iter()))
        })
        .map(|s| expand_examples(s).len())
        .sum()
}

/// The step lint: every step text matches exactly one step definition.
fn lint(features: &[gherkin::Feature]) -> Vec<String> {
    let steps = OrchWorld::collection();
    let mut problems = Vec::new();
    for (place, step) in all_steps(features) {
        match steps.find(&step) {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!(
                "{place}: undefined step: {} {}",
                step.keyword.trim(),
                step.value
            )),
            Err(e) => problems.push(format!(
                "{place}: ambiguous step: {} {} matches {:?}",
                step.keyword.trim(),
                step.value,
                e.possible_matches
                    .iter()
                    .map(|(re, _)| re.to_string())
                    .collect::<Vec<_>>()
            )),
        }
    }
    for f in features {
        for t in f
            .tags
            .iter()
            .chain(f.scenarios.iter().flat_map(|s| s.tags.iter()))
        {
            problems.push(format!(
                "{}: tag @{t}: tags are not used to skip or select here",
                f.name
            ));
        }
    }
    problems
}

fn main() {
    let features = feature_files();
    let problems = lint(&features);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("step lint: {p}");
        }
        println!("test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        std::process::exit(1);
    }
    let expected = scenario_count(&features);
    let filtered = std::env::args().len() > 1;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let writer = runtime.block_on(
        OrchWorld::cucumber()
            // One scenario at a time: each starts its own orchd, and timing steps
            // (deadlines, drains) should not compete with other scenarios for 2 cores.
            .max_concurrent_scenarios(1)
            .fail_on_skipped()
            .run(features_dir()),
    );
    let scenarios = writer.scenarios_stats();
    let mut failed = writer.execution_has_failed();
    if !filtered && scenarios.total() != expected {
        eprintln!(
            "bdd: {} scenarios ran, the feature files hold {expected}: some were not executed",
            scenarios.total()
        );
        failed = true;
    }
    println!(
        "test result: {}. {} passed; {} failed; {} ignored; 0 measured; 0 filtered out",
        if failed { "FAILED" } else { "ok" },
        scenarios.passed,
        scenarios.failed + scenarios.skipped + usize::from(failed && scenarios.failed == 0),
        0
    );
    if failed {
        std::process::exit(1);
    }
}
