//! Forward and backward passes of the whole model, every layer written out (llm.c's
//! train_gpt2.c in spirit), once for every family: a block's norms, linear layers and
//! activation are the family's pieces (`layers.rs`). Sizes: B batch, T time, C channels,
//! NH query heads, NKV key/value heads, HS = C / NH, V vocabulary, BT = B·T rows,
//! QKV = C + 2·NKV·HS (3C without grouped-query attention), FC the MLP's first product
//! (4C, or Llama's gate|up 2H), H its activation's width (4C, or H).

use super::config::GptConfig;
use super::layers::{BlockParts, GradsTo, NormStats};
use super::lora::{Lora, LoraConfig, LoraLayout, LoraScratch, Slot};
use super::params::ParamLayout;
use super::weights::Weights;
use crate::backend::{at, At, Backend};
use crate::cpu::matmul::MatmulShape;
use crate::cpu::rope::rope_inv_freq;
use crate::error::Result;
use crate::tokenizer::TokenRoles;

/// The model's parameters and their gradients on a backend.
pub struct Gpt<B: Backend> {
    pub config: GptConfig,
    pub layout: ParamLayout,
    /// Its parameters: f32, or a frozen model's matrices in 16 bits (`weights.rs`).
    pub weights: Weights<B::Buf>,
    /// None for a frozen model (PPO's reference and reward models) and under LoRA: no
    /// gradient buffer.
    grads: Option<B::Buf>,
    /// Low-rank adapters on the frozen parameters, trained in their place.
    pub lora: Option<Lora<B>>,
    /// Where a frozen norm's weight gradient goes under LoRA (2C, never read): the norm
    /// kernels always write one, and the input gradient is what the adapters below need.
    sink: Option<B::Buf>,
    /// RoPE's inv_freq (HS/2) for the rotary families, None for GPT-2.
    rope: Option<B::Buf>,
    /// Which of its vocabulary's ids start, end and pad a generation (Kiln's unless set).
    pub roles: TokenRoles,
}

