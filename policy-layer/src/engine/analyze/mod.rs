//! Semantic analysis of a policy set, AgentCore's "Cedar analysis": overly permissive,
//! overly restrictive and ineffective policies.
//!
//! Each question is asked per request environment of the schema (a principal type, a tool's
//! action, the gateway) and proven by Cedar's symbolic compiler (`cedar-policy-symcc`) with
//! the cvc5 SMT solver. Where a finding has a witness, the solver synthesizes it and it is
//! replayed through Cedar's own authorizer before it is shown, written as a `cases.yaml` case:
//!
//! - **overly permissive**: the enforced set allows every request of an environment that a
//!   permit names (witness: one allowed request, to show what "everything" includes);
//! - **overly restrictive**: the enforced set denies every request of an environment although
//!   a permit there can match (witness: a request the permit matches and a forbid denies);
//! - **ineffective**: a permit that can allow nothing, a forbid that can deny nothing, in every
//!   environment it names (no witness can exist).
//!
//! An environment no permit can match is default-deny and is not a finding: denying what no
//! policy allows is the design, and a forbid kept there as a kill switch is deliberate.
//!
//! Without a solver the analysis says so and runs the checks that need none: a permit without
//! conditions where no forbid applies (overly permissive), a forbid without conditions where
//! a permit applies (overly restrictive), and policies Cedar's type checker finds impossible
//! (ineffective). Those are sound, but they find fewer.

mod example;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use cedar_policy::{
    Effect, Policy, PolicySet, PrincipalConstraint, RequestEnv, ResourceConstraint, Schema,
};
use cedar_policy_symcc::solver::LocalSolver;
use cedar_policy_symcc::{CedarSymCompiler, CompiledPolicy, CompiledPolicySet};

use super::index::PolicyIndex;
use super::policies::{Enforcement, LoadedPolicies, LoadedPolicy};
use super::validate::{Finding, FindingKind};
use crate::model::schema::GatewaySchema;
use crate::model::{ActionModel, ActionRef, McpAction, ToolCatalog};
use example::{Replay, Shows};

/// Where the SMT solver comes from (`[policy] solver`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Solver {
    /// The `CVC5` environment variable, else `cvc5` on the `PATH`.
    #[default]
    Auto,
    /// This executable (a bare name is looked up on the `PATH`).
    Path(PathBuf),
    /// No solver: only the checks that need none.
    Disabled,
}

impl Solver {
    /// The solver executable, or why there is none.
    fn locate(&self) -> Result<PathBuf, String> {
        let path = match self {
            Self::Disabled => return Err("the solver is disabled by configuration".to_owned()),
            Self::Path(path) if path.components().count() == 1 && !path.is_file() => path
                .to_str()
                .and_then(on_path)
                .ok_or_else(|| format!("no `{}` on the PATH", path.display()))?,
            Self::Path(path) => path.clone(),
            Self::Auto => match std::env::var_os("CVC5") {
                Some(path) => PathBuf::from(path),
                None => on_path("cvc5").ok_or_else(|| {
                    "no `cvc5` on the PATH and CVC5 is not set (Debian: apt-get install cvc5)"
                        .to_owned()
                })?,
            },
        };
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("the solver `{}` does not exist", path.display()))
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// What the analysis may spend.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Per solver query (cvc5's `--tlimit-per`).
    pub per_query: Duration,
    /// For the whole analysis; past it, the remaining environments are not analysed.
    pub total: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            per_query: Duration::from_secs(10),
            total: Duration::from_secs(120),
        }
    }
}

/// Stack of the analysis thread (reserved, not committed, until used).
const ANALYSIS_STACK: usize = 256 << 20;

/// The findings, and notes on how far the analysis could go.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Findings, sorted.
    pub findings: Vec<Finding>,
    /// What could not be checked and why (no solver, time budget spent, solver failures).
    pub notes: Vec<String>,
    /// What ran, for operators: the solver, how many environments, how long.
    pub summary: String,
    /// Environments answered from an earlier analysis of the same content.
    pub reused: usize,
}

