//! Kiln's error: what went wrong, worded for the person who has to act on it.

use std::fmt;

use crate::gpu::GpuError;

#[derive(Debug, Clone, PartialEq)]
pub enum KilnError {
    /// The GPU refused or failed (limits, lost device, buffer too large …).
    Gpu(GpuError),
    /// A model or training configuration that cannot work.
    Config(String),
    /// Input text or data that cannot be used (empty, not UTF-8, too short …).
    Data(String),
    /// Tokenizer training, loading or encoding failed.
    Tokenizer(String),
    /// A checkpoint that is missing, corrupt or from an incompatible model.
    Checkpoint(String),
    /// Reading or writing a file failed.
    Io(String),
    /// An imported model's chat template that cannot be used: too large, not Jinja, over its
    /// render budget, or refusing the conversation (its own `raise_exception` message).
    Template(String),
    /// A model whose outputs are unusable (NaN or infinite logits while sampling).
    Model(String),
    /// Training kept diverging after the divergence guard's rollbacks (train::guard).
    Diverged(String),
    /// Training diverged: the loss became NaN or infinite.
    NonFiniteLoss { step: u64, loss: f32 },
    /// The caller cancelled a long operation.
    Cancelled,
}

pub type Result<T> = std::result::Result<T, KilnError>;

impl KilnError {
    /// The same error, its message prefixed with where it happened (a file's path).
    pub fn at(self, place: &str) -> KilnError {
        let at = |m: String| format!("{place}: {m}");
        match self {
            KilnError::Config(m) => KilnError::Config(at(m)),
            KilnError::Data(m) => KilnError::Data(at(m)),
            KilnError::Tokenizer(m) => KilnError::Tokenizer(at(m)),
            KilnError::Checkpoint(m) => KilnError::Checkpoint(at(m)),
            KilnError::Io(m) => KilnError::Io(at(m)),
            KilnError::Template(m) => KilnError::Template(at(m)),
            KilnError::Model(m) => KilnError::Model(at(m)),
            other => other,
        }
    }
}

impl KilnError {
    /// What happened, without the kind Display puts first ("invalid configuration: …"):
    /// for a surface that shows the kind itself (the JS API's `code`).
    pub fn detail(&self) -> String {
        match self {
            KilnError::Config(m)
            | KilnError::Data(m)
            | KilnError::Tokenizer(m)
            | KilnError::Checkpoint(m)
            | KilnError::Io(m)
            | KilnError::Template(m)
            | KilnError::Model(m) => m.clone(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for KilnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KilnError::Gpu(e) => write!(f, "{e}"),
            KilnError::Config(m) => write!(f, "invalid configuration: {m}"),
            KilnError::Data(m) => write!(f, "unusable data: {m}"),
            KilnError::Tokenizer(m) => write!(f, "tokenizer: {m}"),
            KilnError::Checkpoint(m) => write!(f, "checkpoint: {m}"),
            KilnError::Io(m) => write!(f, "{m}"),
            KilnError::Template(m) => write!(f, "chat template: {m}"),
            KilnError::Model(m) => write!(f, "model: {m}"),
            KilnError::Diverged(m) => write!(f, "training diverged: {m}"),
            KilnError::NonFiniteLoss { step, loss } => write!(
                f,
                "the loss became {loss} at step {step}: training diverged; lower the learning rate or resume from the last checkpoint"
            ),
            KilnError::Cancelled => write!(f, "cancelled"),
        }
    }
}

impl std::error::Error for KilnError {}

impl From<GpuError> for KilnError {
    fn from(e: GpuError) -> Self {
        KilnError::Gpu(e)
    }
}