impl<B: Backend> Gpt<B> {
    /// A model with GPT-2's initialisation from `seed`.
    pub fn new(be: &mut B, config: GptConfig, seed: u64) -> Result<Gpt<B>> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        let values = layout.init(&config, seed);
        Gpt::from_layout(be, config, layout, &values, true)
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
        let weights = Weights::upload(be, &layout, values, !trainable)?;
        let grads = if trainable { Some(be.zeros(layout.total)?) } else { None };
        let rope = match config.llama() {
            Some(l) => Some(be.upload(&rope_inv_freq(config.head_size(), l.rope_theta, l.rope_scaling))?),
            None => None,
        };
        Ok(Gpt { config, layout, weights, grads, lora: None, sink: None, rope, roles: TokenRoles::kiln() })
    }

    /// Freezes the model and trains adapters in its place: new ones (PEFT's
    /// initialisation from `seed`, a scalar head starting as the base's) or the given
    /// values.
    pub fn add_lora(&mut self, be: &mut B, config: LoraConfig, values: Option<&[f32]>, seed: u64) -> Result<()> {
        let layout = LoraLayout::new(&self.config, &self.layout, config)?;
        let lora = match values {
            Some(v) => Lora::new(be, layout, v)?,
            None => {
                let lora = Lora::new(be, layout.clone(), &layout.init(seed))?;
                if let (Some(to), Some(from)) = (layout.head, self.layout.scalar_head) {
                    be.copy(self.weights.vector(from.weight), at(&lora.params, to.weight), self.config.n_embd);
                    be.copy(self.weights.vector(from.bias), at(&lora.params, to.bias), 1);
                }
                lora
            }
        };
        self.lora = Some(lora);
        self.grads = None;
        self.sink = Some(be.zeros(2 * self.config.n_embd)?);
        Ok(())
    }

    /// [`Gpt::add_lora`] on a model given and returned.
    pub fn with_lora(mut self, be: &mut B, config: LoraConfig, values: Option<&[f32]>, seed: u64) -> Result<Gpt<B>> {
        self.add_lora(be, config, values, seed)?;
        Ok(self)
    }

    /// Gives a frozen model (one made without gradients to stay small until it is known
    /// whether it trains with LoRA) its gradient buffer, and its weights in f32 if they
    /// were kept in 16 bits; nothing under LoRA.
    pub fn ensure_grads(&mut self, be: &mut B) -> Result<()> {
        if self.grads.is_none() && self.lora.is_none() {
            if self.weights.format().is_some() {
                self.weights = self.weights.widened(be, &self.layout)?;
            }
            self.grads = Some(be.zeros(self.layout.total)?);
        }
        Ok(())
    }

    /// The gradients of what trains: the adapters' under LoRA, else the parameters'.
    pub fn grads(&self) -> &B::Buf {
        match &self.lora {
            Some(lora) => &lora.grads,
            None => self.grads.as_ref().expect("a frozen model has no gradients"),
        }
    }

    /// What trains, its values and its tensors (AdamW's weight-decay mask reads them).
    pub fn trainable(&self) -> (&B::Buf, &[super::params::ParamTensor], usize) {
        match &self.lora {
            Some(lora) => (&lora.params, &lora.layout.tensors, lora.layout.total),
            None => (self.weights.all_f32(), &self.layout.tensors, self.layout.total),
        }
    }

    /// The scalar head's weight and bias, and where their gradients go: the adapters'
    /// buffers under LoRA (the head trains in full beside them), else the model's own
    /// (None for a frozen model).
    #[allow(clippy::type_complexity)]
    fn head(&self) -> ([At<'_, B::Buf>; 2], Option<[At<'_, B::Buf>; 2]>) {
        match self.lora.as_ref().and_then(|l| Some((l, l.layout.head?))) {
            Some((lora, h)) => (
                [at(&lora.params, h.weight), at(&lora.params, h.bias)],
                Some([at(&lora.grads, h.weight), at(&lora.grads, h.bias)]),
            ),
            None => {
                let h = self.layout.scalar_head.expect("the model has a scalar head");
                let grads = self.grads.as_ref().map(|g| [at(g, h.weight), at(g, h.bias)]);
                ([self.weights.vector(h.weight), self.weights.vector(h.bias)], grads)
            }
        }
    }

    /// Where the base parameters' gradients go (nowhere under LoRA).
    fn base_grads(&self) -> GradsTo<'_, B::Buf> {
        match (&self.grads, &self.sink) {
            (Some(g), _) => GradsTo::Buffer(g),
            (None, Some(sink)) => GradsTo::Frozen { sink },
            (None, None) => panic!("a frozen model has no gradients"),
        }
    }

    /// A slot's adapter and its scratch in block `layer`, when adapters are on.
    fn adapter<'a>(&'a self, layer: usize, slot: Slot, x: &'a LayerActivations<B::Buf>) -> Option<Adapted<'a, B>> {
        let lora = self.lora.as_ref()?;
        let sa = lora.active(layer, slot)?;
        let scratch = x.lora[slot as usize].as_ref().expect("activations made without the model's LoRA scratch");
        Some((lora, sa, scratch))
    }
}

/// A slot's adapter, its place in the adapters' buffer and its scratch.
type Adapted<'a, B> = (&'a Lora<B>, &'a super::lora::SlotAdapter, &'a LoraScratch<<B as Backend>::Buf>);

/// What one block saves in the forward pass for the backward pass. The norms' stats are
/// LayerNorm's mean and rstd, or RMSNorm's rstd (its mean buffer unused).
pub struct LayerActivations<T> {
    pub ln1: T,      // (BT, C)
    pub ln1_mean: T, // (BT)
    pub ln1_rstd: T, // (BT)
    pub qkv: T,      // (BT, QKV), q and k rotated in place by the rotary families
    pub lse: T,      // (B, NH, T) each query row's softmax normaliser (no score matrix)
    pub atty: T,     // (BT, C) attention output, heads side by side
    pub attproj: T,  // (BT, C)
    pub res2: T,     // (BT, C) residual after attention
    pub ln2: T,      // (BT, C)
    pub ln2_mean: T, // (BT)
    pub ln2_rstd: T, // (BT)
    pub fch: T,      // (BT, FC)
    pub fch_act: T,  // (BT, H) the activation's output
    pub fcproj: T,   // (BT, C)
    pub res3: T,     // (BT, C) residual after the MLP: the block's output
    /// Decoding several sequences at once: (B, QKV) the new rows' qkv and (B, C) their
    /// attention output, before they are scattered into (gathered from) the caches,
    /// where each sequence's rows lie T_cap apart.
    pub new_rows: Option<(T, T)>,
    /// LoRA's buffers per slot (`Slot` order), where the model has adapters there.
    pub lora: [Option<LoraScratch<T>>; 4],
}

