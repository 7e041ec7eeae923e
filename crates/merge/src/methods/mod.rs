//! The merge-method registry: each method's parameters, defaults and input contract as
//! data, and the per-tensor kernels built from resolved parameters.

pub mod gta;
mod kernel;
mod reduce;
pub mod torch;
pub mod whole;

pub use kernel::{Kernel, Stats};

use crate::params::{Kind, Value};

/// Which inputs a parameter is asked of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One value for the whole tensor (looked up without per-model settings).
    Shared,
    /// One value per input, the base included.
    Input,
    /// One value per input other than the base.
    NonBase,
}

/// A parameter's default.
#[derive(Clone, Debug, PartialEq)]
pub enum Default {
    /// The parameter must be set.
    Required,
    /// Unset means "not given" (passthrough's `scale`).
    Unset,
    Value(Value),
}

/// One parameter of a method.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub scope: Scope,
    pub default: Default,
}

/// How a method treats `base_model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BasePolicy {
    /// The base is just another input (or not one at all).
    Ignored,
    /// The base is used when given.
    Optional,
    Required,
}

/// What happens when an optional weight (a tied `lm_head`) is missing from some inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionalPolicy {
    Error,
    /// A single remaining input is passed through.
    PassthroughSingleton,
    /// A single remaining input is passed through if it is the base.
    PassthroughBaseSingleton,
}

/// A merge method: its name, parameters and input contract.
#[derive(Debug)]
pub struct MethodSpec {
    pub name: &'static str,
    pub pretty_name: &'static str,
    pub reference_url: Option<&'static str>,
    pub params: &'static [ParamSpec],
    pub base: BasePolicy,
    pub min_inputs: usize,
    pub max_inputs: Option<usize>,
    /// Inputs other than the base (for methods whose base is optional).
    pub min_non_base: usize,
    pub max_non_base: Option<usize>,
    pub optional_policy: OptionalPolicy,
    /// Binds the method's kernel for one tensor.
    pub kernel: kernel::Build,
}