/// What the solver answered for one request environment.
#[derive(Debug, Default)]
struct Answered {
    /// Per candidate policy: whether it can match here.
    can_match: Vec<(String, bool)>,
    /// Candidate policies the solver could not decide (such answers are not kept).
    undecided: Vec<(String, String)>,
    findings: Vec<Finding>,
}

/// Answers kept across analyses, by [`Ctx::key`]: a reload that changes one policy asks
/// the solver again only about the environments that policy is a candidate in.
static ANSWERS: LazyLock<Mutex<HashMap<[u8; 32], Arc<Answered>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Answers kept at most; past it, the oldest analysis's answers are forgotten wholesale.
const MAX_ANSWERS: usize = 200_000;

fn cached(key: &[u8; 32]) -> Option<Arc<Answered>> {
    ANSWERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(key)
        .cloned()
}

fn remember(key: [u8; 32], answered: Arc<Answered>) {
    let mut answers = ANSWERS.lock().unwrap_or_else(PoisonError::into_inner);
    if answers.len() >= MAX_ANSWERS {
        answers.clear();
    }
    answers.insert(key, answered);
}

/// Analyses `policies` against the gateway's schema; `impossible` are the policies Cedar's
/// type checker found impossible (see `validate`), `catalog` types the arguments of the
/// examples (as it types calls). Runs the solver on a thread of its own, so it may be called from inside an
/// async runtime (it blocks the caller until done).
#[must_use]
pub fn analyze(
    policies: &LoadedPolicies,
    gateway: &GatewaySchema,
    impossible: &BTreeSet<String>,
    model: &ActionModel,
    catalog: &Arc<ToolCatalog>,
    solver: &Solver,
    budget: Budget,
) -> Analysis {
    let index = PolicyIndex::build(policies, model, &ToolCatalog::default());
    let envs = scopes(gateway, model);
    let by_id = policies
        .policies
        .iter()
        .map(|p| (AsRef::<str>::as_ref(p.policy.id()), p))
        .collect();
    let ctx = Ctx {
        policies,
        by_id,
        impossible,
        model,
        index: &index,
        envs: &envs,
        catalog,
        replay: OnceLock::new(),
    };
    let started = Instant::now();
    let located = solver.locate();
    let mut analysis = match &located {
        Ok(path) => std::thread::scope(|s| {
            // Compiling a large policy set recurses deeply; the default 2 MiB is not enough.
            std::thread::Builder::new()
                .name("policy-analysis".to_owned())
                .stack_size(ANALYSIS_STACK)
                .spawn_scoped(s, || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(ctx.with_solver(path, budget)),
                        Err(e) => ctx.without_solver(format!("no runtime for the solver: {e}")),
                    }
                })
                .map_or_else(
                    |e| ctx.without_solver(format!("no thread for the analysis: {e}")),
                    |thread| {
                        thread.join().unwrap_or_else(|_| {
                            ctx.without_solver("the analysis panicked".to_owned())
                        })
                    },
                )
        }),
        Err(why) => ctx.without_solver(why.clone()),
    };
    analysis.findings.sort_by_key(ToString::to_string);
    analysis.findings.dedup();
    let elapsed = started.elapsed().as_millis();
    analysis.summary = match &located {
        Ok(path) => format!(
            "semantic analysis with {} over {} request environments ({} answered by earlier analyses) in {elapsed} ms",
            path.display(),
            envs.len(),
            analysis.reused
        ),
        Err(_) => format!("semantic analysis without a solver in {elapsed} ms"),
    };
    analysis
}

/// The action of a request environment: a tool's, or a fixed one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Analysed {
    Tool(String),
    Mcp(McpAction),
}

