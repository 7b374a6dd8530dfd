//! `policy-sidecar replay`: decides recorded traffic again under a candidate policy set and
//! reports what would change (`docs/replay.md`).
//!
//! Each line of the recording (`log.record_arguments_to`) is a call or a list with the
//! caller's identity, the arguments and the time the decision saw; it is decided again with
//! the engine `run` builds from the same config (same model, same tool catalog, so the same
//! typing of `context.input`), at the recorded time. Decision-log lines are read too, but
//! only those that carry their arguments (`log.log_arguments`) and whose caller is the
//! anonymous principal can be decided again: the decision log never holds claims.
//!
//! The report: the flips (the recorded decision against the candidate's) grouped by tool,
//! change and the policies that now decide, with counts and a few examples (file, line,
//! principal and request id; never arguments or claims, which CI logs should not hold);
//! tools a list would now show or hide; per tool how many calls each candidate policy
//! decided; the policies that decided nothing (dead). Exit 1 when anything flips unless
//! `--allow-flips`.
//!
//! Made for a day of traffic: the files are read in blocks of whole lines that worker threads
//! (one per core) decide, each line parsed borrowing from its block; each worker parses each
//! distinct identity once and reuses the decision of a call it has seen before (same caller,
//! tool and arguments, and the same time when the tool's policies read `context.system`);
//! the workers' reports are merged, examples in file and line order.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use policy_layer::Timestamp;
use policy_layer::auth::Identity;
use policy_layer::engine::Snapshot;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::args::ReplayArgs;
use super::exit::Exit;
use crate::config::Config;
use crate::feed::{engine, policy_files, tools};
use crate::observe::recording::RecordedIdentity;

/// What a call denied by its tool's pin names as its determining policy (`docs/pinning.md`).
const TOOLS_LOCK: &str = "tools.lock";

/// Distinct calls whose decisions are kept for reuse, at most (then new ones are decided
/// without being kept).
const CACHE_ENTRIES: usize = 1 << 20;

/// Replays the files of `args` under the candidate policies and prints the report.
///
/// # Errors
/// Exit 64 for a configuration that cannot be used or candidate policies that do not load;
/// exit 1 for candidates validation refuses, a file that cannot be read, or flips (unless
/// `--allow-flips`).
pub async fn replay(args: &ReplayArgs) -> Result<(), Exit> {
    let mut config = Config::load(&args.config.config)?;
    config.policy.paths.clone_from(&args.policies);
    let (_, policies) = policy_files::load(&config.policy.paths, true).map_err(Exit::config)?;
    let tools = tools::tools_for(&config, args.tools.as_deref())
        .await
        .map_err(|e| {
            Exit::failed(format!(
                "{e} (pass --tools FILE to replay without the upstream)"
            ))
        })?;
    let engine = engine::build(&config).map_err(Exit::config)?;
    if let Some(tools) = tools {
        let _ = engine.set_catalog(tools.catalog());
    }
    let report = engine.set_policies(policies).map_err(|refused| {
        Exit::failed(format!(
            "the candidate policies are refused by validation (policy.validation = {}), as `run` would refuse them:\n{refused}",
            config.policy.validation
        ))
    })?;
    for finding in &report.findings {
        eprintln!("warning: {finding}");
    }
    let snapshot = engine
        .snapshot()
        .ok_or_else(|| Exit::failed("no policy snapshot"))?;
    let started = std::time::Instant::now();
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let replay = replay_files(&snapshot, &args.files, workers.min(MAX_WORKERS))
        .map_err(|(file, e)| Exit::failed(format!("{}: {e}", file.display())))?;
    let mut out = std::io::stdout().lock();
    replay
        .write_report(&mut out, args.examples)
        .map_err(|e| Exit::failed(format!("writing to stdout: {e}")))?;
    eprintln!(
        "replay: {} line(s) in {} ms",
        replay.lines,
        started.elapsed().as_millis()
    );
    if replay.flips() > 0 && !args.allow_flips {
        return Err(Exit::failed(format!(
            "{} decision(s) flip under the candidate policies (--allow-flips to accept)",
            replay.flips()
        )));
    }
    Ok(())
}

/// One line of a recording or a decision log, borrowed from the line where it can be.
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    principal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    identity: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    decision: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    determining_policies: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
    #[serde(borrow, default)]
    allowed_tools: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    denied_tools: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

/// A decision, recorded or replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Verdict {
    Allow,
    Deny,
    Error,
}

impl Verdict {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "ALLOW" => Some(Self::Allow),
            "DENY" => Some(Self::Deny),
            "ERROR" => Some(Self::Error),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Error => "ERROR",
        }
    }
}

