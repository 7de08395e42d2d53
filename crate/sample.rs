//! Autoregressive generation with a KV cache: each new token runs the model on one row,
//! appending its keys and values to per-layer caches, so a token costs O(T) attention
//! instead of a whole forward pass. Temperature, top-k and top-p sampling on the host;
//! temperature 0 is greedy and deterministic.

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::error::{KilnError, Result};
use crate::model::gpt::{block_forward, final_norm, LayerActivations, LmHead, Rows};
use crate::model::Gpt;
use crate::rng::Rng;

/// How to sample (camelCase in JSON, as the JS API gives it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleConfig {
    pub max_tokens: usize,
    /// 0: greedy (always the most likely token).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: all).
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig { max_tokens: 100, temperature: 0.8, top_k: 40, top_p: 1.0, seed: 0 }
    }
}

impl SampleConfig {
    /// These settings with `options` on top (camelCase fields; null for none). Unknown
    /// fields are refused by name.
    pub fn with_options(&self, options: &serde_json::Value) -> crate::error::Result<SampleConfig> {
        let bad = |m: String| crate::error::KilnError::Config(m);
        let mut merged = serde_json::to_value(self).expect("JSON");
        match options {
            serde_json::Value::Null => {}
            serde_json::Value::Object(given) => {
                for (key, value) in given {
                    if merged.get(key).is_none() {
                        return Err(bad(format!("unknown sampling option {key:?}")));
                    }
                    merged[key] = value.clone();
                }
            }
            _ => return Err(bad("sampling options must be an object".into())),
        }
        serde_json::from_value(merged).map_err(|e| bad(format!("invalid sampling options: {e}")))
    }
}

impl SampleConfig {
    /// Chat answers: greedy (the answer the fine-tuning taught), short.
    pub fn for_chat() -> SampleConfig {
        SampleConfig { max_tokens: 128, temperature: 0.0, ..SampleConfig::default() }
    }
}

