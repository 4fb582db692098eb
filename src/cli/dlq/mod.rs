//! `mbprov dlq`: list, summarise, inspect, replay (optionally with a fixed payload) or purge
//! dead-lettered jobs. Every subcommand walks `P.dead` once in bounded memory (see
//! `queue::dead_letters::scan`) and touches only the letters it was asked about.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Subcommand;
use serde_json::Value;

use super::publish::validate_for_publish;
use super::status::RetryTierArgs;
use crate::config::BrokerArgs;
use crate::queue::dead_letters::filter::parse_when;
use crate::queue::dead_letters::replay::{self, Edit};
use crate::queue::dead_letters::summary::Summary;
use crate::queue::dead_letters::{self, DeadLetter, Filter, Progress, Verdict};
use crate::queue::{Broker, QueueError};

mod output;

use output::{list_row, print_summary, show};

/// Walks longer than this report progress on stderr, every this many letters.
const PROGRESS_EVERY: u64 = 1000;

#[derive(clap::Args, Debug)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
    /// Most dead letters held unacknowledged (and in memory) at once. `P.dead` no deeper than
    /// this is read in place; a deeper one is turned once (each kept letter copied to its tail).
    #[arg(long, default_value_t = 100, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub window: u16,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub tiers: RetryTierArgs,
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Dead-lettered jobs, oldest first: id, kind, attempts, error class, time, last error.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print at most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Group by kind, class and error text: count, oldest and newest failure.
        #[arg(long)]
        summary: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// One dead-lettered job: its envelope and every header, as JSON.
    Show {
        id: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Moves jobs back to the work queue with a fresh attempt count, keeping their ids.
    Replay {
        #[command(flatten)]
        target: Target,
        /// Count what would be replayed and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replace the job's payload with the JSON object in FILE (`-`: stdin) before replaying
        /// it; the new envelope must pass the worker's validation. One ID only.
        #[arg(long, value_name = "FILE", conflicts_with = "all")]
        payload: Option<String>,
        /// Who made the edit, recorded in `x-mbprov-edited-by`.
        #[arg(long, requires = "payload")]
        by: Option<String>,
    },
    /// Deletes dead-lettered jobs.
    Purge {
        #[command(flatten)]
        target: Target,
        /// Count what would be deleted and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Filters every subcommand takes; all given must match.
#[derive(clap::Args, Debug, Clone)]
pub struct FilterArgs {
    /// Only this job id (repeatable).
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,
    /// Only jobs of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only this error class: permanent, exhausted, delivery-limit, unknown.
    #[arg(long)]
    class: Option<String>,
    /// Only jobs whose last error contains TEXT (any case).
    #[arg(long, value_name = "TEXT")]
    error: Option<String>,
    /// Only jobs whose payload's tenant_id is ID.
    #[arg(long, value_name = "ID")]
    tenant: Option<String>,
    /// Only jobs that last failed at or after WHEN (RFC 3339, or a duration ago: 2h, 7d).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only jobs that last failed before WHEN.
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
}

/// `ID...` or `--all`, narrowed by the filters.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// Job ids (the envelope id, else the message id, else the hash `dlq list` shows).
    #[arg(required_unless_present_any = ["all", "ids"], conflicts_with = "all")]
    positional_ids: Vec<String>,
    /// Every dead-lettered job that matches the filters.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Debug, thiserror::Error)]
enum DlqError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("no dead-lettered job matches {0} (see `mbprov dlq list`)")]
    NotFound(String),
    #[error("{0}")]
    Usage(String),
    #[error("the edited job {id} is refused, nothing was replayed: {reason}")]
    Refused { id: String, reason: String },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

pub async fn run(args: DlqArgs) -> ExitCode {
    super::report(dlq(args).await)
}

impl FilterArgs {
    fn filter(&self, extra_ids: &[String]) -> Result<Filter, DlqError> {
        let now = SystemTime::now();
        let when = |text: &Option<String>| {
            text.as_deref()
                .map(|t| parse_when(t, now).map_err(DlqError::Usage))
                .transpose()
        };
        let mut ids = self.ids.clone();
        ids.extend(extra_ids.iter().cloned());
        Ok(Filter {
            ids,
            kind: self.kind.clone(),
            class: self.class.clone(),
            error: self.error.clone(),
            tenant: self.tenant.clone(),
            since: when(&self.since)?,
            until: when(&self.until)?,
        })
    }
}

/// What the walk counts, for the closing line.
#[derive(Default)]
struct Tally {
    matched: u64,
    refused: Option<(String, String)>,
}

async fn dlq(args: DlqArgs) -> Result<(), DlqError> {
    // Everything that can be refused without the broker is refused before connecting.
    let plan = Plan::from_command(&args.command)?;
    let broker = Broker::connect(&args.broker.amqp_url, args.tiers.topology(&args.broker)).await?;
    let outcome = walk(&broker, args.window, plan).await;
    broker.close().await;
    outcome
}

/// A subcommand with its arguments checked and its payload file read.
enum Plan {
    List {
        filter: Filter,
        limit: Option<usize>,
        summary: bool,
        json: bool,
    },
    Show {
        id: String,
        filter: Filter,
    },
    Replay {
        filter: Filter,
        dry_run: bool,
        edit: Option<Edit>,
    },
    Purge {
        filter: Filter,
        dry_run: bool,
    },
}

impl Plan {
    fn from_command(command: &DlqCommand) -> Result<Self, DlqError> {
        Ok(match command {
            DlqCommand::List {
                filter,
                limit,
                summary,
                json,
            } => Plan::List {
                filter: filter.filter(&[])?,
                limit: *limit,
                summary: *summary,
                json: *json,
            },
            DlqCommand::Show { id, filter } => Plan::Show {
                id: id.clone(),
                filter: filter.filter(std::slice::from_ref(id))?,
            },
            DlqCommand::Replay {
                target,
                dry_run,
                payload,
                by,
            } => {
                let filter = target.filter.filter(&target.positional_ids)?;
                let edit = match payload {
                    None => None,
                    Some(file) => {
                        if filter.ids.len() != 1 {
                            return Err(DlqError::Usage(
                                "--payload replaces the payload of one job: give exactly one ID"
                                    .into(),
                            ));
                        }
                        Some(Edit {
                            payload: read_payload(file)?,
                            at: SystemTime::now(),
                            by: by.clone(),
                        })
                    }
                };
                Plan::Replay {
                    filter,
                    dry_run: *dry_run,
                    edit,
                }
            }
            DlqCommand::Purge { target, dry_run } => Plan::Purge {
                filter: target.filter.filter(&target.positional_ids)?,
                dry_run: *dry_run,
            },
        })
    }
}

fn read_payload(file: &str) -> Result<Value, DlqError> {
    let mut text = Vec::new();
    let read = if file == "-" {
        std::io::stdin().read_to_end(&mut text).map(drop)
    } else {
        std::fs::read(file).map(|t| text = t)
    };
    read.map_err(|e| DlqError::Usage(format!("{file}: cannot read it: {e}")))?;
    match serde_json::from_slice::<Value>(&text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(DlqError::Usage(format!(
            "{file}: a payload must be a JSON object (the envelope's `payload`, as `dlq show` prints it)"
        ))),
        Err(e) => Err(DlqError::Usage(format!("{file}: not JSON: {e}"))),
    }
}

async fn walk(broker: &Broker, window: u16, plan: Plan) -> Result<(), DlqError> {
    let work_exchange = broker.topology().work_exchange();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut tally = Tally::default();
    let mut summary = Summary::default();
    let mut printed = 0usize;
    let mut write_error: Option<std::io::Error> = None;

    if let Plan::List {
        summary: false,
        json,
        ..
    } = &plan
    {
        let head = if *json {
            "[".to_owned()
        } else {
            "ID\tKIND\tATTEMPTS\tCLASS\tFAILED AT\tERROR\n".to_owned()
        };
        out.write_all(head.as_bytes())?;
    }

    let mut visit = |letter: &DeadLetter| -> Verdict {
        let matches = match &plan {
            Plan::List { filter, .. }
            | Plan::Show { filter, .. }
            | Plan::Replay { filter, .. }
            | Plan::Purge { filter, .. } => filter.matches(letter),
        };
        if !matches || tally.refused.is_some() {
            return Verdict::Keep;
        }
        tally.matched += 1;
        let written = match &plan {
            Plan::List { summary: true, .. } => {
                summary.add(letter);
                Ok(())
            }
            Plan::List { limit, json, .. } => {
                if limit.is_some_and(|l| printed >= l) {
                    return Verdict::Keep;
                }
                printed += 1;
                list_row(&mut out, letter, *json, printed == 1)
            }
            Plan::Show { .. } => {
                let text = serde_json::to_string_pretty(&show(letter)).unwrap_or_default();
                writeln!(out, "{text}")
            }
            Plan::Replay { dry_run, edit, .. } => {
                return replay_verdict(letter, &work_exchange, *dry_run, edit.as_ref(), &mut tally);
            }
            Plan::Purge { dry_run, .. } => {
                return if *dry_run {
                    Verdict::Keep
                } else {
                    Verdict::Delete
                };
            }
        };
        if let Err(e) = written {
            write_error.get_or_insert(e);
        }
        Verdict::Keep
    };
    let mut progress = |p: Progress| {
        if p.total > PROGRESS_EVERY && (p.read.is_multiple_of(PROGRESS_EVERY) || p.read == p.total)
        {
            let how = if p.rotating {
                " (turning P.dead once)"
            } else {
                ""
            };
            eprintln!("dlq: read {}/{}{how}", p.read, p.total);
        }
    };
    let report = dead_letters::scan(broker, window, &mut visit, &mut progress).await;
    let report = report?;
    if report.ended_early {
        eprintln!(
            "dlq: P.dead held {} letters, not the {} it announced; another client took some",
            report.read, report.total
        );
    }
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if let Some((id, reason)) = tally.refused {
        return Err(DlqError::Refused { id, reason });
    }
    finish(&mut out, &plan, &tally, &summary)?;
    out.flush()?;
    Ok(())
}

/// The verdict on one matching letter of `dlq replay`, counting it.
fn replay_verdict(
    letter: &DeadLetter,
    work_exchange: &str,
    dry_run: bool,
    edit: Option<&Edit>,
    tally: &mut Tally,
) -> Verdict {
    let outgoing = match edit {
        None => replay::replay(letter, work_exchange),
        Some(edit) => {
            let envelope = replay::edited_envelope(letter, edit.payload.clone());
            if let Err(reason) = validate_for_publish(&envelope) {
                tally.refused = Some((letter.id.clone(), reason));
                return Verdict::Keep;
            }
            replay::replay_edited(letter, work_exchange, &envelope, edit)
        }
    };
    if dry_run {
        Verdict::Keep
    } else {
        Verdict::Move(Box::new(outgoing))
    }
}

fn finish(
    out: &mut impl Write,
    plan: &Plan,
    tally: &Tally,
    summary: &Summary,
) -> Result<(), DlqError> {
    match plan {
        Plan::List {
            summary: true,
            json,
            ..
        } => print_summary(out, summary, *json)?,
        Plan::List { json: true, .. } => writeln!(out, "]")?,
        Plan::List { .. } => {}
        Plan::Show { id, .. } if tally.matched == 0 => return Err(DlqError::NotFound(id.clone())),
        Plan::Show { .. } => {}
        Plan::Replay {
            filter,
            edit: Some(_),
            ..
        } if tally.matched == 0 => {
            return Err(DlqError::NotFound(filter.ids.join(", ")));
        }
        Plan::Replay { dry_run, edit, .. } => {
            let verb = if *dry_run { "would replay" } else { "replayed" };
            let edited = if edit.is_some() { " (edited)" } else { "" };
            writeln!(out, "{verb} {}{edited}", tally.matched)?;
        }
        Plan::Purge { dry_run, .. } => {
            let verb = if *dry_run { "would purge" } else { "purged" };
            writeln!(out, "{verb} {}", tally.matched)?;
        }
    }
    Ok(())
}