/// A call decided under the candidates: the verdict and the determining policies (indices
/// into [`Replay::policy_ids`]).
#[derive(Debug, Clone)]
struct Decided {
    verdict: Verdict,
    determining: Arc<[u32]>,
    /// Shadow (`LOG_ONLY`) policies that matched: they decided nothing but are not dead.
    shadow: Arc<[u32]>,
}

/// Why a line was not decided again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    NotJson,
    NotADecision,
    OtherCapability,
    Throttled,
    ToolsLock,
    NoIdentity,
    ArgumentsRedacted,
    NoTime,
    ListFailed,
    Temporal,
}

impl Skip {
    fn describe(self) -> &'static str {
        match self {
            Self::NotJson => "not a JSON object",
            Self::NotADecision => "not a call or list decision",
            Self::OtherCapability => {
                "a decision of another governed capability (resources, prompts, …): not replayed"
            }
            Self::Throttled => "refused by a rate limit before any policy decided",
            Self::ToolsLock => {
                "denied by tools.lock (the tool did not match its pin), not by a policy"
            }
            Self::NoIdentity => {
                "no caller identity (decision-log lines of authenticated callers: record with log.record_arguments_to)"
            }
            Self::ArgumentsRedacted => {
                "arguments redacted (decision-log lines: record with log.record_arguments_to)"
            }
            Self::NoTime => "no valid time",
            Self::ListFailed => "a list that failed (nothing was filtered)",
            Self::Temporal => {
                "a call of a tool that temporal policies decide (its session's history is not recorded): not replayed"
            }
        }
    }
}

/// Where a line came from.
#[derive(Debug, Clone)]
struct Example {
    file: Arc<str>,
    /// The file's place on the command line (examples are shown in file and line order).
    index: usize,
    line: u64,
    principal: String,
    request_id: String,
    recorded_by: String,
}

/// Where a line is.
struct At<'a> {
    file: &'a Arc<str>,
    index: usize,
    number: u64,
}

/// Flips that share a tool, a change and the policies that now decide.
#[derive(Debug, Default)]
struct Group {
    count: u64,
    examples: Vec<Example>,
}

impl Group {
    /// Adds `other`'s flips, keeping the first examples in file and line order.
    fn absorb(&mut self, other: Self) {
        self.count += other.count;
        self.examples.extend(other.examples);
        self.examples.sort_by_key(|e| (e.index, e.line));
        self.examples.truncate(MAX_EXAMPLES);
    }
}

/// Whole lines of one file, read together and replayed by one worker.
struct Block {
    /// The file's index on the command line.
    file: usize,
    /// The number of the block's first line.
    first_line: u64,
    bytes: Vec<u8>,
}

/// Bytes read at a time into a block (whole lines: a block ends at its last newline).
const BLOCK_BYTES: usize = 1 << 20;

/// Workers at most, whatever the machine has.
const MAX_WORKERS: usize = 16;

/// Cuts a file into blocks of whole lines.
struct Blocks<R> {
    file: usize,
    reader: R,
    next_line: u64,
    carry: Vec<u8>,
    done: bool,
}

impl<R: Read> Blocks<R> {
    fn new(file: usize, reader: R) -> Self {
        Self {
            file,
            reader,
            next_line: 1,
            carry: Vec::new(),
            done: false,
        }
    }
}

impl<R: Read> Iterator for Blocks<R> {
    type Item = std::io::Result<Block>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let start = self.carry.len();
            self.carry.resize(start + BLOCK_BYTES, 0);
            let read = match self.reader.read(&mut self.carry[start..]) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    self.carry.truncate(start);
                    continue;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            self.carry.truncate(start + read);
            if read == 0 {
                self.done = true;
                break;
            }
            // A long line may span reads: wait for its end.
            let Some(end) = self.carry.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let rest = self.carry.split_off(end + 1);
            let bytes = std::mem::replace(&mut self.carry, rest);
            return Some(Ok(self.block(bytes)));
        }
        // The last line, without its newline.
        (!self.carry.is_empty()).then(|| {
            let bytes = std::mem::take(&mut self.carry);
            Ok(self.block(bytes))
        })
    }
}

impl<R> Blocks<R> {
    fn block(&mut self, bytes: Vec<u8>) -> Block {
        let first_line = self.next_line;
        let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
        self.next_line += u64::try_from(newlines).unwrap_or(u64::MAX);
        Block {
            file: self.file,
            first_line,
            bytes,
        }
    }
}

