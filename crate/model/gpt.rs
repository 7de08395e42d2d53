//! Forward and backward passes of the whole model, every layer written out (llm.c's
//! train_gpt2.c in spirit). Sizes: B batch, T time, C channels, NH heads, V vocabulary,
//! BT = B·T rows. Linear layers use GPT-2's Conv1D layout, W (in, out):
//!   forward  y  = x · W + b        matmul A·B
//!   backward dx = dy · Wᵀ          matmul A·Bᵀ
//!            dW += xᵀ · dy         matmul Aᵀ·B (accumulated)
//!            db += Σ_rows dy       sum_rows (accumulated)

use super::config::GptConfig;
use super::params::{LayerParams, ParamLayout};
use crate::backend::{at, At, Backend};
use crate::cpu::matmul::MatmulShape;
use crate::error::Result;

/// The model's parameters and their gradients on a backend.
pub struct Gpt<B: Backend> {
    pub config: GptConfig,
    pub layout: ParamLayout,
    pub params: B::Buf,
    /// None for a frozen model (PPO's reference and reward models): no gradient buffer.
    grads: Option<B::Buf>,
}

impl<B: Backend> Gpt<B> {
    /// A model with GPT-2's initialisation from `seed`.
    pub fn new(be: &mut B, config: GptConfig, seed: u64) -> Result<Gpt<B>> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        let params = be.upload(&layout.init(&config, seed))?;
        let grads = Some(be.zeros(layout.total)?);
        Ok(Gpt { config, layout, params, grads })
    }

    /// A model with the given parameter values (a checkpoint).
    pub fn from_params(be: &mut B, config: GptConfig, values: &[f32]) -> Result<Gpt<B>> {
        Gpt::from_layout(be, config, ParamLayout::new(&config), values, true)
    }

    /// A model of any layout (one with a scalar head, say) with the given values; a
    /// frozen one (`trainable` false) gets no gradient buffer.
    pub fn from_layout(
        be: &mut B,
        config: GptConfig,
        layout: ParamLayout,
        values: &[f32],
        trainable: bool,
    ) -> Result<Gpt<B>> {
        config.validate()?;
        assert_eq!(values.len(), layout.total, "parameter count");
        let params = be.upload(values)?;
        let grads = if trainable { Some(be.zeros(layout.total)?) } else { None };
        Ok(Gpt { config, layout, params, grads })
    }

    /// The gradient buffer (same layout as the parameters).
    pub fn grads(&self) -> &B::Buf {
        self.grads.as_ref().expect("a frozen model has no gradients")
    }
}

/// What one block saves in the forward pass for the backward pass.
pub struct LayerActivations<T> {
    pub ln1: T,      // (BT, C)
    pub ln1_mean: T, // (BT)
    pub ln1_rstd: T, // (BT)
    pub qkv: T,      // (BT, 3C)
    pub lse: T,      // (B, NH, T) each query row's softmax normaliser (no score matrix)
    pub atty: T,     // (BT, C) attention output, heads side by side
    pub attproj: T,  // (BT, C)
    pub res2: T,     // (BT, C) residual after attention
    pub ln2: T,      // (BT, C)
    pub ln2_mean: T, // (BT)
    pub ln2_rstd: T, // (BT)
    pub fch: T,      // (BT, 4C)
    pub fch_gelu: T, // (BT, 4C)
    pub fcproj: T,   // (BT, C)
    pub res3: T,     // (BT, C) residual after the MLP: the block's output
    /// Decoding several sequences at once: (B, 3C) the new rows' qkv and (B, C) their
    /// attention output, before they are scattered into (gathered from) the caches,
    /// where each sequence's rows lie T_cap apart.
    pub new_rows: Option<(T, T)>,
}

impl<T> LayerActivations<T> {
    /// One block's buffers for B × T rows; `kv_rows` rows of qkv and attention output
    /// (B·T in training, the whole context for a KV cache).
    fn new<B: Backend<Buf = T>>(be: &mut B, cfg: &GptConfig, rows: usize, kv_rows: usize, lse: usize) -> Result<Self> {
        let c = cfg.n_embd;
        let new_rows =
            if rows > 1 && kv_rows > rows { Some((be.zeros(rows * 3 * c)?, be.zeros(rows * c)?)) } else { None };
        let mut z = |n: usize| be.zeros(n);
        Ok(LayerActivations {
            new_rows,
            ln1: z(rows * c)?,
            ln1_mean: z(rows)?,
            ln1_rstd: z(rows)?,
            qkv: z(kv_rows * 3 * c)?,
            lse: z(lse)?,
            atty: z(kv_rows * c)?,
            attproj: z(rows * c)?,
            res2: z(rows * c)?,
            ln2: z(rows * c)?,
            ln2_mean: z(rows)?,
            ln2_rstd: z(rows)?,
            fch: z(rows * 4 * c)?,
            fch_gelu: z(rows * 4 * c)?,
            fcproj: z(rows * c)?,
            res3: z(rows * c)?,
        })
    }