impl MethodSpec {
    /// The parameter of this name, if the method has one.
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

const fn param(name: &'static str, kind: Kind, scope: Scope, default: Default) -> ParamSpec {
    ParamSpec { name, kind, scope, default }
}

const REQUIRED: Default = Default::Required;

/// Parameters every generalized-task-arithmetic method takes, with its defaults of
/// `normalize` and `rescale`.
macro_rules! gta_params {
    ($normalize:expr, $rescale:expr $(, $extra:expr)*) => {
        &[
            param("int8_mask", Kind::Bool, Scope::Shared, Default::Value(Value::Bool(false))),
            param("normalize", Kind::Bool, Scope::Shared, Default::Value(Value::Bool($normalize))),
            param("rescale", Kind::Bool, Scope::Shared, Default::Value(Value::Bool($rescale))),
            param("lambda", Kind::Float, Scope::Shared, Default::Value(Value::Float(1.0))),
            param("weight", Kind::Float, Scope::NonBase, REQUIRED),
            param("density", Kind::Float, Scope::NonBase, Default::Value(Value::Float(1.0))),
            $($extra,)*
        ]
    };
}

const GAMMA: ParamSpec =
    param("gamma", Kind::Float, Scope::NonBase, Default::Value(Value::Float(0.01)));
const EPSILON: ParamSpec =
    param("epsilon", Kind::Float, Scope::NonBase, Default::Value(Value::Float(0.15)));

/// A generalized-task-arithmetic method's registry entry.
const fn gta(
    name: &'static str,
    pretty_name: &'static str,
    url: &'static str,
    params: &'static [ParamSpec],
    kernel: kernel::Build,
) -> MethodSpec {
    MethodSpec {
        name,
        pretty_name,
        reference_url: Some(url),
        params,
        base: BasePolicy::Required,
        min_inputs: 1,
        max_inputs: None,
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::Error,
        kernel,
    }
}

/// The methods amalgam implements.
pub static METHODS: &[MethodSpec] = &[
    MethodSpec {
        name: "passthrough",
        pretty_name: "Passthrough",
        reference_url: None,
        params: &[param("scale", Kind::Float, Scope::Input, Default::Unset)],
        base: BasePolicy::Ignored,
        min_inputs: 1,
        max_inputs: Some(1),
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::Error,
        kernel: kernel::build::passthrough,
    },
    MethodSpec {
        name: "linear",
        pretty_name: "Linear",
        reference_url: Some("https://arxiv.org/abs/2203.05482"),
        params: &[
            param("weight", Kind::Float, Scope::Input, REQUIRED),
            param("normalize", Kind::Bool, Scope::Shared, Default::Value(Value::Bool(true))),
        ],
        base: BasePolicy::Ignored,
        min_inputs: 1,
        max_inputs: None,
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::Error,
        kernel: kernel::build::linear,
    },
    MethodSpec {
        name: "slerp",
        pretty_name: "SLERP",
        reference_url: Some("https://en.wikipedia.org/wiki/Slerp"),
        params: &[param("t", Kind::Float, Scope::Shared, REQUIRED)],
        base: BasePolicy::Required,
        min_inputs: 2,
        max_inputs: Some(2),
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::PassthroughSingleton,
        kernel: kernel::build::slerp,
    },
    MethodSpec {
        name: "task_arithmetic",
        pretty_name: "Task Arithmetic",
        reference_url: Some("https://arxiv.org/abs/2212.04089"),
        params: &[
            param("int8_mask", Kind::Bool, Scope::Shared, Default::Value(Value::Bool(false))),
            param("normalize", Kind::Bool, Scope::Shared, Default::Value(Value::Bool(false))),
            param("rescale", Kind::Bool, Scope::Shared, Default::Value(Value::Bool(false))),
            param("lambda", Kind::Float, Scope::Shared, Default::Value(Value::Float(1.0))),
            param("weight", Kind::Float, Scope::NonBase, REQUIRED),
            param("density", Kind::Float, Scope::NonBase, Default::Value(Value::Float(1.0))),
        ],
        base: BasePolicy::Required,
        min_inputs: 1,
        max_inputs: None,
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::Error,
        kernel: kernel::build::task_arithmetic,
    },
    MethodSpec {
        name: "nearswap",
        pretty_name: "NearSwap",
        reference_url: Some("https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001"),
        params: &[param("t", Kind::Float, Scope::Shared, REQUIRED)],
        base: BasePolicy::Required,
        min_inputs: 2,
        max_inputs: Some(2),
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::PassthroughBaseSingleton,
        kernel: kernel::build::nearswap,
    },
    gta(
        "ties",
        "TIES",
        "https://arxiv.org/abs/2306.01708",
        gta_params!(true, false),
        kernel::build::ties,
    ),
    gta(
        "dare_ties",
        "DARE TIES",
        "https://arxiv.org/abs/2311.03099",
        gta_params!(false, true),
        kernel::build::dare_ties,
    ),
    gta(
        "dare_linear",
        "Linear DARE",
        "https://arxiv.org/abs/2311.03099",
        gta_params!(false, true),
        kernel::build::dare_linear,
    ),
    gta(
        "breadcrumbs",
        "Model Breadcrumbs",
        "https://arxiv.org/abs/2312.06795",
        gta_params!(false, false, GAMMA),
        kernel::build::breadcrumbs,
    ),
    gta(
        "breadcrumbs_ties",
        "Model Breadcrumbs with TIES",
        "https://arxiv.org/abs/2312.06795",
        gta_params!(false, false, GAMMA),
        kernel::build::breadcrumbs_ties,
    ),
    gta(
        "della",
        "DELLA",
        "https://arxiv.org/abs/2406.11617",
        gta_params!(true, true, EPSILON),
        kernel::build::della,
    ),
    gta(
        "della_linear",
        "Linear DELLA",
        "https://arxiv.org/abs/2406.11617",
        gta_params!(false, true, EPSILON),
        kernel::build::della_linear,
    ),
    MethodSpec {
        name: "sce",
        pretty_name: "SCE",
        reference_url: Some("https://arxiv.org/abs/2408.07990"),
        params: &[
            param("int8_mask", Kind::Bool, Scope::Shared, Default::Value(Value::Bool(false))),
            param("select_topk", Kind::Float, Scope::Shared, Default::Value(Value::Float(1.0))),
        ],
        base: BasePolicy::Required,
        min_inputs: 1,
        max_inputs: None,
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::Error,
        kernel: kernel::build::sce,
    },
    MethodSpec {
        name: "arcee_fusion",
        pretty_name: "Arcee Fusion",
        reference_url: Some("https://arcee.ai"),
        params: &[],
        base: BasePolicy::Required,
        min_inputs: 2,
        max_inputs: Some(2),
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::PassthroughSingleton,
        kernel: kernel::build::arcee_fusion,
    },
    MethodSpec {
        name: "multislerp",
        pretty_name: "Multi-SLERP",
        reference_url: Some("https://goddard.blog/posts/multislerp-wow-what-a-cool-idea"),
        params: &[
            param("weight", Kind::Float, Scope::NonBase, REQUIRED),
            param(
                "normalize_weights",
                Kind::Bool,
                Scope::Shared,
                Default::Value(Value::Bool(true)),
            ),
            param("eps", Kind::Float, Scope::Shared, Default::Value(Value::Float(1e-8))),
        ],
        base: BasePolicy::Optional,
        min_inputs: 1,
        max_inputs: None,
        min_non_base: 1,
        max_non_base: None,
        optional_policy: OptionalPolicy::Error,
        kernel: kernel::build::multislerp,
    },
    MethodSpec {
        name: "nuslerp",
        pretty_name: "NuSLERP",
        reference_url: None,
        params: &[
            param("weight", Kind::Float, Scope::NonBase, REQUIRED),
            param(
                "nuslerp_row_wise",
                Kind::Bool,
                Scope::Shared,
                Default::Value(Value::Bool(false)),
            ),
            param("nuslerp_flatten", Kind::Bool, Scope::Shared, Default::Value(Value::Bool(true))),
        ],
        base: BasePolicy::Optional,
        min_inputs: 2,
        max_inputs: Some(3),
        min_non_base: 2,
        max_non_base: Some(2),
        optional_policy: OptionalPolicy::PassthroughSingleton,
        kernel: kernel::build::nuslerp,
    },
    MethodSpec {
        name: "model_stock",
        pretty_name: "Model Stock",
        reference_url: Some("https://arxiv.org/abs/2403.19522"),
        params: &[param(
            "filter_wise",
            Kind::Bool,
            Scope::Shared,
            Default::Value(Value::Bool(false)),
        )],
        base: BasePolicy::Required,
        min_inputs: 3,
        max_inputs: None,
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::Error,
        kernel: kernel::build::model_stock,
    },
    MethodSpec {
        name: "karcher",
        pretty_name: "Karcher Mean",
        reference_url: Some("https://arxiv.org/abs/2603.04972"),
        params: &[
            param("max_iter", Kind::Int, Scope::Shared, Default::Value(Value::Int(10))),
            param("tol", Kind::Float, Scope::Shared, Default::Value(Value::Float(1e-5))),
        ],
        base: BasePolicy::Ignored,
        min_inputs: 1,
        max_inputs: None,
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::Error,
        kernel: kernel::build::karcher,
    },
    MethodSpec {
        name: "ram",
        pretty_name: "Reinforced Agent Merging",
        reference_url: Some("https://arxiv.org/abs/2601.13572"),
        params: &[param("epsilon", Kind::Float, Scope::Shared, Default::Value(Value::Float(1e-5)))],
        base: BasePolicy::Required,
        min_inputs: 1,
        max_inputs: None,
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::Error,
        kernel: kernel::build::ram,
    },
    MethodSpec {
        name: "ramplus_tl",
        pretty_name: "Reinforced Agent Merging Plus (Tensor-Local)",
        reference_url: Some("https://arxiv.org/abs/2601.13572"),
        params: &[
            param("r", Kind::Float, Scope::Shared, Default::Value(Value::Float(0.1))),
            param("alpha", Kind::Float, Scope::Shared, Default::Value(Value::Float(0.2))),
            param("epsilon", Kind::Float, Scope::Shared, Default::Value(Value::Float(1e-5))),
        ],
        base: BasePolicy::Required,
        min_inputs: 1,
        max_inputs: None,
        min_non_base: 0,
        max_non_base: None,
        optional_policy: OptionalPolicy::Error,
        kernel: kernel::build::ramplus_tl,
    },
];

/// Every method mergekit 0.1.5 registers.
pub const MERGEKIT_METHODS: &[&str] = &[
    "linear",
    "slerp",
    "nuslerp",
    "multislerp",
    "karcher",
    "passthrough",
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
    "sce",
    "model_stock",
    "nearswap",
    "arcee_fusion",
    "ram",
    "ramplus_tl",
];

/// Every parameter name some mergekit method reads, so a name valid elsewhere is told
/// apart from a typo.
pub const MERGEKIT_PARAMETERS: &[&str] = &[
    "weight",
    "normalize",
    "t",
    "scale",
    "density",
    "rescale",
    "lambda",
    "int8_mask",
    "gamma",
    "epsilon",
    "select_topk",
    "filter_wise",
    "nuslerp_flatten",
    "nuslerp_row_wise",
    "normalize_weights",
    "eps",
    "max_iter",
    "tol",
    "r",
    "alpha",
];

/// Looks up an implemented method.
pub fn method(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|m| m.name == name)
}

/// Names of the implemented methods, for messages.
pub fn method_names() -> Vec<&'static str> {
    METHODS.iter().map(|m| m.name).collect()
}