impl<T> LayerActivations<T> {
    /// One block's buffers for B × T rows; `kv_rows` rows of qkv and attention output
    /// (B·T in training, the whole context for a KV cache).
    fn new<B: Backend<Buf = T>>(
        be: &mut B,
        cfg: &GptConfig,
        lora: Option<&[super::lora::SlotAdapter]>,
        rows: usize,
        kv_rows: usize,
        lse: usize,
    ) -> Result<Self> {
        let (c, qkv, fc, h) = (cfg.n_embd, cfg.qkv_width(), cfg.mlp_in_width(), cfg.mlp_width());
        let lora = match lora {
            Some(slots) => LoraScratch::for_block(be, slots, rows)?,
            None => [None, None, None, None],
        };
        let new_rows =
            if rows > 1 && kv_rows > rows { Some((be.zeros(rows * qkv)?, be.zeros(rows * c)?)) } else { None };
        let mut z = |n: usize| be.zeros(n);
        Ok(LayerActivations {
            new_rows,
            lora,
            ln1: z(rows * c)?,
            ln1_mean: z(rows)?,
            ln1_rstd: z(rows)?,
            qkv: z(kv_rows * qkv)?,
            lse: z(lse)?,
            atty: z(kv_rows * c)?,
            attproj: z(rows * c)?,
            res2: z(rows * c)?,
            ln2: z(rows * c)?,
            ln2_mean: z(rows)?,
            ln2_rstd: z(rows)?,
            fch: z(rows * fc)?,
            fch_act: z(rows * h)?,
            fcproj: z(rows * c)?,
            res3: z(rows * c)?,
        })
    }

    /// Block `layer`'s KV caches (the context's keys and values) for `seqs` sequences
    /// decoded together, and scratch for one new row each.
    pub fn for_decoding<B: Backend<Buf = T>>(be: &mut B, model: &Gpt<B>, layer: usize, seqs: usize) -> Result<Self> {
        let (cfg, t) = (&model.config, model.config.block_size);
        let lora = model.lora.as_ref().map(|l| l.layout.layers[layer].as_slice());
        Self::new(be, cfg, lora, seqs, seqs * t, seqs * cfg.n_head * t)
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
    pub dres: T,     // (BT, C) the gradient flowing down the residual stream
    pub dln: T,      // (BT, C)
    pub dqkv: T,     // (BT, QKV)
    pub delta: T,    // (B, NH, T) attention backward's dout·out per query row
    pub datty: T,    // (BT, C)
    pub dfch: T,     // (BT, FC)
    pub dfch_act: T, // (BT, H)
}

impl<T> Activations<T> {
    /// A model's activations for B × T (with its adapters' buffers, if it has any).
    pub fn for_model<B: Backend<Buf = T>>(be: &mut B, model: &Gpt<B>, b: usize, t: usize) -> Result<Activations<T>> {
        Self::with_lora(be, &model.config, model.lora.as_ref().map(|l| &l.layout), b, t)
    }

    /// Activations for a model without adapters.
    pub fn new<B: Backend<Buf = T>>(be: &mut B, cfg: &GptConfig, b: usize, t: usize) -> Result<Activations<T>> {
        Self::with_lora(be, cfg, None, b, t)
    }

