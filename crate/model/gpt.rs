//! Forward and backward passes of the whole model, every layer written out (llm.c's
//! train_gpt2.c in spirit). Sizes: B batch, T time, C channels, NH heads, V vocabulary,
//! BT = B·T rows. Linear layers use GPT-2's Conv1D layout, W (in, out):
//!   forward  y  = x · W + b        matmul A·B
//!   backward dx = dy · Wᵀ          matmul A·Bᵀ
//!            dW += xᵀ · dy         matmul Aᵀ·B (accumulated)
//!            db += Σ_rows dy       sum_rows (accumulated)

use super::config::GptConfig;
use super::params::ParamLayout;
use crate::backend::{at, Backend};
use crate::cpu::matmul::MatmulShape;
use crate::error::Result;

/// The model's parameters and their gradients on a backend.
pub struct Gpt<B: Backend> {
    pub config: GptConfig,
    pub layout: ParamLayout,
    pub params: B::Buf,
    pub grads: B::Buf,
}

impl<B: Backend> Gpt<B> {
    /// A model with GPT-2's initialisation from `seed`.
    pub fn new(be: &mut B, config: GptConfig, seed: u64) -> Result<Gpt<B>> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        let params = be.upload(&layout.init(&config, seed))?;
        let grads = be.zeros(layout.total)?;
        Ok(Gpt { config, layout, params, grads })
    }

    /// A model with the given parameter values (a checkpoint).
    pub fn from_params(be: &mut B, config: GptConfig, values: &[f32]) -> Result<Gpt<B>> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        assert_eq!(values.len(), layout.total, "parameter count");
        let params = be.upload(values)?;
        let grads = be.zeros(layout.total)?;
        Ok(Gpt { config, layout, params, grads })
    }
}

/// What one block saves in the forward pass for the backward pass.
pub struct LayerActivations<T> {
    pub ln1: T,      // (BT, C)
    pub ln1_mean: T, // (BT)
    pub ln1_rstd: T, // (BT)
    pub qkv: T,      // (BT, 3C)
    pub att: T,      // (B, NH, T, T)
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
    pub logits: T,   // (BT, V)
    pub losses: T,   // (BT) weighted loss per position
    // gradient scratch, reused by every layer
    pub dlogits: T,   // (BT, V)
    pub dres: T,      // (BT, C) the gradient flowing down the residual stream
    pub dln: T,       // (BT, C)
    pub dqkv: T,      // (BT, 3C)
    pub datt: T,      // (B, NH, T, T)
    pub datty: T,     // (BT, C)
    pub dfch: T,      // (BT, 4C)
    pub dfch_gelu: T, // (BT, 4C)
}

impl<T> Activations<T> {
    pub fn new<B: Backend<Buf = T>>(be: &mut B, cfg: &GptConfig, b: usize, t: usize) -> Result<Activations<T>> {
        let (c, v, nh, bt) = (cfg.n_embd, cfg.vocab_size, cfg.n_head, b * t);
        let mut z = |n: usize| be.zeros(n);
        let mut layers = Vec::new();
        for _ in 0..cfg.n_layer {
            layers.push(LayerActivations {
                ln1: z(bt * c)?,
                ln1_mean: z(bt)?,
                ln1_rstd: z(bt)?,
                qkv: z(bt * 3 * c)?,
                att: z(b * nh * t * t)?,
                atty: z(bt * c)?,
                attproj: z(bt * c)?,
                res2: z(bt * c)?,
                ln2: z(bt * c)?,
                ln2_mean: z(bt)?,
                ln2_rstd: z(bt)?,
                fch: z(bt * 4 * c)?,
                fch_gelu: z(bt * 4 * c)?,
                fcproj: z(bt * c)?,
                res3: z(bt * c)?,
            });
        }
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
            dlogits: z(bt * v)?,
            dres: z(bt * c)?,
            dln: z(bt * c)?,
            dqkv: z(bt * 3 * c)?,
            datt: z(b * nh * t * t)?,
            datty: z(bt * c)?,
            dfch: z(bt * 4 * c)?,
            dfch_gelu: z(bt * 4 * c)?,
        })
    }
}