impl Analysed {
    fn action(&self) -> ActionRef<'_> {
        match self {
            Self::Tool(tool) => ActionRef::Tool(tool),
            Self::Mcp(action) => ActionRef::Mcp(*action),
        }
    }
}

/// One request environment, with the action it decides and the schema cut for it.
struct Scope {
    env: RequestEnv,
    action: Analysed,
    schema: Arc<Schema>,
}

/// Every request environment of a tool, each with its tool's cut of the schema, and of each
/// action beyond tool calls, with the schema of no tool (the whole schema if it cannot be
/// cut).
fn scopes(gateway: &GatewaySchema, model: &ActionModel) -> Vec<Scope> {
    let scope = |env: RequestEnv, schema: &Arc<Schema>| {
        let id = env.action().id().unescaped();
        let action = match (model.tool_of_action(id), McpAction::from_id(id)) {
            (Some(tool), _) => Analysed::Tool(tool.to_owned()),
            (None, Some(action)) => Analysed::Mcp(action),
            (None, None) => return None,
        };
        Some(Scope {
            env,
            action,
            schema: Arc::clone(schema),
        })
    };
    match gateway.per_tool(&model.config().target) {
        Ok(cut) => cut
            .actions()
            .filter_map(|action| cut.schema(action).ok().map(Arc::new))
            .flat_map(|schema| {
                let envs: Vec<RequestEnv> = schema.request_envs().collect();
                let schema = Arc::clone(&schema);
                envs.into_iter()
                    .filter_map(move |env| scope(env, &schema))
                    .filter(|s| matches!(s.action, Analysed::Tool(_)))
            })
            .chain(
                cut.without_tools()
                    .ok()
                    .map(Arc::new)
                    .into_iter()
                    .flat_map(|schema| {
                        let envs: Vec<RequestEnv> = schema.request_envs().collect();
                        envs.into_iter().filter_map(move |env| scope(env, &schema))
                    }),
            )
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "the schema cannot be cut per tool; analysing it whole");
            let whole = Arc::new(gateway.schema.clone());
            gateway
                .schema
                .request_envs()
                .filter_map(|env| scope(env, &whole))
                .collect()
        }
    }
}

impl Scope {
    fn describe(&self) -> String {
        format!(
            "{} calling {} on {}",
            self.env.principal(),
            self.env.action(),
            self.env.resource()
        )
    }
}

struct Ctx<'a> {
    policies: &'a LoadedPolicies,
    by_id: HashMap<&'a str, &'a LoadedPolicy>,
    impossible: &'a BTreeSet<String>,
    model: &'a ActionModel,
    index: &'a PolicyIndex,
    envs: &'a [Scope],
    catalog: &'a Arc<ToolCatalog>,
    /// Built at the first example to replay.
    replay: OnceLock<Replay>,
}

/// A solver query that could not be answered.
#[derive(Debug)]
struct Undecided(String);

impl<E: fmt::Display> From<E> for Undecided {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

impl Ctx<'_> {
    fn replay(&self) -> &Replay {
        self.replay
            .get_or_init(|| Replay::new(self.model, self.catalog, self.policies))
    }

    /// The policies whose action scope can apply to `action`, by enforcement and effect.
    fn candidates(&self, action: &Analysed) -> impl Iterator<Item = &LoadedPolicy> {
        let sets = self.index.for_action(action.action());
        [&sets.active, &sets.shadow_permits, &sets.shadow_forbids]
            .into_iter()
            .flat_map(PolicySet::policies)
            .filter_map(|p| self.get(p.id().as_ref()))
    }

    fn get(&self, id: &str) -> Option<&LoadedPolicy> {
        self.by_id.get(id).copied()
    }

    fn finding(&self, kind: FindingKind, policy: &Policy, message: String) -> Finding {
        let id: &str = policy.id().as_ref();
        Finding {
            kind,
            policy: id.to_owned(),
            at: self.get(id).map(LoadedPolicy::position),
            message,
            example: None,
        }
    }

