//! The WGSL sources, one file per op family, compiled into the binary.

/// One WGSL file in `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Adamw,
    Attention,
    CrossEntropy,
    Embedding,
    Gelu,
    GradNorm,
    Layernorm,
    Matmul,
    Residual,
    SumRows,
}

impl Shader {
    pub fn name(self) -> &'static str {
        match self {
            Shader::Adamw => "adamw",
            Shader::Attention => "attention",
            Shader::CrossEntropy => "cross_entropy",
            Shader::Embedding => "embedding",
            Shader::Gelu => "gelu",
            Shader::GradNorm => "grad_norm",
            Shader::Layernorm => "layernorm",
            Shader::Matmul => "matmul",
            Shader::Residual => "residual",
            Shader::SumRows => "sum_rows",
        }
    }

    /// The WGSL to compile: the op family's file, plus the shared reductions it uses
    /// (WGSL has no #include).
    pub fn source(self) -> String {
        let own = self.own_source();
        match self {
            Shader::Attention | Shader::CrossEntropy | Shader::Layernorm | Shader::GradNorm => {
                format!("{own}\n{}", include_str!("../../shaders/reduce.wgsl"))
            }
            _ => own.to_string(),
        }
    }

    fn own_source(self) -> &'static str {
        match self {
            Shader::Adamw => include_str!("../../shaders/adamw.wgsl"),
            Shader::Attention => include_str!("../../shaders/attention.wgsl"),
            Shader::CrossEntropy => include_str!("../../shaders/cross_entropy.wgsl"),
            Shader::Embedding => include_str!("../../shaders/embedding.wgsl"),
            Shader::Gelu => include_str!("../../shaders/gelu.wgsl"),
            Shader::GradNorm => include_str!("../../shaders/grad_norm.wgsl"),
            Shader::Layernorm => include_str!("../../shaders/layernorm.wgsl"),
            Shader::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Shader::Residual => include_str!("../../shaders/residual.wgsl"),
            Shader::SumRows => include_str!("../../shaders/sum_rows.wgsl"),
        }
    }
}