    /// One block's KV caches (the context's keys and values) for `seqs` sequences
    /// decoded together, and scratch for one new row each.
    pub fn for_decoding<B: Backend<Buf = T>>(be: &mut B, cfg: &GptConfig, seqs: usize) -> Result<Self> {
        let t = cfg.block_size;
        Self::new(be, cfg, seqs, seqs * t, seqs * cfg.n_head * t)
    }
}

/// Everything a forward and backward pass of B × T needs besides the parameters.
pub struct Activations<T> {
    pub b: usize,
    pub t: usize,
    pub tokens: T,  // (BT) u32
    pub targets: T, // (BT) u32
    pub weights: T, // (BT) loss weight per position
    pub encoded: T, // (BT, C)
    pub layers: Vec<LayerActivations<T>>,
    pub lnf: T,      // (BT, C)
    pub lnf_mean: T, // (BT)
    pub lnf_rstd: T, // (BT)
    pub logits: T,   // (BT, V); after the backward pass, their gradient (in place)
    pub losses: T,   // (BT) weighted loss per position
    pub values: T,   // (BT) a scalar head's output per position (reward, value)
    pub dvalues: T,  // (BT) the loss's gradient with respect to them
    pub loss_sum: T, // (1) Σ losses over a step's micro-batches, summed on the device
    // gradient scratch, reused by every layer
    pub dres: T,      // (BT, C) the gradient flowing down the residual stream
    pub dln: T,       // (BT, C)
    pub dqkv: T,      // (BT, 3C)
    pub delta: T,     // (B, NH, T) attention backward's dout·out per query row
    pub datty: T,     // (BT, C)
    pub dfch: T,      // (BT, 4C)
    pub dfch_gelu: T, // (BT, 4C)
}

impl<T> Activations<T> {
    pub fn new<B: Backend<Buf = T>>(be: &mut B, cfg: &GptConfig, b: usize, t: usize) -> Result<Activations<T>> {
        let (c, v, nh, bt) = (cfg.n_embd, cfg.vocab_size, cfg.n_head, b * t);
        let mut layers = Vec::new();
        for _ in 0..cfg.n_layer {
            layers.push(LayerActivations::new(be, cfg, bt, bt, b * nh * t)?);
        }
        let mut z = |n: usize| be.zeros(n);
        Ok(Activations {
            b,
            t,
            tokens: z(bt)?,
            targets: z(bt)?,
            weights: z(bt)?,
            encoded: z(bt * c)?,
            layers,
            lnf: z(bt * c)?,
            lnf_mean: z(bt)?,
            lnf_rstd: z(bt)?,
            logits: z(bt * v)?,
            losses: z(bt)?,
            values: z(bt)?,
            dvalues: z(bt)?,
            loss_sum: z(1)?,
            dres: z(bt * c)?,
            dln: z(bt * c)?,
            dqkv: z(bt * 3 * c)?,
            delta: z(b * nh * t)?,
            datty: z(bt * c)?,
            dfch: z(bt * 4 * c)?,
            dfch_gelu: z(bt * 4 * c)?,
        })
    }
}

/// Which rows of a (B, T) batch a block computes: every row in training (t0 = 0,
/// T_cap = T), only the newest position of each of B sequences when decoding with a KV
/// cache (t0 = T − 1, T_cap = the context the caches hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    pub b: usize,
    pub t: usize,
    pub t0: usize,
    pub t_cap: usize,
}

impl Rows {
    pub fn training(b: usize, t: usize) -> Rows {
        Rows { b, t, t0: 0, t_cap: t }
    }

    /// Position `pos` of `seqs` sequences that are all at the same position.
    pub fn decoding(seqs: usize, pos: usize, t_cap: usize) -> Rows {
        Rows { b: seqs, t: pos + 1, t0: pos, t_cap }
    }

    /// Rows the position-wise ops (layernorm, linear layers, GELU) run on.
    pub fn n(&self) -> usize {
        self.b * (self.t - self.t0)
    }
}