    fn with_lora<B: Backend<Buf = T>>(
        be: &mut B,
        cfg: &GptConfig,
        lora: Option<&LoraLayout>,
        b: usize,
        t: usize,
    ) -> Result<Activations<T>> {
        let (c, v, nh, bt) = (cfg.n_embd, cfg.vocab_size, cfg.n_head, b * t);
        let (qkv, fc, h) = (cfg.qkv_width(), cfg.mlp_in_width(), cfg.mlp_width());
        let mut layers = Vec::new();
        for l in 0..cfg.n_layer {
            let slots = lora.map(|lora| lora.layers[l].as_slice());
            layers.push(LayerActivations::new(be, cfg, slots, bt, bt, b * nh * t)?);
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
            dqkv: z(bt * qkv)?,
            delta: z(b * nh * t)?,
            datty: z(bt * c)?,
            dfch: z(bt * fc)?,
            dfch_act: z(bt * h)?,
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
///   res2 = residual + attn_out(attention(rope(qkv(norm1(residual)))))
///   res3 = res2 + mlp_out(activation(mlp_in(norm2(res2))))
/// (rope for the rotary families only). The new rows' keys and values land in `x.qkv` at
/// row t0 (the KV cache when decoding).
pub fn block_forward<B: Backend>(
    be: &mut B,
    model: &Gpt<B>,
    layer: usize,
    x: &LayerActivations<B::Buf>,
    residual: &B::Buf,
    rows: Rows,
) {
    let cfg = &model.config;
    let (c, nh, nkv, qkv, n, p) = (cfg.n_embd, cfg.n_head, cfg.n_kv_head(), cfg.qkv_width(), rows.n(), &model.weights);
    let parts = model.layout.layers[layer].parts(cfg);
    // a linear layer, and its adapter where it has one
    let linear = |be: &mut B, slot: Slot, out: At<B::Buf>, inp: At<B::Buf>| {
        slot.linear(&parts).forward(be, p, out, inp, n);
        if let Some((lora, sa, scratch)) = model.adapter(layer, slot, x) {
            lora.forward(be, sa, scratch, out, inp, n);
        }
    };
    parts.norm1.forward(be, p, &x.ln1, NormStats { mean: &x.ln1_mean, rstd: &x.ln1_rstd }, residual, n, c);
    // q and k of `t` rows per sequence at positions t0.., turned in place (rotary families)
    let rope = |be: &mut B, rows_at: At<B::Buf>, b: usize, t: usize, pos0: usize| {
        if let Some(inv_freq) = &model.rope {
            be.rope_forward(rows_at, inv_freq, b, t, qkv, nh + nkv, cfg.head_size(), pos0);
        }
    };
    if rows.b == 1 || rows.t0 == 0 && rows.t == rows.t_cap {
        // The new rows lie together in the (B, T_cap, QKV) cache: write them in place.
        linear(be, Slot::Qkv, at(&x.qkv, rows.t0 * qkv), at(&x.ln1, 0));
        rope(be, at(&x.qkv, rows.t0 * qkv), rows.b, rows.t - rows.t0, rows.t0);
        be.attention_forward(&x.atty, &x.lse, &x.qkv, rows.b, rows.t, c, nh, nkv, rows.t0, rows.t_cap);
        linear(be, Slot::AttnOut, at(&x.attproj, 0), at(&x.atty, rows.t0 * c));
    } else {
        // B sequences at position t0: sequence b's row is b·T_cap + t0 of its cache.
        let (new_qkv, new_atty) = x.new_rows.as_ref().expect("decoding scratch");
        linear(be, Slot::Qkv, at(new_qkv, 0), at(&x.ln1, 0));
        rope(be, at(new_qkv, 0), rows.b, 1, rows.t0);
        for b in 0..rows.b {
            be.copy(at(new_qkv, b * qkv), at(&x.qkv, (b * rows.t_cap + rows.t0) * qkv), qkv);
        }
        be.attention_forward(&x.atty, &x.lse, &x.qkv, rows.b, rows.t, c, nh, nkv, rows.t0, rows.t_cap);
        for b in 0..rows.b {
            be.copy(at(&x.atty, (b * rows.t_cap + rows.t0) * c), at(new_atty, b * c), c);
        }
        linear(be, Slot::AttnOut, at(&x.attproj, 0), at(new_atty, 0));
    }
    be.residual_forward(&x.res2, residual, &x.attproj, n * c);
    parts.norm2.forward(be, p, &x.ln2, NormStats { mean: &x.ln2_mean, rstd: &x.ln2_rstd }, &x.res2, n, c);
    linear(be, Slot::MlpIn, at(&x.fch, 0), at(&x.ln2, 0));
    parts.activation.forward(be, &x.fch_act, &x.fch, n, cfg.mlp_width());
    linear(be, Slot::MlpOut, at(&x.fcproj, 0), at(&x.fch_act, 0));
    be.residual_forward(&x.res3, &x.res2, &x.fcproj, n * c);
}

/// The trunk's last op, the final norm: out (n, C) = norm(residual).
pub fn final_norm<B: Backend>(be: &mut B, model: &Gpt<B>, lnf: [&B::Buf; 3], residual: &B::Buf, n: usize) {
    let [out, mean, rstd] = lnf;
    let norm = model.layout.final_norm(&model.config);
    norm.forward(be, &model.weights, out, NormStats { mean, rstd }, residual, n, model.config.n_embd);
}

/// The trunk: token (+ position) embeddings, the blocks, the final norm, leaving the
/// features (BT, C) in `a.lnf`. Heads read them: [`LmHead`] here; a scalar head (reward,
/// value) reads chosen rows of the same features.
pub fn trunk_forward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>) {
    let (b, t, c) = (a.b, a.t, model.config.n_embd);
    let (p, l) = (&model.weights, &model.layout);
    be.embedding_forward(&a.encoded, &a.tokens, p.matrix(l.wte), l.wpe.map(|wpe| p.matrix(wpe)), b, t, c);
    let mut residual = &a.encoded;
    for (i, x) in a.layers.iter().enumerate() {
        block_forward(be, model, i, x, residual, Rows::training(b, t));
        residual = &x.res3;
    }
    final_norm(be, model, [&a.lnf, &a.lnf_mean, &a.lnf_rstd], residual, b * t);
}

/// The language-model head: logits over the vocabulary from the trunk's features through
/// the output layer (V, C) — the token embedding when tied, `lm_head` otherwise — and
/// cross-entropy with a weight per position: the loss every stage ends in.
pub struct LmHead;

impl LmHead {
    /// logits (n, V) = features (n, C) · lm_headᵀ.
    pub fn logits<B: Backend>(be: &mut B, model: &Gpt<B>, logits: &B::Buf, features: &B::Buf, n: usize) {
        let (c, v) = (model.config.n_embd, model.config.vocab_size);
        be.matmul(
            at(logits, 0),
            at(features, 0),
            model.weights.matrix(model.layout.lm_head),
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

    /// d(Σ losses)/dlogits, then dlm_head += dlogitsᵀ · features and the features' gradient
    /// into `a.dln` (overwritten).
    pub fn backward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>) {
        let (bt, c, v) = (a.b * a.t, model.config.n_embd, model.config.vocab_size);
        let (p, l) = (&model.weights, &model.layout);
        // the gradient overwrites the logits (which the forward pass is done with)
        be.cross_entropy_backward(&a.logits, &a.targets, &a.weights, bt, v);
        let dlogits = &a.logits;
        if let GradsTo::Buffer(g) = model.base_grads() {
            be.matmul(at(g, l.lm_head), at(dlogits, 0), at(&a.lnf, 0), None, MatmulShape::tn(v, c, bt), true);
        }
        be.matmul(at(&a.dln, 0), at(dlogits, 0), p.matrix(l.lm_head), None, MatmulShape::nn(bt, c, v), false);
    }
}

/// A scalar head (reward model, value function): one number per position,
///   values (n) = features (n, C) · wᵀ + b,   w (1, C), b (1)
/// read where the stage needs it (a reward at an answer's last token, a value at every
/// answer token). Its tensors follow GPT-2's in the layout.
pub struct ScalarHead;

impl ScalarHead {
    /// values (BT) from the trunk's features `a.lnf`.
    pub fn forward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>) {
        let (bt, c) = (a.b * a.t, model.config.n_embd);
        let ([weight, bias], _) = model.head();
        be.matmul(at(&a.values, 0), at(&a.lnf, 0), weight, Some(bias), MatmulShape::nt(bt, 1, c), false);
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
        let (bt, c) = (a.b * a.t, model.config.n_embd);
        let ([weight, _], grads) = model.head();
        if let Some([dweight, dbias]) = grads {
            be.matmul(dweight, at(&a.dvalues, 0), at(&a.lnf, 0), None, MatmulShape::tn(1, c, bt), true);
            be.sum_rows(dbias, at(&a.dvalues, 0), bt, 1, true)?;
        }
        if into_trunk {
            be.matmul(at(&a.dln, 0), at(&a.dvalues, 0), weight, None, MatmulShape::nn(bt, c, 1), accumulate);
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

/// Adds the gradient of Σ losses to `model.grads` (zero them first for a fresh step).
/// `tokens` is the host copy of the batch's input tokens.
pub fn backward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>, tokens: &[u32]) -> Result<()> {
    LmHead::backward(be, model, a);
    trunk_backward(be, model, a, tokens)
}

/// The trunk's backward pass from the gradient of its features in `a.dln`.
pub fn trunk_backward<B: Backend>(be: &mut B, model: &Gpt<B>, a: &Activations<B::Buf>, tokens: &[u32]) -> Result<()> {
    let cfg = &model.config;
    let (b, t, c, nh, nkv, qkv) = (a.b, a.t, cfg.n_embd, cfg.n_head, cfg.n_kv_head(), cfg.qkv_width());
    let bt = b * t;
    let (p, g, l) = (&model.weights, model.base_grads(), &model.layout);
    let pg = (p, g);
    // a linear layer's backward pass, and its adapter's where it has one
    let linear =
        |be: &mut B, i: usize, x: &LayerActivations<B::Buf>, slot: Slot, dx: &B::Buf, inp: &B::Buf, dy: &B::Buf| {
            slot.linear(&l.layers[i].parts(cfg)).backward(be, pg, dx, inp, dy, bt)?;
            if let Some((lora, sa, scratch)) = model.adapter(i, slot, x) {
                lora.backward(be, sa, scratch, dx, inp, dy, bt);
            }
            Ok::<(), crate::error::KilnError>(())
        };
    let last = a.layers.last().map_or(&a.encoded, |x| &x.res3);
    be.clear(&a.dres);
    let lnf_stats = NormStats { mean: &a.lnf_mean, rstd: &a.lnf_rstd };
    l.final_norm(cfg).backward(be, pg, &a.dres, &a.dln, last, lnf_stats, bt, c)?;

    for (i, (w, x)) in l.layers.iter().zip(&a.layers).enumerate().rev() {
        let input = if i == 0 { &a.encoded } else { &a.layers[i - 1].res3 };
        let BlockParts { norm1, norm2, activation, .. } = w.parts(cfg);
        // res3 = res2 + fcproj: dres reaches both unchanged (dres2 = dres stays in place)
        linear(be, i, x, Slot::MlpOut, &a.dfch_act, &x.fch_act, &a.dres)?;
        activation.backward(be, &a.dfch, &x.fch, &a.dfch_act, bt, cfg.mlp_width());
        linear(be, i, x, Slot::MlpIn, &a.dln, &x.ln2, &a.dfch)?;
        // dres += the gradient through norm2 of res2
        norm2.backward(be, pg, &a.dres, &a.dln, &x.res2, NormStats { mean: &x.ln2_mean, rstd: &x.ln2_rstd }, bt, c)?;
        // res2 = input + attproj
        linear(be, i, x, Slot::AttnOut, &a.datty, &x.atty, &a.dres)?;
        be.attention_backward(&a.dqkv, &a.delta, &a.datty, &x.qkv, &x.atty, &x.lse, b, t, c, nh, nkv);
        if let Some(inv_freq) = &model.rope {
            // the gradient of the unrotated q and k: turned back by the same angles
            be.rope_backward(at(&a.dqkv, 0), inv_freq, b, t, qkv, nh + nkv, cfg.head_size(), 0);
        }
        linear(be, i, x, Slot::Qkv, &a.dln, &x.ln1, &a.dqkv)?;
        // now dres is the gradient of the block's input
        norm1.backward(be, pg, &a.dres, &a.dln, input, NormStats { mean: &x.ln1_mean, rstd: &x.ln1_rstd }, bt, c)?;
    }
    match g {
        GradsTo::Buffer(g) => {
            be.embedding_backward(at(g, l.wte), l.wpe.map(|wpe| at(g, wpe)), &a.dres, tokens, b, t, c)
        }
        GradsTo::Frozen { .. } => Ok(()),
    }
}