    async fn with_solver(&self, path: &Path, budget: Budget) -> Analysis {
        let started = Instant::now();
        let mut analysis = Analysis::default();
        let limit = format!("--tlimit-per={}", budget.per_query.as_millis());
        let mut command = tokio::process::Command::new(path);
        command.args(["--lang", "smt", &limit]).kill_on_drop(true);
        let solver = match LocalSolver::from_command(&mut command) {
            Ok(solver) => solver,
            Err(e) => {
                return self.without_solver(format!("`{}` did not start: {e}", path.display()));
            }
        };
        let mut cc = match CedarSymCompiler::new(solver) {
            Ok(cc) => cc,
            Err(e) => return self.without_solver(format!("the symbolic compiler failed: {e}")),
        };
        // Per policy: whether it can match in some environment it applies to.
        let mut can_match: HashMap<String, bool> = HashMap::new();
        let mut undecided: HashMap<String, String> = HashMap::new();
        let mut complete = true;
        let mut reused = 0_usize;
        for (done, scope) in self.envs.iter().enumerate() {
            if started.elapsed() > budget.total {
                complete = false;
                analysis.notes.push(format!(
                    "semantic analysis stopped after {} s (the budget): {done} of {} request environments analysed",
                    budget.total.as_secs(),
                    self.envs.len()
                ));
                break;
            }
            let key = self.key(scope, &limit);
            let answered = match cached(&key) {
                Some(answered) => {
                    reused += 1;
                    answered
                }
                None => {
                    let mut answered = Answered::default();
                    if let Err(Undecided(why)) =
                        self.environment(&mut cc, scope, &mut answered).await
                    {
                        analysis
                            .notes
                            .push(format!("{}: not analysed: {why}", scope.describe()));
                        continue;
                    }
                    let answered = Arc::new(answered);
                    if answered.undecided.is_empty() {
                        remember(key, Arc::clone(&answered));
                    }
                    answered
                }
            };
            for (id, matches) in &answered.can_match {
                *can_match.entry(id.clone()).or_default() |= matches;
            }
            for (id, why) in &answered.undecided {
                undecided.insert(id.clone(), why.clone());
            }
            analysis.findings.extend(answered.findings.iter().cloned());
        }
        for loaded in &self.policies.policies {
            let id: &str = loaded.policy.id().as_ref();
            if let Some(why) = undecided.get(id) {
                analysis
                    .notes
                    .push(format!("policy `{id}`: could not be fully analysed: {why}"));
            } else if complete && can_match.get(id) == Some(&false) {
                analysis.findings.push(self.ineffective(&loaded.policy));
            }
        }
        analysis.reused = reused;
        analysis
    }

    /// What an environment's answers depend on, hashed: the environment, the definition of
    /// what its action calls, the model, the solver's per-query limit, and every candidate
    /// policy's id, enforcement, text and position. Equal keys, equal answers.
    fn key(&self, scope: &Scope, limit: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        let mut part = |text: &str| {
            hash.update((text.len() as u64).to_le_bytes());
            hash.update(text.as_bytes());
        };
        part(&scope.describe());
        part(limit);
        part(&format!("{:?}", self.model.config()));
        match &scope.action {
            Analysed::Tool(tool) => {
                part(
                    &self
                        .catalog
                        .definition(tool)
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                );
            }
            Analysed::Mcp(_) => part(&format!("{:?}", self.catalog.prompts().collect::<Vec<_>>())),
        }
        for loaded in self.candidates(&scope.action) {
            part(loaded.policy.id().as_ref());
            part(&format!("{:?}", loaded.enforcement));
            part(&loaded.policy.to_string());
            part(&loaded.position().to_string());
        }
        hash.finalize().into()
    }