/// One transformer block on `residual`, leaving its output in `x.res3`:
///   res2 = residual + c_proj(attn(c_attn(ln_1(residual))))
///   res3 = res2 + mlp.c_proj(gelu(c_fc(ln_2(res2))))
/// The new rows' keys and values land in `x.qkv` at row t0 (the KV cache when decoding).
pub fn block_forward<B: Backend>(
    be: &mut B,
    model: &Gpt<B>,
    w: &LayerParams,
    x: &LayerActivations<B::Buf>,
    residual: &B::Buf,
    rows: Rows,
) {
    let (c, nh, n, p) = (model.config.n_embd, model.config.n_head, rows.n(), &model.params);
    let linear = |be: &mut B, out: At<B::Buf>, inp: At<B::Buf>, weight: usize, bias: usize, k: usize, m: usize| {
        be.matmul(out, inp, at(p, weight), Some(at(p, bias)), MatmulShape::nn(n, m, k), false);
    };
    be.layernorm_forward(&x.ln1, &x.ln1_mean, &x.ln1_rstd, residual, at(p, w.ln_1_weight), at(p, w.ln_1_bias), n, c);
    if rows.b == 1 || rows.t0 == 0 && rows.t == rows.t_cap {
        // The new rows lie together in the (B, T_cap, 3C) cache: write them in place.
        linear(be, at(&x.qkv, rows.t0 * 3 * c), at(&x.ln1, 0), w.c_attn_weight, w.c_attn_bias, c, 3 * c);
        be.attention_forward(&x.atty, &x.lse, &x.qkv, rows.b, rows.t, c, nh, rows.t0, rows.t_cap);
        linear(be, at(&x.attproj, 0), at(&x.atty, rows.t0 * c), w.attn_proj_weight, w.attn_proj_bias, c, c);
    } else {
        // B sequences at position t0: sequence b's row is b·T_cap + t0 of its cache.
        let (new_qkv, new_atty) = x.new_rows.as_ref().expect("decoding scratch");
        linear(be, at(new_qkv, 0), at(&x.ln1, 0), w.c_attn_weight, w.c_attn_bias, c, 3 * c);
        for b in 0..rows.b {
            be.copy(at(new_qkv, b * 3 * c), at(&x.qkv, (b * rows.t_cap + rows.t0) * 3 * c), 3 * c);
        }
        be.attention_forward(&x.atty, &x.lse, &x.qkv, rows.b, rows.t, c, nh, rows.t0, rows.t_cap);
        for b in 0..rows.b {
            be.copy(at(&x.atty, (b * rows.t_cap + rows.t0) * c), at(new_atty, b * c), c);
        }
        linear(be, at(&x.attproj, 0), at(new_atty, 0), w.attn_proj_weight, w.attn_proj_bias, c, c);
    }
    be.residual_forward(&x.res2, residual, &x.attproj, n * c);
    be.layernorm_forward(&x.ln2, &x.ln2_mean, &x.ln2_rstd, &x.res2, at(p, w.ln_2_weight), at(p, w.ln_2_bias), n, c);
    linear(be, at(&x.fch, 0), at(&x.ln2, 0), w.c_fc_weight, w.c_fc_bias, c, 4 * c);
    be.gelu_forward(&x.fch_gelu, &x.fch, n * 4 * c);
    linear(be, at(&x.fcproj, 0), at(&x.fch_gelu, 0), w.mlp_proj_weight, w.mlp_proj_bias, 4 * c, c);
    be.residual_forward(&x.res3, &x.res2, &x.fcproj, n * c);
}

/// The trunk's last op, the final LayerNorm: out (n, C) = ln_f(residual).
pub fn final_norm<B: Backend>(be: &mut B, model: &Gpt<B>, lnf: [&B::Buf; 3], residual: &B::Buf, n: usize) {
    let (c, p, l) = (model.config.n_embd, &model.params, &model.layout);
    let [out, mean, rstd] = lnf;
    be.layernorm_forward(out, mean, rstd, residual, at(p, l.ln_f_weight), at(p, l.ln_f_bias), n, c);
}