/// Replays `files` under `snapshot` on `workers` threads: this thread reads blocks of lines,
/// the workers decide them, each with its own caches, and their reports are merged.
///
/// # Errors
/// The file that could not be read, and why.
pub fn replay_files<'s>(
    snapshot: &'s Snapshot,
    files: &[PathBuf],
    workers: usize,
) -> Result<Replay<'s>, (PathBuf, std::io::Error)> {
    let names: Vec<Arc<str>> = files
        .iter()
        .map(|f| Arc::from(f.display().to_string()))
        .collect();
    let (send, receive) = std::sync::mpsc::sync_channel::<Block>(2 * workers.max(1));
    let receive = Mutex::new(receive);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                let (receive, names) = (&receive, &names);
                scope.spawn(move || {
                    let mut replay = Replay::new(snapshot);
                    loop {
                        let block = receive
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        match block {
                            Ok(block) => replay.block(names, &block),
                            Err(_) => return replay, // all read
                        }
                    }
                })
            })
            .collect();
        let read = read_all(files, &send);
        drop(send);
        let mut merged = Replay::new(snapshot);
        for handle in handles {
            // A worker that panicked lost its lines: fail rather than report a partial replay.
            let replay = handle.join().map_err(|_| {
                (
                    PathBuf::new(),
                    std::io::Error::other("a replay worker failed"),
                )
            })?;
            merged.merge(replay);
        }
        read.map(|()| merged)
    })
}

/// Sends the blocks of every file, in order.
fn read_all(
    files: &[PathBuf],
    send: &std::sync::mpsc::SyncSender<Block>,
) -> Result<(), (PathBuf, std::io::Error)> {
    for (index, file) in files.iter().enumerate() {
        let reader = std::fs::File::open(file).map_err(|e| (file.clone(), e))?;
        for block in Blocks::new(index, reader) {
            let block = block.map_err(|e| (file.clone(), e))?;
            if send.send(block).is_err() {
                return Err((
                    file.clone(),
                    std::io::Error::other("the replay workers stopped"),
                ));
            }
        }
    }
    Ok(())
}

/// What a list now does with a tool, against the recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ListChange {
    Hidden,
    Listed,
    Fails,
}

/// The replay of any number of files under one candidate snapshot.
pub struct Replay<'s> {
    snapshot: &'s Snapshot,
    policy_ids: Vec<String>,
    policy_index: HashMap<String, u32>,
    anonymous_uid: String,
    /// Each distinct recorded identity (its JSON text), parsed once.
    identities: HashMap<Box<str>, Option<(u32, Arc<Identity>)>>,
    decisions: HashMap<Box<str>, Decided>,
    key: String,
    lines: u64,
    calls: u64,
    lists: u64,
    skipped: BTreeMap<Skip, u64>,
    flipped: u64,
    /// (tool, from, to, deciding policies) → the flips.
    flips: BTreeMap<(String, Verdict, Verdict, String), Group>,
    /// (tool, change) → the list flips.
    list_flips: BTreeMap<(String, ListChange), Group>,
    /// tool → calls decided per policy index (the last slot: no policy decided).
    coverage: HashMap<Box<str>, Vec<u64>>,
    /// Policies that decided (or, shadow, matched) at least one call.
    live: Vec<bool>,
}