/// logits (BT, V) and the weighted per-position losses (BT) for the tokens, targets and
/// weights already written into `a`.
pub fn forward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>) {
    let cfg = &model.config;
    let (b, t, c, v, nh) = (a.b, a.t, cfg.n_embd, cfg.vocab_size, cfg.n_head);
    let bt = b * t;
    let (p, l) = (&model.params, &model.layout);

    be.embedding_forward(&a.encoded, &a.tokens, at(p, l.wte), at(p, l.wpe), b, t, c);
    let mut residual = &a.encoded;
    for (w, x) in l.layers.iter().zip(&a.layers) {
        // attention: x + c_proj(attn(c_attn(ln_1(x))))
        be.layernorm_forward(
            &x.ln1,
            &x.ln1_mean,
            &x.ln1_rstd,
            residual,
            at(p, w.ln_1_weight),
            at(p, w.ln_1_bias),
            bt,
            c,
        );
        be.matmul(
            at(&x.qkv, 0),
            at(&x.ln1, 0),
            at(p, w.c_attn_weight),
            Some(at(p, w.c_attn_bias)),
            MatmulShape::nn(bt, 3 * c, c),
            false,
        );
        be.attention_forward(&x.atty, &x.att, &x.qkv, b, t, c, nh, 0, t);
        be.matmul(
            at(&x.attproj, 0),
            at(&x.atty, 0),
            at(p, w.attn_proj_weight),
            Some(at(p, w.attn_proj_bias)),
            MatmulShape::nn(bt, c, c),
            false,
        );
        be.residual_forward(&x.res2, residual, &x.attproj, bt * c);
        // MLP: res2 + c_proj(gelu(c_fc(ln_2(res2))))
        be.layernorm_forward(
            &x.ln2,
            &x.ln2_mean,
            &x.ln2_rstd,
            &x.res2,
            at(p, w.ln_2_weight),
            at(p, w.ln_2_bias),
            bt,
            c,
        );
        be.matmul(
            at(&x.fch, 0),
            at(&x.ln2, 0),
            at(p, w.c_fc_weight),
            Some(at(p, w.c_fc_bias)),
            MatmulShape::nn(bt, 4 * c, c),
            false,
        );
        be.gelu_forward(&x.fch_gelu, &x.fch, bt * 4 * c);
        be.matmul(
            at(&x.fcproj, 0),
            at(&x.fch_gelu, 0),
            at(p, w.mlp_proj_weight),
            Some(at(p, w.mlp_proj_bias)),
            MatmulShape::nn(bt, c, 4 * c),
            false,
        );
        be.residual_forward(&x.res3, &x.res2, &x.fcproj, bt * c);
        residual = &x.res3;
    }
    be.layernorm_forward(&a.lnf, &a.lnf_mean, &a.lnf_rstd, residual, at(p, l.ln_f_weight), at(p, l.ln_f_bias), bt, c);
    // output layer tied to the token embedding: logits = lnf · wteᵀ, wte (V, C)
    be.matmul(at(&a.logits, 0), at(&a.lnf, 0), at(p, l.wte), None, MatmulShape::nt(bt, v, c), false);
    be.cross_entropy_forward(&a.losses, &a.logits, &a.targets, &a.weights, bt, v);
}