/// The trunk: token + position embeddings, the blocks, the final LayerNorm, leaving the
/// features (BT, C) in `a.lnf`. Heads read them: [`LmHead`] here; a scalar head (reward,
/// value) reads chosen rows of the same features.
pub fn trunk_forward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>) {
    let (b, t, c) = (a.b, a.t, model.config.n_embd);
    let (p, l) = (&model.params, &model.layout);
    be.embedding_forward(&a.encoded, &a.tokens, at(p, l.wte), at(p, l.wpe), b, t, c);
    let mut residual = &a.encoded;
    for (w, x) in l.layers.iter().zip(&a.layers) {
        block_forward(be, model, w, x, residual, Rows::training(b, t));
        residual = &x.res3;
    }
    final_norm(be, model, [&a.lnf, &a.lnf_mean, &a.lnf_rstd], residual, b * t);
}

/// The language-model head: logits over the vocabulary from the trunk's features, the
/// output layer tied to the token embedding (so it has no tensors of its own), and
/// cross-entropy with a weight per position — the loss every stage ends in.
pub struct LmHead;

impl LmHead {
    /// logits (n, V) = features (n, C) · wteᵀ.
    pub fn logits<B: Backend>(be: &mut B, model: &Gpt<B>, logits: &B::Buf, features: &B::Buf, n: usize) {
        let (c, v) = (model.config.n_embd, model.config.vocab_size);
        be.matmul(
            at(logits, 0),
            at(features, 0),
            at(&model.params, model.layout.wte),
            None,
            MatmulShape::nt(n, v, c),
            false,
        );
    }

    /// logits and the weighted per-position losses (BT).
    pub fn forward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>) {
        let (bt, v) = (a.b * a.t, model.config.vocab_size);
        Self::logits(be, model, &a.logits, &a.lnf, bt);
        be.cross_entropy_forward(&a.losses, &a.logits, &a.targets, &a.weights, bt, v);
    }

    /// d(Σ losses)/dlogits, then dwte += dlogitsᵀ · features and the features' gradient
    /// into `a.dln` (overwritten).
    pub fn backward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>) {
        let (bt, c, v) = (a.b * a.t, model.config.n_embd, model.config.vocab_size);
        let (p, g, l) = (&model.params, model.grads(), &model.layout);
        // the gradient overwrites the logits (which the forward pass is done with)
        be.cross_entropy_backward(&a.logits, &a.targets, &a.weights, bt, v);
        let dlogits = &a.logits;
        be.matmul(at(g, l.wte), at(dlogits, 0), at(&a.lnf, 0), None, MatmulShape::tn(v, c, bt), true);
        be.matmul(at(&a.dln, 0), at(dlogits, 0), at(p, l.wte), None, MatmulShape::nn(bt, c, v), false);
    }
}

/// A scalar head (reward model, value function): one number per position,
///   values (n) = features (n, C) · wᵀ + b,   w (1, C), b (1)
/// read where the stage needs it (a reward at an answer's last token, a value at every
/// answer token). Its tensors follow GPT-2's in the layout.
pub struct ScalarHead;

impl ScalarHead {
    fn params<B: Backend>(model: &Gpt<B>) -> crate::model::params::ScalarHeadParams {
        model.layout.scalar_head.expect("the model has a scalar head")
    }

    /// values (BT) from the trunk's features `a.lnf`.
    pub fn forward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>) {
        let (bt, c, h) = (a.b * a.t, model.config.n_embd, Self::params(model));
        let p = &model.params;
        be.matmul(
            at(&a.values, 0),
            at(&a.lnf, 0),
            at(p, h.weight),
            Some(at(p, h.bias)),
            MatmulShape::nt(bt, 1, c),
            false,
        );
    }

    /// From d loss/d values in `a.dvalues`: dw += dvaluesᵀ · features, db += Σ dvalues,
    /// and, when `into_trunk`, the features' gradient into `a.dln` (added to what the LM
    /// head left there when `accumulate`, else overwritten).
    pub fn backward<B: Backend>(
        be: &mut B,
        model: &Gpt<B>,
        a: &Activations<B::Buf>,
        accumulate: bool,
        into_trunk: bool,
    ) -> Result<()> {
        let (bt, c, h) = (a.b * a.t, model.config.n_embd, Self::params(model));
        let (p, g) = (&model.params, model.grads());
        be.matmul(at(g, h.weight), at(&a.dvalues, 0), at(&a.lnf, 0), None, MatmulShape::tn(1, c, bt), true);
        be.sum_rows(at(g, h.bias), at(&a.dvalues, 0), bt, 1, true)?;
        if into_trunk {
            be.matmul(at(&a.dln, 0), at(&a.dvalues, 0), at(p, h.weight), None, MatmulShape::nn(bt, c, 1), accumulate);
        } else if !accumulate {
            be.clear(&a.dln);
        }
        Ok(())
    }
}