impl<'s> Replay<'s> {
    /// A replay under `snapshot`.
    #[must_use]
    pub fn new(snapshot: &'s Snapshot) -> Self {
        let policy_ids: Vec<String> = snapshot
            .policies()
            .policies
            .iter()
            .map(|p| p.id().to_owned())
            .collect();
        let policy_index = policy_ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| Some((id.clone(), u32::try_from(i).ok()?)))
            .collect();
        let live = vec![false; policy_ids.len()];
        Self {
            anonymous_uid: snapshot
                .model()
                .principal_uid(&Identity::anonymous())
                .to_string(),
            snapshot,
            policy_ids,
            policy_index,
            identities: HashMap::new(),
            decisions: HashMap::new(),
            key: String::new(),
            lines: 0,
            calls: 0,
            lists: 0,
            skipped: BTreeMap::new(),
            flipped: 0,
            flips: BTreeMap::new(),
            list_flips: BTreeMap::new(),
            coverage: HashMap::new(),
            live,
        }
    }

    /// Decisions (calls and list entries) that flip.
    #[must_use]
    pub fn flips(&self) -> u64 {
        self.flipped
    }

    /// Replays every line of `reader`, named `file` in examples (on this thread).
    ///
    /// # Errors
    /// Only when `reader` fails.
    #[cfg(test)]
    pub fn read(&mut self, file: &std::path::Path, reader: impl Read) -> std::io::Result<()> {
        let names = [Arc::from(file.display().to_string())];
        for block in Blocks::new(0, reader) {
            self.block(&names, &block?);
        }
        Ok(())
    }

    /// Replays the lines of one block.
    fn block(&mut self, names: &[Arc<str>], block: &Block) {
        let Some(name) = names.get(block.file) else {
            return;
        };
        let body = block.bytes.strip_suffix(b"\n").unwrap_or(&block.bytes);
        for (number, line) in (block.first_line..).zip(body.split(|&b| b == b'\n')) {
            self.lines += 1;
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            if let Err(skip) = self.line(name, block.file, number, text) {
                *self.skipped.entry(skip).or_default() += 1;
            }
        }
    }

    /// Adds what `other` replayed (other blocks of the same files) to this replay.
    fn merge(&mut self, other: Self) {
        self.lines += other.lines;
        self.calls += other.calls;
        self.lists += other.lists;
        self.flipped += other.flipped;
        for (skip, count) in other.skipped {
            *self.skipped.entry(skip).or_default() += count;
        }
        for (key, group) in other.flips {
            self.flips.entry(key).or_default().absorb(group);
        }
        for (key, group) in other.list_flips {
            self.list_flips.entry(key).or_default().absorb(group);
        }
        for (tool, counts) in other.coverage {
            match self.coverage.get_mut(&tool) {
                Some(mine) => {
                    for (mine, theirs) in mine.iter_mut().zip(counts) {
                        *mine += theirs;
                    }
                }
                None => {
                    self.coverage.insert(tool, counts);
                }
            }
        }
        for (mine, theirs) in self.live.iter_mut().zip(other.live) {
            *mine |= theirs;
        }
    }

    fn line(
        &mut self,
        file: &Arc<str>,
        index: usize,
        number: u64,
        text: &[u8],
    ) -> Result<(), Skip> {
        let entry: Entry<'_> = serde_json::from_slice(text).map_err(|_| Skip::NotJson)?;
        let at = At {
            file,
            index,
            number,
        };
        match entry.kind.as_deref() {
            Some("tools/call") => self.call(&entry, &at),
            Some("tools/list") => self.list(&entry, &at),
            Some(kind) if entry.decision.is_some() || kind.ends_with("/list") => {
                Err(Skip::OtherCapability)
            }
            _ => Err(Skip::NotADecision),
        }
    }

    /// The identity of a line: recorded, or the anonymous principal's.
    fn identity(&mut self, entry: &Entry<'_>) -> Result<(u32, Arc<Identity>), Skip> {
        let text = match entry.identity {
            Some(raw) => raw.get(),
            None if entry.principal.as_deref() == Some(self.anonymous_uid.as_str()) => "",
            None => return Err(Skip::NoIdentity),
        };
        if let Some(known) = self.identities.get(text) {
            return known.clone().ok_or(Skip::NoIdentity);
        }
        let identity = if text.is_empty() {
            Some(Identity::anonymous())
        } else {
            serde_json::from_str::<RecordedIdentity>(text)
                .ok()
                .and_then(RecordedIdentity::identity)
        };
        let index = u32::try_from(self.identities.len()).unwrap_or(u32::MAX);
        let known = identity.map(|identity| (index, Arc::new(identity)));
        self.identities.insert(Box::from(text), known.clone());
        known.ok_or(Skip::NoIdentity)
    }

    fn indices(&self, ids: &[String]) -> Arc<[u32]> {
        ids.iter()
            .filter_map(|id| self.policy_index.get(id).copied())
            .collect()
    }

    fn call(&mut self, entry: &Entry<'_>, at: &At<'_>) -> Result<(), Skip> {
        let recorded = match entry.decision.as_deref() {
            Some("THROTTLED") => return Err(Skip::Throttled),
            Some(text) => Verdict::parse(text).ok_or(Skip::NotADecision)?,
            None => return Err(Skip::NotADecision),
        };
        if entry
            .determining_policies
            .as_deref()
            .is_some_and(|ids| ids.iter().any(|id| id == TOOLS_LOCK))
        {
            return Err(Skip::ToolsLock);
        }
        let tool = entry.tool.as_deref().ok_or(Skip::NotADecision)?;
        let arguments = match entry.arguments {
            Some(raw) if raw.get() == "\"[redacted]\"" => return Err(Skip::ArgumentsRedacted),
            Some(raw) if raw.get() == "null" => None,
            other => other.map(RawValue::get),
        };
        let now = entry
            .time
            .as_deref()
            .and_then(|t| Timestamp::parse_rfc3339(t).ok())
            .ok_or(Skip::NoTime)?;
        if !self.snapshot.temporal().for_tool(tool).is_empty() {
            return Err(Skip::Temporal);
        }
        let (who, identity) = self.identity(entry)?;
        let reads_system = self.snapshot.index().for_tool(tool).reads_system;
        self.key.clear();
        let _ = write!(self.key, "{who}\0{tool}\0{}", arguments.unwrap_or(""));
        if reads_system {
            let _ = write!(self.key, "\0{}", now.unix_millis());
        }
        let decided = if let Some(decided) = self.decisions.get(self.key.as_str()) {
            decided.clone()
        } else {
            let decided = match self
                .snapshot
                .authorize_json_at(&identity, tool, arguments, now)
            {
                Ok(outcome) => Decided {
                    verdict: if outcome.allowed() {
                        Verdict::Allow
                    } else {
                        Verdict::Deny
                    },
                    determining: self.indices(&outcome.determining),
                    shadow: self.indices(&outcome.shadow_matched),
                },
                Err(_) => Decided {
                    verdict: Verdict::Error,
                    determining: Arc::from([]),
                    shadow: Arc::from([]),
                },
            };
            if self.decisions.len() < CACHE_ENTRIES {
                self.decisions
                    .insert(Box::from(self.key.as_str()), decided.clone());
            }
            decided
        };
        self.calls += 1;
        self.count(tool, &decided);
        if decided.verdict != recorded {
            self.flipped += 1;
            let deciding = self.names(&decided.determining);
            let group = self
                .flips
                .entry((tool.to_owned(), recorded, decided.verdict, deciding))
                .or_default();
            group.count += 1;
            if group.examples.len() < MAX_EXAMPLES {
                group.examples.push(example(entry, at));
            }
        }
        Ok(())
    }

    fn count(&mut self, tool: &str, decided: &Decided) {
        let slots = self.policy_ids.len() + 1;
        let counts = match self.coverage.get_mut(tool) {
            Some(counts) => counts,
            None => self
                .coverage
                .entry(Box::from(tool))
                .or_insert_with(|| vec![0; slots]),
        };
        if decided.determining.is_empty() {
            counts[slots - 1] += 1;
        }
        for &index in decided.determining.iter().chain(decided.shadow.iter()) {
            let index = index as usize;
            if let Some(live) = self.live.get_mut(index) {
                *live = true;
            }
        }
        for &index in decided.determining.iter() {
            if let Some(count) = counts.get_mut(index as usize) {
                *count += 1;
            }
        }
    }

    fn names(&self, indices: &[u32]) -> String {
        let names: Vec<&str> = indices
            .iter()
            .filter_map(|&i| self.policy_ids.get(i as usize).map(String::as_str))
            .collect();
        names.join(", ")
    }

    fn list(&mut self, entry: &Entry<'_>, at: &At<'_>) -> Result<(), Skip> {
        if entry.error.is_some() {
            return Err(Skip::ListFailed);
        }
        let now = entry
            .time
            .as_deref()
            .and_then(|t| Timestamp::parse_rfc3339(t).ok())
            .ok_or(Skip::NoTime)?;
        let (who, identity) = self.identity(entry)?;
        let listed = entry.allowed_tools.iter().flatten().map(|t| (t, true));
        let hidden = entry.denied_tools.iter().flatten().map(|t| (t, false));
        let mut lister = self.snapshot.lister_at(&identity, now);
        let mut changes = Vec::new();
        for (tool, was_listed) in listed.chain(hidden) {
            self.key.clear();
            let _ = write!(self.key, "list\0{who}\0{tool}");
            if self.snapshot.index().for_tool(tool).reads_system {
                let _ = write!(self.key, "\0{}", now.unix_millis());
            }
            let now_listed = if let Some(decided) = self.decisions.get(self.key.as_str()) {
                decided.verdict
            } else {
                let verdict = match lister.listing(tool) {
                    Ok(listing) if listing.listed() => Verdict::Allow,
                    Ok(_) => Verdict::Deny,
                    Err(_) => Verdict::Error,
                };
                if self.decisions.len() < CACHE_ENTRIES {
                    let decided = Decided {
                        verdict,
                        determining: Arc::from([]),
                        shadow: Arc::from([]),
                    };
                    self.decisions.insert(Box::from(self.key.as_str()), decided);
                }
                verdict
            };
            let change = match (was_listed, now_listed) {
                (true, Verdict::Deny) => Some(ListChange::Hidden),
                (false, Verdict::Allow) => Some(ListChange::Listed),
                (_, Verdict::Error) => Some(ListChange::Fails),
                _ => None,
            };
            if let Some(change) = change {
                changes.push((tool.to_string(), change));
            }
        }
        self.lists += 1;
        for (tool, change) in changes {
            self.flipped += 1;
            let group = self.list_flips.entry((tool, change)).or_default();
            group.count += 1;
            if group.examples.len() < MAX_EXAMPLES {
                group.examples.push(example(entry, at));
            }
        }
        Ok(())
    }

    /// Writes the report, with at most `examples` examples per group.
    ///
    /// # Errors
    /// Only when `out` fails.
    pub fn write_report(&self, out: &mut impl Write, examples: usize) -> std::io::Result<()> {
        writeln!(
            out,
            "replayed {} call(s) and {} list(s) under {} candidate policies",
            self.calls,
            self.lists,
            self.policy_ids.len()
        )?;
        for (skip, count) in &self.skipped {
            writeln!(out, "skipped {count} line(s): {}", skip.describe())?;
        }
        let call_flips: u64 = self.flips.values().map(|g| g.count).sum();
        writeln!(out, "\nflips: {call_flips} call(s)")?;
        let mut tool = None;
        for ((name, from, to, deciding), group) in &self.flips {
            if tool != Some(name) {
                writeln!(out, "  {name}")?;
                tool = Some(name);
            }
            let by = if deciding.is_empty() {
                match to {
                    Verdict::Deny => "no policy applies (default deny)".to_owned(),
                    Verdict::Error => "no decision (the input does not fit the tool)".to_owned(),
                    Verdict::Allow => "no policy".to_owned(),
                }
            } else {
                format!("now decided by {deciding}")
            };
            writeln!(
                out,
                "    {}→{} {}: {by}",
                from.as_str(),
                to.as_str(),
                group.count
            )?;
            write_examples(out, &group.examples, examples)?;
        }
        let list_flips: u64 = self.list_flips.values().map(|g| g.count).sum();
        writeln!(out, "\nlist flips: {list_flips} tool listing(s)")?;
        for ((name, change), group) in &self.list_flips {
            let what = match change {
                ListChange::Hidden => "listed→hidden",
                ListChange::Listed => "hidden→listed",
                ListChange::Fails => "listing now fails",
            };
            writeln!(out, "  {name} {what} {}", group.count)?;
            write_examples(out, &group.examples, examples)?;
        }
        writeln!(out, "\ncoverage: calls decided per tool and policy")?;
        let mut tools: Vec<(&Box<str>, &Vec<u64>)> = self.coverage.iter().collect();
        tools.sort_by(|a, b| a.0.cmp(b.0));
        for (name, counts) in tools {
            let total: u64 = counts.iter().sum::<u64>();
            let mut by_policy: Vec<(u64, &str)> = counts
                .iter()
                .enumerate()
                .filter(|&(_, &count)| count > 0)
                .map(|(i, &count)| {
                    let id = self
                        .policy_ids
                        .get(i)
                        .map_or("(no policy: default deny)", String::as_str);
                    (count, id)
                })
                .collect();
            by_policy.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            let parts: Vec<String> = by_policy
                .iter()
                .map(|(count, id)| format!("{id} {count}"))
                .collect();
            writeln!(out, "  {name} ({total} calls): {}", parts.join(", "))?;
        }
        let dead: Vec<&str> = self
            .policy_ids
            .iter()
            .zip(&self.live)
            .filter(|(_, live)| !**live)
            .map(|(id, _)| id.as_str())
            .collect();
        writeln!(
            out,
            "\ndead policies (decided no replayed call): {}",
            if dead.is_empty() {
                "none".to_owned()
            } else {
                format!("{} ({})", dead.len(), dead.join(", "))
            }
        )?;
        Ok(())
    }
}