    /// Analyses one request environment.
    async fn environment(
        &self,
        cc: &mut CedarSymCompiler<LocalSolver>,
        scope: &Scope,
        out: &mut Answered,
    ) -> Result<(), Undecided> {
        let mut live_permits: Vec<(&Policy, CompiledPolicy)> = Vec::new();
        let mut live_forbids: Vec<&Policy> = Vec::new();
        let mut enforced = PolicySet::new();
        let mut unknown: Option<&str> = None;
        for loaded in self.candidates(&scope.action) {
            let id: &str = loaded.policy.id().as_ref();
            if !admits(&loaded.policy, &scope.env) {
                // Its scope names other principal or resource types: it matches nothing here.
                out.can_match.push((id.to_owned(), false));
                continue;
            }
            let matches = match CompiledPolicy::compile(&loaded.policy, &scope.env, &scope.schema) {
                Ok(compiled) => match cc.check_never_matches_opt(&compiled).await {
                    Ok(never) => Some((!never, compiled)),
                    Err(e) => {
                        out.undecided.push((id.to_owned(), e.to_string()));
                        None
                    }
                },
                Err(e) => {
                    out.undecided.push((id.to_owned(), e.to_string()));
                    None
                }
            };
            let Some((matches, compiled)) = matches else {
                // Without it, what the set allows here is unknown.
                unknown.get_or_insert(id);
                continue;
            };
            out.can_match.push((id.to_owned(), matches));
            if loaded.enforcement != Enforcement::Enforce {
                continue;
            }
            let _ = enforced.add(loaded.policy.clone());
            match (loaded.policy.effect(), matches) {
                (Effect::Permit, true) => live_permits.push((&loaded.policy, compiled)),
                (Effect::Forbid, true) => live_forbids.push(&loaded.policy),
                _ => {}
            }
        }
        if let Some(id) = unknown {
            return Err(Undecided(format!(
                "policy `{id}` could not be analysed here, so neither can the set"
            )));
        }
        if live_permits.is_empty() {
            // Default deny: nothing here can be allowed, and nothing claims to allow it.
            return Ok(());
        }
        let set = CompiledPolicySet::compile(&enforced, &scope.env, &scope.schema)?;
        if cc.check_always_allows_opt(&set).await? {
            let example = cc.check_always_denies_with_counterexample_opt(&set).await?;
            let names = ids(live_permits.iter().map(|(p, _)| *p));
            let case = example
                .as_ref()
                .and_then(|env| self.replay().case(env, &Shows::Allowed));
            for (permit, _) in &live_permits {
                let mut finding = self.finding(
                    FindingKind::OverlyPermissive,
                    permit,
                    format!(
                        "the policies allow every request of {} ({names}; no forbid or condition ever denies one)",
                        scope.describe()
                    ),
                );
                finding.example.clone_from(&case);
                out.findings.push(finding);
            }
        } else if cc.check_always_denies_opt(&set).await? {
            // A request a live permit matches, which the set still denies: what the forbids take.
            let (permit, compiled) = &live_permits[0];
            let example = cc
                .check_never_matches_with_counterexample_opt(compiled)
                .await?;
            let permit = self.get(permit.id().as_ref());
            let blame: Vec<&Policy> = if live_forbids.is_empty() {
                live_permits.iter().map(|(p, _)| *p).collect()
            } else {
                live_forbids
            };
            let names = ids(blame.iter().copied());
            let case = example
                .as_ref()
                .zip(permit)
                .and_then(|(env, permit)| self.replay().case(env, &Shows::DeniedDespite(permit)));
            for policy in blame {
                let mut finding = self.finding(
                    FindingKind::OverlyRestrictive,
                    policy,
                    format!(
                        "the policies deny every request of {} although {} can match ({names} take every one)",
                        scope.describe(),
                        ids(live_permits.iter().map(|(p, _)| *p)),
                    ),
                );
                finding.example.clone_from(&case);
                out.findings.push(finding);
            }
        }
        Ok(())
    }