/// logits (BT, V) and the weighted per-position losses (BT) for the tokens, targets and
/// weights already written into `a`.
pub fn forward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>) {
    trunk_forward(be, model, a);
    LmHead::forward(be, model, a);
}

/// Backward of a linear layer y (n, out) = x (n, in) · W (in, out) + b, given dy:
///   dW += xᵀ · dy,   db += Σ_rows dy,   dx = dy · Wᵀ (overwritten).
fn linear_backward<B: Backend>(
    be: &mut B,
    model: &Gpt<B>,
    dx: &B::Buf,
    x: &B::Buf,
    dy: &B::Buf,
    weight: usize,
    bias: usize,
    inp: usize,
    out: usize,
    n: usize,
) -> Result<()> {
    let (p, g) = (&model.params, model.grads());
    be.matmul(at(g, weight), at(x, 0), at(dy, 0), None, MatmulShape::tn(inp, out, n), true);
    be.sum_rows(at(g, bias), at(dy, 0), n, out, true)?;
    be.matmul(at(dx, 0), at(dy, 0), at(p, weight), None, MatmulShape::nt(n, inp, out), false);
    Ok(())
}

/// Adds the gradient of Σ losses to `model.grads` (zero them first for a fresh step).
/// `tokens` is the host copy of the batch's input tokens.
pub fn backward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>, tokens: &[u32]) -> Result<()> {
    LmHead::backward(be, model, a);
    trunk_backward(be, model, a, tokens)
}

/// The trunk's backward pass from the gradient of its features in `a.dln`.
pub fn trunk_backward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>, tokens: &[u32]) -> Result<()> {
    let cfg = &model.config;
    let (b, t, c, nh) = (a.b, a.t, cfg.n_embd, cfg.n_head);
    let bt = b * t;
    let (p, g, l) = (&model.params, model.grads(), &model.layout);
    let last = a.layers.last().map_or(&a.encoded, |x| &x.res3);
    be.clear(&a.dres);
    be.layernorm_backward(
        &a.dres,
        at(g, l.ln_f_weight),
        at(g, l.ln_f_bias),
        &a.dln,
        last,
        at(p, l.ln_f_weight),
        &a.lnf_mean,
        &a.lnf_rstd,
        bt,
        c,
    )?;

    for (i, (w, x)) in l.layers.iter().zip(&a.layers).enumerate().rev() {
        let input = if i == 0 { &a.encoded } else { &a.layers[i - 1].res3 };
        let layernorm_backward = |be: &mut B,
                                  inp: &B::Buf,
                                  weight: usize,
                                  bias: usize,
                                  mean: &B::Buf,
                                  rstd: &B::Buf| {
            // dres += the gradient through the LayerNorm of `inp`
            be.layernorm_backward(&a.dres, at(g, weight), at(g, bias), &a.dln, inp, at(p, weight), mean, rstd, bt, c)
        };
        // res3 = res2 + fcproj: dres reaches both unchanged (dres2 = dres stays in place)
        linear_backward(
            be,
            model,
            &a.dfch_gelu,
            &x.fch_gelu,
            &a.dres,
            w.mlp_proj_weight,
            w.mlp_proj_bias,
            4 * c,
            c,
            bt,
        )?;
        be.gelu_backward(&a.dfch, &x.fch, &a.dfch_gelu, bt * 4 * c);
        linear_backward(be, model, &a.dln, &x.ln2, &a.dfch, w.c_fc_weight, w.c_fc_bias, c, 4 * c, bt)?;
        layernorm_backward(be, &x.res2, w.ln_2_weight, w.ln_2_bias, &x.ln2_mean, &x.ln2_rstd)?;
        // res2 = input + attproj
        linear_backward(be, model, &a.datty, &x.atty, &a.dres, w.attn_proj_weight, w.attn_proj_bias, c, c, bt)?;
        be.attention_backward(&a.dqkv, &a.delta, &a.datty, &x.qkv, &x.atty, &x.lse, b, t, c, nh);
        linear_backward(be, model, &a.dln, &x.ln1, &a.dqkv, w.c_attn_weight, w.c_attn_bias, c, 3 * c, bt)?;
        // now dres is the gradient of the block's input
        layernorm_backward(be, input, w.ln_1_weight, w.ln_1_bias, &x.ln1_mean, &x.ln1_rstd)?;
    }
    be.embedding_backward(at(g, l.wte), at(g, l.wpe), &a.dres, tokens, b, t, c)
}
