//! The mock engine's tokens: a pure function of (seed, prompt/inputs or chat messages,
//! max_tokens, model), the same on every run, shard and machine (no `RandomState`, no
//! time).

use crate::generation::{Generation, Input};
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

fn head(seed: Option<i64>, max_tokens: u32, model: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    h = fnv(h, &seed.unwrap_or(0).to_le_bytes());
    h = fnv(h, &max_tokens.to_le_bytes());
    fnv(h, model.as_bytes())
}

fn completion_seed(
    seed: Option<i64>,
    max_tokens: u32,
    model: &str,
    prompt: Option<&str>,
    inputs: &[String],
) -> u64 {
    let mut h = head(seed, max_tokens, model);
    h = fnv(h, b"\x00p");
    h = fnv(h, prompt.unwrap_or("").as_bytes());
    for input in inputs {
        h = fnv(h, b"\x00i");
        h = fnv(h, input.as_bytes());
    }
    h
}

/// Length of the mock's embedding vectors when a request names none.
pub const EMBEDDING_DIMENSIONS: u32 = 16;

/// The mock's embedding of `text` on `model`: `dims` components, a pure function of
/// both (FNV-1a, then splitmix64 per component, in [-1, 1]), scaled to unit length as
/// embedding models' outputs are.
pub fn embedding(model: &str, text: &str, dims: u32) -> Vec<f32> {
    let mut state = fnv(fnv(0xcbf2_9ce4_8422_2325, model.as_bytes()), b"\x00e");
    state = fnv(state, text.as_bytes());
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f32 / (1u64 << 52) as f32 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The deterministic token source of one task.
#[derive(Clone, Debug)]
pub struct MockTokens {
    state: u64,
}

impl MockTokens {
    /// The tokens of an OrchQueue task on `model_ref`, the model the pool serves for it
    /// (the task's own when the pool serves `*`), so a reload changes the tokens. The
    /// same as [`MockTokens::for_generation`] of that task's generation.
    pub fn new(spec: &TaskSpec, model_ref: &str) -> MockTokens {
        let inputs = spec.inputs.as_deref().unwrap_or_default();
        let h = completion_seed(
            spec.seed,
            spec.max_tokens,
            model_ref,
            spec.prompt.as_deref(),
            inputs,
        );
        MockTokens { state: h }
    }

    /// The tokens of a generation: its model is part of the seed.
    pub fn for_generation(g: &Generation) -> MockTokens {
        let (seed, max_tokens) = (g.sampling.seed, g.sampling.max_tokens);
        let h = match &g.input {
            Input::Completion { prompt, inputs } => {
                completion_seed(seed, max_tokens, &g.model, prompt.as_deref(), inputs)
            }
            // Embeddings come from [`embedding`]; a token stream of their texts is as
            // deterministic, should anything ask for one.
            Input::Embed(texts) => completion_seed(seed, max_tokens, &g.model, None, texts),
            Input::Chat(messages) => {
                let mut h = head(seed, max_tokens, &g.model);
                for m in messages {
                    h = fnv(h, b"\x00c");
                    h = fnv(h, m.role.as_str().as_bytes());
                    h = fnv(h, b"\x00");
                    h = fnv(h, m.content.as_bytes());
                }
                h
            }
        };
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
    use crate::generation::{ChatMessage, Role};
    use crate::task::tests::body;

    fn tokens(extra: &str, model: &str, n: usize) -> Vec<&'static str> {
        let spec = TaskSpec::parse(body(extra).as_bytes()).unwrap();
        let mut m = MockTokens::new(&spec, model);
        let mut g = MockTokens::for_generation(&Generation::from_spec(&spec, model));
        let (a, b): (Vec<_>, Vec<_>) = (0..n).map(|_| (m.next_token(), g.next_token())).unzip();
        assert_eq!(a, b, "a task and its generation give the same tokens");
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
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding("m", "hello", 16);
        assert_eq!(a, embedding("m", "hello", 16));
        assert_ne!(a, embedding("m", "hullo", 16));
        assert_ne!(a, embedding("m2", "hello", 16));
        assert_eq!(embedding("m", "hello", 3).len(), 3);
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert!(a.iter().all(|x| (-1.0..=1.0).contains(x)));
    }

    #[test]
    fn pinned_output_never_drifts() {
        // Clients rely on mock output being stable across releases.
        assert_eq!(tokens(r#","seed":42"#, "m", 4).concat(), " seven down. one");
    }

    #[test]
    fn chat_messages_seed_the_tokens() {
        let spec = TaskSpec::parse(body(r#","seed":1"#).as_bytes()).unwrap();
        let completion = Generation::from_spec(&spec, "m");
        let chat = |text: &str| {
            let mut g = completion.clone();
            g.input = Input::Chat(vec![ChatMessage {
                role: Role::User,
                content: text.into(),
            }]);
            let mut m = MockTokens::for_generation(&g);
            (0..16).map(|_| m.next_token()).collect::<Vec<_>>()
        };
        assert_eq!(chat("hi"), chat("hi"));
        assert_ne!(chat("hi"), chat("ho"));
        let mut c = MockTokens::for_generation(&completion);
        assert_ne!(
            chat("hi"),
            (0..16).map(|_| c.next_token()).collect::<Vec<_>>()
        );
    }
}