    fn ineffective(&self, policy: &Policy) -> Finding {
        let what = match policy.effect() {
            Effect::Permit => "this permit can allow no request",
            Effect::Forbid => "this forbid can deny no request",
        };
        self.finding(
            FindingKind::Ineffective,
            policy,
            format!("{what}: its scope and conditions match nothing the schema allows"),
        )
    }

    /// The checks that need no solver, with a note saying why they are all there is.
    fn without_solver(&self, why: String) -> Analysis {
        let mut analysis = Analysis {
            findings: Vec::new(),
            summary: String::new(),
            reused: 0,
            notes: vec![format!(
                "no SMT solver: {why}. Overly permissive, overly restrictive and ineffective \
                 policies are only found where no solver is needed (permits and forbids without \
                 conditions, policies the type checker finds impossible)"
            )],
        };
        for scope in self.envs {
            let (mut permits, mut forbids) = (Vec::new(), Vec::new());
            for loaded in self.candidates(&scope.action) {
                if loaded.enforcement == Enforcement::Enforce
                    && self.in_scope(&loaded.policy, scope)
                {
                    match loaded.policy.effect() {
                        Effect::Permit => permits.push(&loaded.policy),
                        Effect::Forbid => forbids.push(&loaded.policy),
                    }
                }
            }
            let unconditional = |p: &&Policy| !p.has_non_scope_constraint();
            if forbids.is_empty() {
                for permit in permits.iter().copied().filter(unconditional) {
                    analysis.findings.push(self.finding(
                        FindingKind::OverlyPermissive,
                        permit,
                        format!(
                            "this permit has no conditions and no forbid applies: it allows every request of {}",
                            scope.describe()
                        ),
                    ));
                }
            } else if !permits.is_empty() {
                for forbid in forbids.iter().copied().filter(unconditional) {
                    analysis.findings.push(self.finding(
                        FindingKind::OverlyRestrictive,
                        forbid,
                        format!(
                            "this forbid has no conditions: it denies every request of {} that {} would allow",
                            scope.describe(),
                            ids(permits.iter().copied())
                        ),
                    ));
                }
            }
        }
        for id in self.impossible {
            if let Some(loaded) = self.get(id) {
                analysis.findings.push(self.ineffective(&loaded.policy));
            }
        }
        analysis
    }

    /// Whether a policy's principal and resource scope admit every request of `scope`
    /// (its action scope is known to apply).
    fn in_scope(&self, policy: &Policy, scope: &Scope) -> bool {
        let principal = match policy.principal_constraint() {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Is(ty) => &ty == scope.env.principal(),
            _ => false,
        };
        let resource = match policy.resource_constraint() {
            ResourceConstraint::Any => true,
            ResourceConstraint::Is(ty) => &ty == scope.env.resource(),
            // The gateway is the only resource there is.
            ResourceConstraint::Eq(uid) => uid == self.model.resource_uid(),
            _ => false,
        };
        principal && resource
    }
}

/// Whether a policy's principal and resource scope can name the types of `env` (a cheap
/// filter before compiling; `in` is left to the solver, as a schema may give hierarchies).
fn admits(policy: &Policy, env: &RequestEnv) -> bool {
    let principal = match policy.principal_constraint() {
        PrincipalConstraint::Is(ty) | PrincipalConstraint::IsIn(ty, _) => &ty == env.principal(),
        PrincipalConstraint::Eq(uid) => uid.type_name() == env.principal(),
        _ => true,
    };
    let resource = match policy.resource_constraint() {
        ResourceConstraint::Is(ty) | ResourceConstraint::IsIn(ty, _) => &ty == env.resource(),
        ResourceConstraint::Eq(uid) => uid.type_name() == env.resource(),
        _ => true,
    };
    principal && resource
}

fn ids<'p>(policies: impl Iterator<Item = &'p Policy>) -> String {
    policies
        .map(|p| format!("`{}`", AsRef::<str>::as_ref(p.id())))
        .collect::<Vec<_>>()
        .join(", ")
}