/// Adds the gradient of Σ losses to `model.grads` (zero them first for a fresh step).
/// `tokens` is the host copy of the batch's input tokens.
pub fn backward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>, tokens: &[u32]) -> Result<()> {
    let cfg = &model.config;
    let (b, t, c, v, nh) = (a.b, a.t, cfg.n_embd, cfg.vocab_size, cfg.n_head);
    let bt = b * t;
    let (p, g, l) = (&model.params, &model.grads, &model.layout);

    be.cross_entropy_backward(&a.dlogits, &a.logits, &a.targets, &a.weights, bt, v);
    // logits = lnf · wteᵀ
    be.matmul(at(g, l.wte), at(&a.dlogits, 0), at(&a.lnf, 0), None, MatmulShape::tn(v, c, bt), true);
    be.matmul(at(&a.dln, 0), at(&a.dlogits, 0), at(p, l.wte), None, MatmulShape::nn(bt, c, v), false);
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
        // res3 = res2 + fcproj: dres reaches both unchanged (dres2 = dres stays in place)
        // fcproj = fch_gelu · W + b
        be.matmul(
            at(g, w.mlp_proj_weight),
            at(&x.fch_gelu, 0),
            at(&a.dres, 0),
            None,
            MatmulShape::tn(4 * c, c, bt),
            true,
        );
        be.sum_rows(at(g, w.mlp_proj_bias), at(&a.dres, 0), bt, c, true)?;
        be.matmul(
            at(&a.dfch_gelu, 0),
            at(&a.dres, 0),
            at(p, w.mlp_proj_weight),
            None,
            MatmulShape::nt(bt, 4 * c, c),
            false,
        );
        be.gelu_backward(&a.dfch, &x.fch, &a.dfch_gelu, bt * 4 * c);
        // fch = ln2 · W + b
        be.matmul(at(g, w.c_fc_weight), at(&x.ln2, 0), at(&a.dfch, 0), None, MatmulShape::tn(c, 4 * c, bt), true);
        be.sum_rows(at(g, w.c_fc_bias), at(&a.dfch, 0), bt, 4 * c, true)?;
        be.matmul(at(&a.dln, 0), at(&a.dfch, 0), at(p, w.c_fc_weight), None, MatmulShape::nt(bt, c, 4 * c), false);
        // ln2 = layernorm(res2): dres += its gradient
        be.layernorm_backward(
            &a.dres,
            at(g, w.ln_2_weight),
            at(g, w.ln_2_bias),
            &a.dln,
            &x.res2,
            at(p, w.ln_2_weight),
            &x.ln2_mean,
            &x.ln2_rstd,
            bt,
            c,
        )?;
        // res2 = input + attproj; attproj = atty · W + b
        be.matmul(at(g, w.attn_proj_weight), at(&x.atty, 0), at(&a.dres, 0), None, MatmulShape::tn(c, c, bt), true);
        be.sum_rows(at(g, w.attn_proj_bias), at(&a.dres, 0), bt, c, true)?;
        be.matmul(at(&a.datty, 0), at(&a.dres, 0), at(p, w.attn_proj_weight), None, MatmulShape::nt(bt, c, c), false);
        be.attention_backward(&a.dqkv, &a.datt, &a.datty, &x.qkv, &x.att, b, t, c, nh);
        // qkv = ln1 · W + b
        be.matmul(at(g, w.c_attn_weight), at(&x.ln1, 0), at(&a.dqkv, 0), None, MatmulShape::tn(c, 3 * c, bt), true);
        be.sum_rows(at(g, w.c_attn_bias), at(&a.dqkv, 0), bt, 3 * c, true)?;
        be.matmul(at(&a.dln, 0), at(&a.dqkv, 0), at(p, w.c_attn_weight), None, MatmulShape::nt(bt, c, 3 * c), false);
        // ln1 = layernorm(input): dres += its gradient, now the gradient of the block's input
        be.layernorm_backward(
            &a.dres,
            at(g, w.ln_1_weight),
            at(g, w.ln_1_bias),
            &a.dln,
            input,
            at(p, w.ln_1_weight),
            &x.ln1_mean,
            &x.ln1_rstd,
            bt,
            c,
        )?;
    }
    be.embedding_backward(at(g, l.wte), at(g, l.wpe), &a.dres, tokens, b, t, c)
}