/// Picks the next token from one row of logits, never one of `never` (the model's
/// [`TokenRoles::never`](crate::tokenizer::TokenRoles)). NaN and infinite logits are never
/// picked; a row with no finite one left (a model with broken or huge weights) is an
/// error, not a panic.
pub fn sample_logits(logits: &[f32], cfg: &SampleConfig, never: &[u32], rng: &mut Rng) -> Result<u32> {
    let allowed = |i: usize| !never.contains(&(i as u32));
    if !logits.iter().enumerate().any(|(i, l)| allowed(i) && l.is_finite()) {
        return Err(KilnError::Model(
            "its outputs are NaN or infinite, so nothing can be sampled: its weights are broken or too large; retrain it or load another".into(),
        ));
    }
    if cfg.temperature <= 0.0 {
        let mut best = (f32::NEG_INFINITY, 0);
        for (i, &l) in logits.iter().enumerate() {
            if allowed(i) && l.is_finite() && (l > best.0 || best.0 == f32::NEG_INFINITY) {
                best = (l, i);
            }
        }
        return Ok(best.1 as u32);
    }
    let mut ranked: Vec<(usize, f32)> = logits
        .iter()
        .enumerate()
        .filter(|&(i, l)| allowed(i) && l.is_finite())
        .map(|(i, &l)| (i, l / cfg.temperature))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if cfg.top_k > 0 {
        ranked.truncate(cfg.top_k);
    }
    let max = ranked[0].1;
    let mut probs: Vec<f64> = ranked.iter().map(|&(_, l)| ((l - max) as f64).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if cfg.top_p < 1.0 {
        let mut cumulative = 0.0;
        let keep = probs.iter().position(|&p| {
            cumulative += p;
            cumulative >= cfg.top_p as f64
        });
        probs.truncate(keep.map_or(probs.len(), |k| k + 1));
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.uniform() * total;
    for (k, p) in probs.iter().enumerate() {
        u -= p;
        if u <= 0.0 {
            return Ok(ranked[k].0 as u32);
        }
    }
    Ok(ranked[probs.len() - 1].0 as u32)
}

/// The KV caches of `seqs` sequences decoded together (all at the same position: the
/// K candidates of one prompt), up to the model's context, and one-row scratch each.
pub struct Decoder<T> {
    seqs: usize,
    layers: Vec<LayerActivations<T>>,
    tokens: T,
    x: T,
    lnf: [T; 3],
    logits: T,
}

impl<T> Decoder<T> {
    /// A decoder for one sequence.
    pub fn new<B: Backend<Buf = T>>(be: &mut B, model: &Gpt<B>) -> Result<Decoder<T>> {
        Decoder::batched(be, model, 1)
    }

    /// A decoder for `seqs` sequences at once.
    pub fn batched<B: Backend<Buf = T>>(be: &mut B, model: &Gpt<B>, seqs: usize) -> Result<Decoder<T>> {
        let cfg = &model.config;
        let (c, s) = (cfg.n_embd, seqs);
        let layers =
            (0..cfg.n_layer).map(|l| LayerActivations::for_decoding(be, model, l, s)).collect::<Result<_>>()?;
        Ok(Decoder {
            seqs,
            layers,
            tokens: be.zeros(s)?,
            x: be.zeros(s * c)?,
            lnf: [be.zeros(s * c)?, be.zeros(s)?, be.zeros(s)?],
            logits: be.zeros(s * cfg.vocab_size)?,
        })
    }

    pub fn seqs(&self) -> usize {
        self.seqs
    }

    /// Runs `token` at position `pos` of a one-sequence decoder.
    pub fn step<B: Backend<Buf = T>>(&self, be: &mut B, model: &Gpt<B>, token: u32, pos: usize) {
        self.step_rows(be, model, &[token], pos)
    }

    /// Runs one token per sequence (`tokens`, one each) at position `pos` through the same
    /// blocks as training: appends their keys and values to the caches and queues the
    /// next logits (seqs, V).
    pub fn step_rows<B: Backend<Buf = T>>(&self, be: &mut B, model: &Gpt<B>, tokens: &[u32], pos: usize) {
        let (c, t_cap, s) = (model.config.n_embd, model.config.block_size, self.seqs);
        assert!(pos < t_cap, "position {pos} is past the context of {t_cap}");
        assert_eq!(tokens.len(), s, "one token per sequence");
        let (p, l) = (&model.weights, &model.layout);
        be.write_u32(&self.tokens, 0, tokens);
        be.embedding_forward(&self.x, &self.tokens, p.matrix(l.wte), l.wpe.map(|wpe| p.matrix(wpe + pos * c)), s, 1, c);
        let mut residual = &self.x;
        for (i, d) in self.layers.iter().enumerate() {
            block_forward(be, model, i, d, residual, Rows::decoding(s, pos, t_cap));
            residual = &d.res3;
        }
        let [out, mean, rstd] = &self.lnf;
        final_norm(be, model, [out, mean, rstd], residual, s);
        LmHead::logits(be, model, &self.logits, out, s);
    }

    /// The logits queued by the last step, (seqs, V).
    pub async fn logits<B: Backend<Buf = T>>(&self, be: &mut B) -> Result<Vec<f32>> {
        be.read(&self.logits).await
    }
}

/// log softmax(logits)[token], in f64: a token's log-probability under the model
/// (temperature 1, whatever the sampling temperature was).
pub fn log_prob(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    (logits[token as usize] as f64 - max - sum.ln()) as f32
}

/// One sampled answer: its tokens (the stop token last, when it ended with one) and each
/// token's log-probability under the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    /// Ended with `<|end|>` or `<|eos|>` (else cut by the token limit or the context).
    pub ended: bool,
}

impl Candidate {
    /// The answer's tokens without the stop token.
    pub fn content(&self) -> &[u32] {
        &self.ids[..self.ids.len() - self.ended as usize]
    }
}

/// The prompt a decoder feeds: the model's start token (`<|bos|>`) when empty; its end,
/// leaving room for one new token, when longer than the context.
fn in_context(prompt: &[u32], t_cap: usize, start: u32) -> Vec<u32> {
    let start = [start];
    let prompt = if prompt.is_empty() { &start[..] } else { prompt };
    prompt[prompt.len().saturating_sub(t_cap - 1)..].to_vec()
}

/// `decoder.seqs()` answers to one prompt, decoded together in one batch: row r samples
/// with the seed `cfg.seed + r`, so it is the answer [`generate`] gives with that seed.
pub async fn sample_candidates<B: Backend>(
    be: &mut B,
    model: &Gpt<B>,
    decoder: &Decoder<B::Buf>,
    prompt: &[u32],
    cfg: &SampleConfig,
) -> Result<Vec<Candidate>> {
    let (k, t_cap, v) = (decoder.seqs(), model.config.block_size, model.config.vocab_size);
    let prompt = in_context(prompt, t_cap, model.roles.start());
    for (pos, &token) in prompt.iter().enumerate() {
        decoder.step_rows(be, model, &vec![token; k], pos);
    }
    let mut rngs: Vec<Rng> = (0..k).map(|r| Rng::new(cfg.seed.wrapping_add(r as u64))).collect();
    let mut out = vec![Candidate { ids: Vec::new(), logprobs: Vec::new(), ended: false }; k];
    let mut active = vec![cfg.max_tokens > 0; k];
    let mut pos = prompt.len();
    while active.iter().any(|&a| a) {
        let logits = decoder.logits(be).await?;
        let mut next = vec![model.roles.pad; k];
        for r in 0..k {
            if !active[r] {
                continue;
            }
            let row = &logits[r * v..][..v];
            let token = sample_logits(row, cfg, &model.roles.never, &mut rngs[r])?;
            let cand = &mut out[r];
            cand.ids.push(token);
            cand.logprobs.push(log_prob(row, token));
            if model.roles.stop.contains(&token) {
                cand.ended = true;
                active[r] = false;
            } else if cand.ids.len() >= cfg.max_tokens || pos >= t_cap {
                active[r] = false;
            } else {
                next[r] = token;
            }
        }
        if active.iter().any(|&a| a) {
            decoder.step_rows(be, model, &next, pos);
            pos += 1;
        }
    }
    Ok(out)
}

/// A generation in progress, one token per [`Generation::next`] (to stream to a page).
pub struct Generation {
    cfg: SampleConfig,
    rng: Rng,
    pos: usize,
    produced: usize,
    done: bool,
    stop: Option<u32>,
}

impl Generation {
    /// Feeds `prompt` (just `<|bos|>` when empty; its end, if longer than the context)
    /// into the decoder's caches.
    pub fn start<B: Backend>(
        be: &mut B,
        model: &Gpt<B>,
        decoder: &Decoder<B::Buf>,
        prompt: &[u32],
        cfg: &SampleConfig,
    ) -> Generation {
        let t_cap = model.config.block_size;
        let prompt = in_context(prompt, t_cap, model.roles.start());
        for (pos, &token) in prompt.iter().enumerate() {
            decoder.step(be, model, token, pos);
        }
        Generation {
            cfg: cfg.clone(),
            rng: Rng::new(cfg.seed),
            pos: prompt.len(),
            produced: 0,
            done: cfg.max_tokens == 0,
            stop: None,
        }
    }

    /// The token that ended the generation (`<|eos|>` or `<|end|>`), if one did.
    pub fn stop_token(&self) -> Option<u32> {
        self.stop
    }

    /// The next token; None once a stop token (the model's stop tokens), `max_tokens` or the end of the
    /// context is reached.
    pub async fn next<B: Backend>(
        &mut self,
        be: &mut B,
        model: &Gpt<B>,
        decoder: &Decoder<B::Buf>,
    ) -> Result<Option<u32>> {
        if self.done {
            return Ok(None);
        }
        let logits = decoder.logits(be).await?;
        let next = sample_logits(&logits, &self.cfg, &model.roles.never, &mut self.rng)?;
        if model.roles.stop.contains(&next) {
            self.done = true;
            self.stop = Some(next);
            return Ok(None);
        }
        self.produced += 1;
        if self.produced >= self.cfg.max_tokens || self.pos >= model.config.block_size {
            self.done = true;
        } else {
            decoder.step(be, model, next, self.pos);
            self.pos += 1;
        }
        Ok(Some(next))
    }
}

/// Continues `prompt` until `<|eos|>` or `<|end|>` (the model's stop tokens), `max_tokens` or the end of
/// the context. `on_token` sees each new token as it is chosen (return false to stop).
/// Returns the new tokens.
pub async fn generate<B: Backend>(
    be: &mut B,
    model: &Gpt<B>,
    decoder: &Decoder<B::Buf>,
    prompt: &[u32],
    cfg: &SampleConfig,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    let mut generation = Generation::start(be, model, decoder, prompt, cfg);
    let mut out = Vec::new();
    while let Some(token) = generation.next(be, model, decoder).await? {
        out.push(token);
        if !on_token(token) {
            break;
        }
    }
    Ok(out)
}
