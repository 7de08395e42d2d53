//! See inside a model: what the page's inspection views and `kiln logits` read. Each
//! call is one forward pass of a single row (B = 1) on the backend that trains the model,
//! in activations of its own that are dropped when it returns: a closed view costs nothing,
//! and the training step's buffers are never touched.
//!
//!   next_token:  the prompt's logits (T, V), the next token's probabilities (V), and
//!                optionally one head's attention weights (T, T)
//!   row_losses:  one training row's inputs, targets (shifted by one) and the loss at
//!                each position

use crate::backend::{at, Backend};
use crate::data::{make_batch, Row};
use crate::error::{KilnError, Result};
use crate::model::{forward, Activations, Gpt};

/// How many of the most likely next tokens the views and `kiln logits` list.
pub const TOP_K: usize = 10;

/// What one forward pass over a prompt shows.
pub struct Look {
    /// The prompt's ids (cut from the start to the model's context).
    pub ids: Vec<u32>,
    /// (T, V) the logits at every position when asked for them all, else (V) the last
    /// position's (a readback of V floats rather than T·V).
    pub logits: Vec<f32>,
    /// (V) the next token's probabilities, softmax(last logits) at temperature 1.
    pub probs: Vec<f32>,
    /// (T, T) one head's attention weights, query rows: row t is what token t attends
    /// to, zero above the diagonal (a token sees only itself and those before it).
    pub attention: Option<Vec<f32>>,
}

/// Which attention map to read: layer and head, from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadRef {
    pub layer: usize,
    pub head: usize,
}

/// Runs `ids` through the model and reads the next token's distribution and, when asked,
/// one head's attention. The weights come from the backend's own attention kernel: its
/// saved log-sum-exp per query row (lse) turns the queries and keys it read into
/// probabilities, p[t][s] = exp(q_t·k_s/√HS − lse_t), so a wrong kernel shows as rows that
/// do not sum to 1.
pub async fn next_token<B: Backend>(
    be: &mut B,
    model: &Gpt<B>,
    ids: &[u32],
    head: Option<HeadRef>,
    all_logits: bool,
) -> Result<Look> {
    let cfg = &model.config;
    if ids.is_empty() {
        return Err(KilnError::Config("inspect needs at least one token".into()));
    }
    if let Some(h) = head {
        if h.layer >= cfg.n_layer || h.head >= cfg.n_head {
            return Err(KilnError::Config(format!(
                "layer {} head {}: this model has {} layers of {} heads (counted from 0)",
                h.layer, h.head, cfg.n_layer, cfg.n_head
            )));
        }
    }
    let ids = ids[ids.len().saturating_sub(cfg.block_size)..].to_vec();
    let (t, v) = (ids.len(), cfg.vocab_size);
    let acts = Activations::for_model(be, model, 1, t)?;
    be.write_u32(&acts.tokens, 0, &ids);
    be.write_u32(&acts.targets, 0, &ids);
    be.write(&acts.weights, 0, &vec![0.0; t]);
    forward(be, model, &acts);
    let logits = if all_logits {
        be.read(&acts.logits).await?
    } else {
        let last = be.zeros(v)?;
        be.copy(at(&acts.logits, (t - 1) * v), at(&last, 0), v);
        be.read(&last).await?
    };
    let probs = softmax(&logits[logits.len() - v..], 1.0);
    if !probs.iter().all(|p| p.is_finite()) {
        return Err(KilnError::Model(
            "its outputs are NaN or infinite, so there are no probabilities to show: its weights are broken or too large"
                .into(),
        ));
    }
    let attention = match head {
        None => None,
        Some(h) => {
            let x = &acts.layers[h.layer];
            let (qkv, lse) = (be.read(&x.qkv).await?, be.read(&x.lse).await?);
            Some(attention_weights(&qkv, &lse, t, cfg.n_embd, cfg.n_head, cfg.n_kv_head(), h.head))
        }
    };
    Ok(Look { ids, logits, probs, attention })
}

/// (T, T) head `h`'s attention weights from qkv (T, QKV) and lse (NH, T) of one row; the
/// query head reads key head h / (NH / NKV) (grouped-query attention).
fn attention_weights(qkv: &[f32], lse: &[f32], t: usize, c: usize, nh: usize, nkv: usize, h: usize) -> Vec<f32> {
    let hs = c / nh;
    let width = crate::cpu::attention::qkv_width(c, nh, nkv);
    let key_head = h / (nh / nkv);
    let scale = 1.0 / (hs as f64).sqrt();
    let mut weights = vec![0.0f32; t * t];
    for q in 0..t {
        let query = &qkv[q * width + h * hs..][..hs];
        for s in 0..=q {
            let key = &qkv[s * width + c + key_head * hs..][..hs];
            let score = query.iter().zip(key).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale;
            weights[q * t + s] = (score - lse[h * t + q] as f64).exp() as f32;
        }
    }
    weights
}

/// softmax(logits / temperature), in f64; temperature 0 puts all the mass on the largest.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    if temperature <= 0.0 {
        let best = logits.iter().position(|&x| x as f64 == max).unwrap_or(0);
        return (0..logits.len()).map(|i| if i == best { 1.0 } else { 0.0 }).collect();
    }
    let tau = temperature as f64;
    let e: Vec<f64> = logits.iter().map(|&x| ((x as f64 - max) / tau).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|&x| (x / sum) as f32).collect()
}

/// The `k` most likely ids of `probs`, most likely first.
pub fn top_k(probs: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..probs.len() as u32).collect();
    order.sort_by(|&a, &b| probs[b as usize].total_cmp(&probs[a as usize]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// One of the most likely next tokens: its probability, and its probability at a
/// sampling temperature (the view's second bar).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopToken {
    pub id: u32,
    pub p: f32,
    pub p_at_temperature: f32,
}

/// The `k` most likely next tokens of a reading, most likely first, with their probability
/// at `temperature` too.
pub fn top_tokens(look: &Look, k: usize, temperature: f32) -> Vec<TopToken> {
    let v = look.probs.len();
    let hot = softmax(&look.logits[look.logits.len() - v..], temperature);
    top_k(&look.probs, k)
        .into_iter()
        .map(|id| TopToken { id, p: look.probs[id as usize], p_at_temperature: hot[id as usize] })
        .collect()
}

/// One row as the loss sees it: position i reads inputs[i] and is scored on targets[i]
/// (= inputs[i + 1]); masked positions (a fine-tuning prompt) have no loss.
pub struct RowLosses {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    /// −log p(target) at each position, None where the row's mask leaves it out.
    pub losses: Vec<Option<f32>>,
}

/// The loss at each position of `row` under the model, on its backend.
pub async fn row_losses<B: Backend>(be: &mut B, model: &Gpt<B>, row: &Row) -> Result<RowLosses> {
    let t = row.ids.len().saturating_sub(1).min(model.config.block_size);
    if t == 0 {
        return Err(KilnError::Data("this row has no targets".into()));
    }
    let batch = make_batch(&[row], 1, t);
    let acts = Activations::for_model(be, model, 1, t)?;
    be.write_u32(&acts.tokens, 0, &batch.tokens);
    be.write_u32(&acts.targets, 0, &batch.targets);
    be.write(&acts.weights, 0, &vec![1.0; t]);
    forward(be, model, &acts);
    let nll = be.read(&acts.losses).await?;
    let losses = nll.iter().zip(&batch.weights).map(|(&l, &w)| (w > 0.0).then_some(l)).collect();
    Ok(RowLosses { inputs: batch.tokens, targets: batch.targets, losses })
}
