//! `mbprov dlq`: list, inspect, replay or purge dead-lettered jobs. Every subcommand touches
//! only the letters it was asked about; the others go back to `P.dead` unchanged.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use super::status::RetryTierArgs;
use crate::config::BrokerArgs;
use crate::queue::dead_letters::{self, DeadLetter, Held, Selection};
use crate::queue::{Broker, QueueError, headers};

/// Replays and purges larger than this report progress on stderr.
const PROGRESS_EVERY: usize = 100;

#[derive(clap::Args, Debug)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub tiers: RetryTierArgs,
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Dead-lettered jobs, oldest first: id, kind, attempts, error class, time, last error.
    List {
        /// Only jobs of this kind.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// One dead-lettered job: its envelope and every header, as JSON.
    Show { id: String },
    /// Moves jobs back to the work queue with a fresh attempt count, keeping their ids.
    Replay {
        #[command(flatten)]
        target: Target,
        /// Count what would be replayed and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Deletes dead-lettered jobs.
    Purge {
        #[command(flatten)]
        target: Target,
    },
}

/// `ID...` or `--all`, optionally narrowed by `--kind`.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// Job ids (the envelope id, else the message id, else the hash `dlq list` shows).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    ids: Vec<String>,
    /// Every dead-lettered job (of `--kind`, when given).
    #[arg(long)]
    all: bool,
    /// Only jobs of this kind.
    #[arg(long)]
    kind: Option<String>,
}

impl Target {
    fn selection(&self) -> Selection {
        Selection {
            ids: self.ids.clone(),
            all: self.all,
            kind: self.kind.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum DlqError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("no dead-lettered job has the id {0:?} (see `mbprov dlq list`)")]
    NotFound(String),
}

pub async fn run(args: DlqArgs) -> ExitCode {
    super::report(dlq(args).await)
}

async fn dlq(args: DlqArgs) -> Result<(), DlqError> {
    let broker = Broker::connect(&args.broker.amqp_url, args.tiers.topology(&args.broker)).await?;
    let held = dead_letters::take_all(&broker).await;
    let outcome = match held {
        Ok(held) => {
            let mut consumed = vec![false; held.len()];
            let done = act(&args.command, &broker, &held, &mut consumed).await;
            // Whatever was not acted on goes back; an unacknowledged letter is also returned by
            // the broker when the channel closes, so a failure here loses nothing either.
            let released = release_untouched(&held, &consumed).await;
            done.and(released.map_err(DlqError::from))
        }
        Err(e) => Err(e.into()),
    };
    broker.close().await;
    outcome
}

/// Runs the subcommand, marking in `consumed` the held letters it acknowledged (even when it
/// stops half-way, so that only the others are handed back).
async fn act(
    command: &DlqCommand,
    broker: &Broker,
    held: &[Held],
    consumed: &mut [bool],
) -> Result<(), DlqError> {
    match command {
        DlqCommand::List { kind, limit, json } => {
            let letters = held
                .iter()
                .map(|h| &h.letter)
                .filter(|l| kind.as_ref().is_none_or(|k| *k == l.kind))
                .take(limit.unwrap_or(usize::MAX));
            print_list(letters, *json);
        }
        DlqCommand::Show { id } => {
            let found: Vec<&DeadLetter> = held
                .iter()
                .map(|h| &h.letter)
                .filter(|l| l.id == *id)
                .collect();
            if found.is_empty() {
                return Err(DlqError::NotFound(id.clone()));
            }
            for letter in found {
                let text = serde_json::to_string_pretty(&show(letter)).unwrap_or_default();
                println!("{text}");
            }
        }
        DlqCommand::Replay { target, dry_run } => {
            let selection = target.selection();
            let chosen = chosen(held, &selection);
            if *dry_run {
                println!("would replay {}", chosen.len());
            } else {
                for (n, &i) in chosen.iter().enumerate() {
                    held[i].replay(broker).await?;
                    consumed[i] = true;
                    progress("replayed", n + 1, chosen.len());
                }
                println!("replayed {}", chosen.len());
            }
        }
        DlqCommand::Purge { target } => {
            let chosen = chosen(held, &target.selection());
            for (n, &i) in chosen.iter().enumerate() {
                held[i].delete().await?;
                consumed[i] = true;
                progress("purged", n + 1, chosen.len());
            }
            println!("purged {}", chosen.len());
        }
    }
    Ok(())
}

fn chosen(held: &[Held], selection: &Selection) -> Vec<usize> {
    (0..held.len())
        .filter(|&i| selection.matches(&held[i].letter))
        .collect()
}

fn progress(verb: &str, done: usize, total: usize) {
    if total > PROGRESS_EVERY && (done.is_multiple_of(PROGRESS_EVERY) || done == total) {
        eprintln!("{verb} {done}/{total}");
    }
}

async fn release_untouched(held: &[Held], consumed: &[bool]) -> Result<(), QueueError> {
    for (h, &gone) in held.iter().zip(consumed) {
        if !gone {
            h.release().await?;
        }
    }
    Ok(())
}

fn print_list<'a>(letters: impl Iterator<Item = &'a DeadLetter>, as_json: bool) {
    if as_json {
        let rows: Vec<Value> = letters
            .map(|l| {
                json!({
                    "id": l.id,
                    "kind": l.kind,
                    "attempts": l.note.attempts,
                    "error_class": l.note.class,
                    "error": l.note.error,
                    "failed_at": l.note.last_failed_at,
                })
            })
            .collect();
        println!("{}", Value::Array(rows));
        return;
    }
    println!("ID\tKIND\tATTEMPTS\tCLASS\tFAILED AT\tERROR");
    for l in letters {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            l.id,
            l.kind,
            l.note.attempts,
            l.note.class,
            l.note.last_failed_at.as_deref().unwrap_or("-"),
            one_line(&l.note.error),
        );
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r', '\t'], " ")
}

fn show(letter: &DeadLetter) -> Value {
    let envelope = serde_json::from_slice::<Value>(&letter.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&letter.body).into_owned()));
    json!({
        "id": letter.id,
        "kind": letter.kind,
        "error_class": letter.note.class,
        "error": letter.note.error,
        "attempts": letter.note.attempts,
        "message_id": letter.properties.message_id().as_ref().map(|m| m.to_string()),
        "envelope": envelope,
        "headers": headers::to_json(&letter.headers),
    })
}
