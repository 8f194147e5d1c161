//! The mock engine's tokens: a pure function of (seed, prompt/inputs, max_tokens,
//! model_ref), the same on every run, shard and machine (no `RandomState`, no time).

use crate::task::TaskSpec;

const WORDS: [&str; 64] = [
    " the", " a", " model", " token", " stream", " of", " and", " to", " in", " is", " orchd",
    " shard", " queue", " core", " fast", " slow", " data", " text", " time", " step", " one",
    " two", " three", " four", " five", " six", " seven", " eight", " nine", " ten", " red",
    " green", " blue", " light", " dark", " north", " south", " east", " west", " up", " down",
    " left", " right", " yes", " no", " maybe", " always", " never", " now", " then", " here",
    " there", " this", " that", " what", " why", " how", " who", " when", " where", ".", ",", "!",
    "?",
];

/// FNV-1a over the bytes, then mixed: stable across platforms and releases.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The deterministic token source of one task.
#[derive(Clone, Debug)]
pub struct MockTokens {
    state: u64,
}

impl MockTokens {
    /// `model_ref` is the model the pool serves for this task (the task's own when the
    /// pool serves `*`), so a reload changes the tokens.
    pub fn new(spec: &TaskSpec, model_ref: &str) -> MockTokens {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        h = fnv(h, &spec.seed.unwrap_or(0).to_le_bytes());
        h = fnv(h, &spec.max_tokens.to_le_bytes());
        h = fnv(h, model_ref.as_bytes());
        h = fnv(h, b"\x00p");
        h = fnv(h, spec.prompt.as_deref().unwrap_or("").as_bytes());
        for input in spec.inputs.iter().flatten() {
            h = fnv(h, b"\x00i");
            h = fnv(h, input.as_bytes());
        }
        MockTokens { state: h }
    }

    /// The next token's text.
    pub fn next_token(&mut self) -> &'static str {
        // splitmix64
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        WORDS[(z % WORDS.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::tests::body;

    fn tokens(extra: &str, model: &str, n: usize) -> Vec<&'static str> {
        let spec = TaskSpec::parse(body(extra).as_bytes()).unwrap();
        let mut m = MockTokens::new(&spec, model);
        (0..n).map(|_| m.next_token()).collect()
    }

    #[test]
    fn same_inputs_same_tokens() {
        assert_eq!(
            tokens(r#","seed":1"#, "m", 32),
            tokens(r#","seed":1"#, "m", 32)
        );
    }

    #[test]
    fn seed_and_model_change_tokens() {
        let base = tokens(r#","seed":1"#, "m", 32);
        assert_ne!(base, tokens(r#","seed":2"#, "m", 32));
        assert_ne!(base, tokens(r#","seed":1"#, "m2", 32));
    }

    #[test]
    fn pinned_output_never_drifts() {
        // Clients rely on mock output being stable across releases.
        assert_eq!(tokens(r#","seed":42"#, "m", 4).concat(), " seven down. one");
    }
}