/// Examples kept per group (the report shows at most `--examples` of them).
const MAX_EXAMPLES: usize = 10;

fn example(entry: &Entry<'_>, at: &At<'_>) -> Example {
    Example {
        file: Arc::clone(at.file),
        index: at.index,
        line: at.number,
        principal: entry.principal.as_deref().unwrap_or("?").to_owned(),
        request_id: entry
            .request_id
            .map_or_else(String::new, |r| r.get().to_owned()),
        recorded_by: entry
            .determining_policies
            .as_ref()
            .map(|ids| ids.join(", "))
            .unwrap_or_default(),
    }
}

fn write_examples(out: &mut impl Write, examples: &[Example], limit: usize) -> std::io::Result<()> {
    for example in examples.iter().take(limit) {
        let mut line = format!(
            "      e.g. {}:{} {}",
            example.file, example.line, example.principal
        );
        if !example.request_id.is_empty() {
            let _ = write!(line, " request {}", example.request_id);
        }
        if !example.recorded_by.is_empty() {
            let _ = write!(line, " (was decided by {})", example.recorded_by);
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use policy_layer::PolicyEngine;
    use policy_layer::PolicySource;
    use std::path::Path;

    use policy_layer::model::{ModelConfig, ToolCatalog};
    use serde_json::json;

    use super::*;

    const CANDIDATES: &str = r#"
        @id("refund_small")
        permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
        when { principal.hasTag("role") && principal.getTag("role") == "refund-agent"
               && context.input.amount.lessThan(decimal("100.0")) };
        @id("lookup_any")
        permit(principal, action == AgentCore::Action::"RefundTool___get_order", resource);
        @id("never_used")
        forbid(principal, action == AgentCore::Action::"RefundTool___delete_order", resource);"#;

    fn snapshot() -> Arc<Snapshot> {
        let engine = PolicyEngine::from_sources(
            ModelConfig {
                target: "RefundTool".into(),
                ..ModelConfig::default()
            },
            &[PolicySource::new("candidate.cedar", CANDIDATES)],
        )
        .expect("loads");
        engine.set_catalog(ToolCatalog::from_list(&json!([
            {"name": "process_refund", "inputSchema": {"type": "object",
                "properties": {"amount": {"type": "number"}}, "required": ["amount"]}},
            {"name": "get_order", "inputSchema": {"type": "object"}},
            {"name": "delete_order", "inputSchema": {"type": "object"}}
        ])));
        engine.snapshot().expect("snapshot")
    }

    fn call(sub: &str, role: &str, tool: &str, amount: u32, decision: &str) -> String {
        json!({
            "time": "2025-01-15T10:00:00.000Z", "kind": "tools/call",
            "principal": format!("AgentCore::OAuthUser::\"{sub}\""),
            "identity": {"kind": "OAuthUser", "sub": sub, "tags": {"role": role}},
            "tool": tool, "request_id": 1, "decision": decision,
            "determining_policies": ["old_policy"], "arguments": {"amount": amount}
        })
        .to_string()
    }

    fn replay(lines: &[String]) -> (u64, String, Replay<'static>) {
        let snapshot: &'static Arc<Snapshot> = Box::leak(Box::new(snapshot()));
        let mut replay = Replay::new(snapshot);
        let text = lines.join("\n");
        replay
            .read(Path::new("rec.jsonl"), text.as_bytes())
            .expect("reads");
        let mut out = Vec::new();
        replay.write_report(&mut out, 2).expect("writes");
        (
            replay.flips(),
            String::from_utf8(out).expect("utf8"),
            replay,
        )
    }

    #[test]
    fn flips_are_grouped_by_tool_change_and_deciding_policies() {
        let lines = [
            // Allowed before; the candidate caps refunds at 100: now denied, no policy applies.
            call("alice", "refund-agent", "process_refund", 500, "ALLOW"),
            call("alice", "refund-agent", "process_refund", 500, "ALLOW"),
            call("bob", "refund-agent", "process_refund", 700, "ALLOW"),
            // Denied before, now allowed by refund_small.
            call("carol", "refund-agent", "process_refund", 50, "DENY"),
            // Unchanged.
            call("dave", "refund-agent", "process_refund", 20, "ALLOW"),
            call("erin", "viewer", "get_order", 1, "ALLOW"),
        ];
        let (flips, report, replay) = replay(&lines);
        assert_eq!(flips, 4, "{report}");
        assert_eq!(replay.calls, 6);
        assert!(
            report.contains("  process_refund\n    ALLOW→DENY 3: no policy applies (default deny)\n      e.g. rec.jsonl:1 AgentCore::OAuthUser::\"alice\" request 1 (was decided by old_policy)\n      e.g. rec.jsonl:2"),
            "{report}"
        );
        assert!(
            report.contains("    DENY→ALLOW 1: now decided by refund_small\n"),
            "{report}"
        );
        assert!(
            report.contains(
                "  process_refund (5 calls): (no policy: default deny) 3, refund_small 2\n"
            ),
            "{report}"
        );
        assert!(
            report.contains("  get_order (1 calls): lookup_any 1\n"),
            "{report}"
        );
        assert!(
            report.contains("dead policies (decided no replayed call): 1 (never_used)"),
            "{report}"
        );
        // Each distinct (caller, tool, arguments) was decided once.
        assert_eq!(replay.decisions.len(), 5);
    }

    #[test]
    fn lines_that_cannot_be_decided_again_are_counted_not_guessed() {
        let redacted = json!({"time": "2025-01-15T10:00:00Z", "kind": "tools/call",
            "principal": "AgentCore::UnauthenticatedUser::\"anonymous\"", "tool": "get_order",
            "decision": "ALLOW", "arguments": "[redacted]"})
        .to_string();
        let claims_unknown = json!({"time": "2025-01-15T10:00:00Z", "kind": "tools/call",
            "principal": "AgentCore::OAuthUser::\"alice\"", "tool": "get_order",
            "decision": "ALLOW", "arguments": {}})
        .to_string();
        let anonymous_logged = json!({"time": "2025-01-15T10:00:00Z", "kind": "tools/call",
            "principal": "AgentCore::UnauthenticatedUser::\"anonymous\"", "tool": "get_order",
            "decision": "DENY", "arguments": {}})
        .to_string();
        let throttled = json!({"time": "2025-01-15T10:00:00Z", "kind": "tools/call",
            "tool": "get_order", "decision": "THROTTLED"})
        .to_string();
        let pinned = json!({"time": "2025-01-15T10:00:00Z", "kind": "tools/call",
            "principal": "AgentCore::UnauthenticatedUser::\"anonymous\"", "tool": "get_order",
            "decision": "DENY", "determining_policies": ["tools.lock"], "arguments": {}})
        .to_string();
        let resource = json!({"time": "2025-01-15T10:00:00Z", "kind": "resources/read",
            "principal": "AgentCore::UnauthenticatedUser::\"anonymous\"", "tool": "file:///a",
            "decision": "DENY", "arguments": {}})
        .to_string();
        let lines = [
            redacted,
            claims_unknown,
            anonymous_logged,
            throttled,
            "not json".to_owned(),
            pinned,
            resource,
        ];
        let (flips, report, replay) = replay(&lines);
        assert_eq!((replay.calls, flips), (1, 1), "{report}");
        for skip in [
            Skip::ArgumentsRedacted,
            Skip::NoIdentity,
            Skip::Throttled,
            Skip::NotJson,
            Skip::ToolsLock,
            Skip::OtherCapability,
        ] {
            assert_eq!(replay.skipped.get(&skip), Some(&1), "{skip:?}: {report}");
        }
        assert!(
            report.contains("  get_order\n    DENY→ALLOW 1: now decided by lookup_any"),
            "{report}"
        );
    }

    #[test]
    fn a_list_reports_tools_now_hidden_or_shown() {
        let list = json!({"time": "2025-01-15T10:00:00Z", "kind": "tools/list",
            "principal": "AgentCore::OAuthUser::\"erin\"",
            "identity": {"kind": "OAuthUser", "sub": "erin", "tags": {"role": "viewer"}},
            "allowed_tools": ["process_refund", "delete_order"], "denied_tools": ["get_order"]})
        .to_string();
        let (flips, report, replay) = replay(&[list]);
        assert_eq!(replay.lists, 1);
        // erin is no refund agent: process_refund can never be allowed; delete_order has no
        // permit at all; get_order is now permitted to everyone.
        assert_eq!(flips, 3, "{report}");
        assert!(
            report.contains("  delete_order listed→hidden 1\n"),
            "{report}"
        );
        assert!(report.contains("  get_order hidden→listed 1\n"), "{report}");
        assert!(
            report.contains("  process_refund listed→hidden 1\n"),
            "{report}"
        );
    }

    #[test]
    fn blocks_hold_whole_lines_numbered_across_reads() {
        // A reader that hands out 7 bytes at a time: lines span reads.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(7).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let text = b"first line\nsecond, longer line\n\nlast without newline";
        let blocks: Vec<Block> = Blocks::new(3, Trickle(text))
            .collect::<std::io::Result<_>>()
            .expect("reads");
        let joined: Vec<u8> = blocks.iter().flat_map(|b| b.bytes.clone()).collect();
        assert_eq!(joined, text);
        for block in &blocks {
            assert_eq!(block.file, 3);
            let first = text
                .split(|&b| b == b'\n')
                .nth(usize::try_from(block.first_line - 1).expect("small"));
            assert!(
                block.bytes.starts_with(first.expect("a line")),
                "whole lines"
            );
        }
        assert!(
            blocks[..blocks.len() - 1]
                .iter()
                .all(|b| b.bytes.ends_with(b"\n"))
        );
    }

    #[test]
    fn many_workers_report_what_one_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = Vec::new();
        for part in 0..3 {
            let mut text = String::new();
            for n in 0..2000u32 {
                let (sub, role) = if n % 3 == 0 {
                    ("bob", "viewer")
                } else {
                    ("alice", "refund-agent")
                };
                let amount = (n * 7 + part) % 300;
                let decision = if n % 5 == 0 { "DENY" } else { "ALLOW" };
                text.push_str(&call(sub, role, "process_refund", amount, decision));
                text.push('\n');
            }
            let file = dir.path().join(format!("part{part}.jsonl"));
            std::fs::write(&file, text).expect("write");
            files.push(file);
        }
        let snapshot = snapshot();
        let report = |workers| {
            let replay = replay_files(&snapshot, &files, workers).expect("replays");
            let mut out = Vec::new();
            replay.write_report(&mut out, 3).expect("writes");
            (
                replay.lines,
                replay.flips(),
                String::from_utf8(out).expect("utf8"),
            )
        };
        let one = report(1);
        assert_eq!(one.0, 6000);
        assert!(one.1 > 0, "{}", one.2);
        assert_eq!(report(4), one);
    }
}
