//! `academy`: an operator's view of a hybrid exchange.
//!
//! `academy ls`, `discover BEHAVIOR`, `ping ID`, `describe ID`, `peek ID [N]`,
//! `terminate ID`, `stats`; a table by default, `--json` for scripts. The
//! Redis URL, namespace and secret come from flags or from
//! `ACADEMY_REDIS_URL`, `ACADEMY_NAMESPACE` and `ACADEMY_SECRET`.

use std::process::ExitCode;
use std::time::Duration;

use actix::{Actor, Context};
use actix_academy::wire::Body;
use actix_academy::{AgentId, Discovery, EntityId, Error, Exchange, MailboxInfo, MailboxStatus, Peeked, Role};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

/// `println!` that ends the tool quietly when its reader is gone
/// (`academy ls | head`), as Unix tools do, instead of panicking.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

#[derive(Parser)]
#[command(name = "academy", version, about = "Inspect and operate a hybrid exchange of actix-academy")]
struct Cli {
    /// Redis URL of the exchange.
    #[arg(long, env = "ACADEMY_REDIS_URL", default_value = "redis://127.0.0.1:6379", global = true)]
    redis: String,
    /// Key namespace of the exchange.
    #[arg(long, env = "ACADEMY_NAMESPACE", default_value = "default", global = true)]
    namespace: String,
    /// The deployment's `expiry` in seconds: reading a mailbox whose process
    /// is gone sets its keys to expire after this, as the exchange would.
    #[arg(long, env = "ACADEMY_EXPIRY", default_value_t = 86_400, global = true)]
    expiry: u64,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every mailbox not terminated: kind, name, behavior, status, address, owner alive, queue depth.
    Ls {
        /// Only agents whose lineage names this behavior.
        #[arg(long)]
        behavior: Option<String>,
        /// Only this status: active, listening, offline, inactive, terminated.
        #[arg(long)]
        status: Option<String>,
        /// Terminated mailboxes too (kept until they expire).
        #[arg(long)]
        all: bool,
    },
    /// Agents of a behavior (and of behaviors that implement it).
    Discover {
        behavior: String,
        /// Only agents whose behavior is exactly this one.
        #[arg(long)]
        exact: bool,
        /// Also agents whose process is gone.
        #[arg(long)]
        inactive: bool,
    },
    /// Round-trip time of a ping to an agent (needs the exchange's secret).
    Ping {
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// An agent's behavior and actions, as it describes itself.
    Describe { id: String },
    /// The first N messages waiting in a mailbox's queue, decoded, not taken.
    Peek {
        id: String,
        #[arg(default_value_t = 10)]
        count: usize,
    },
    /// Terminate a mailbox: it accepts nothing more, and leaves discovery.
    Terminate { id: String },
    /// Counts by status, queue totals, the deepest queue, the oldest message.
    Stats,
}

/// A behavior that stands for any agent: ping and describe need no actions.
struct AnyAgent;

impl Actor for AnyAgent {
    type Context = Context<Self>;
}

actix_academy::behavior!(AnyAgent { name: "academy-cli-any", actions: [] });

/// A failure, said to the user.
struct Failure(String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(e.to_string())
    }
}

#[actix::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Without the secret nothing can be sent to agents (they drop what is
    // not sealed with it), so the tool then only reads, and does not listen.
    let has_secret = std::env::var(actix_academy::SECRET_ENV).is_ok_and(|s| !s.is_empty());
    let exchange = match Exchange::builder(&cli.redis)
        .namespace(&cli.namespace)
        .expiry(Duration::from_secs(cli.expiry))
        .peer_to_peer(has_secret)
        .peer_timeout(Duration::from_secs(5))
        .start()
        .await
    {
        Ok(exchange) => exchange,
        Err(e) => {
            eprintln!("error: cannot use the exchange at {} (namespace {}): {e}", cli.redis, cli.namespace);
            return ExitCode::FAILURE;
        }
    };
    let result = run(&cli, &exchange).await;
    exchange.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli, exchange: &Exchange) -> Result<(), Failure> {
    let hybrid = exchange;
    match &cli.command {
        Command::Ls { behavior, status, all: everything } => {
            let mut all = hybrid.mailboxes().await?;
            if !everything && status.is_none() {
                all.retain(|m| m.status != MailboxStatus::Terminated);
            }
            if let Some(behavior) = behavior {
                all.retain(|m| m.lineage.iter().any(|name| name == behavior));
            }
            if let Some(status) = status {
                let wanted = status.to_ascii_lowercase();
                all.retain(|m| {
                    status_word(m.status).eq_ignore_ascii_case(&wanted) || (wanted == "active" && m.status.is_active())
                });
            }
            all.sort_by(|a, b| {
                (kind(&a.id), a.lineage.first(), a.id.name()).cmp(&(kind(&b.id), b.lineage.first(), b.id.name()))
            });
            print_mailboxes(cli.json, &all);
        }
        Command::Discover { behavior, exact, inactive } => {
            let mut which = Discovery::new();
            if *exact {
                which = which.exact();
            }
            if *inactive {
                which = which.include_inactive();
            }
            let found = exchange.discover_by_name(behavior, which).await?;
            if cli.json {
                println!("{}", Value::Array(found.iter().map(id_json).collect()));
            } else if found.is_empty() {
                println!("no agent of behavior {behavior:?}");
            } else {
                for id in &found {
                    println!("{id}  {}", id.uid());
                }
            }
        }
        Command::Ping { id, timeout } => {
            let id = resolve(hybrid, id).await?;
            let handle = exchange.get_handle(as_agent(&id)).bind_as_client(exchange).await?;
            let handle = handle.with_timeout(Some(Duration::from_secs(*timeout)));
            let rtt = tokio::time::timeout(Duration::from_secs(*timeout), handle.ping())
                .await
                .map_err(|_| Failure(format!("{id} did not answer within {timeout} s")))
                .and_then(|ping| ping.map_err(|e| Failure(format!("cannot ping {id}: {e}"))));
            let _ = handle.close().await;
            let rtt = rtt?;
            if cli.json {
                println!("{}", json!({ "id": id_json(&id), "rtt_us": rtt.as_micros() as u64 }));
            } else {
                println!("{id}: {:.3} ms", rtt.as_secs_f64() * 1e3);
            }
        }
        Command::Describe { id } => {
            let id = resolve(hybrid, id).await?;
            let handle = exchange.get_handle(as_agent(&id)).bind_as_client(exchange).await?;
            let described = handle.describe().await.map_err(|e| Failure(format!("cannot describe {id}: {e}")));
            let _ = handle.close().await;
            let described = described?;
            if cli.json {
                let actions: Vec<Value> = described
                    .actions
                    .iter()
                    .map(|a| {
                        let parameters: Vec<Value> =
                            a.parameters.iter().map(|p| json!({ "name": p.name, "type": p.ty })).collect();
                        json!({ "name": a.name, "parameters": parameters, "result": a.result, "one_way": a.one_way, "doc": a.doc })
                    })
                    .collect();
                println!(
                    "{}",
                    json!({ "id": id_json(&id), "behavior": described.behavior, "lineage": described.lineage, "actions": actions })
                );
            } else {
                println!("{id}: behavior {} (lineage {})", described.behavior, described.lineage.join(", "));
                for a in &described.actions {
                    let parameters: Vec<String> =
                        a.parameters.iter().map(|p| format!("{}: {}", p.name, p.ty)).collect();
                    let one_way = if a.one_way { "  (one-way)" } else { "" };
                    println!("  {}({}) -> {}{one_way}", a.name, parameters.join(", "), a.result);
                    if !a.doc.is_empty() {
                        println!("      {}", a.doc.replace('\n', "\n      "));
                    }
                }
            }
        }
        Command::Peek { id, count } => {
            let id = resolve(hybrid, id).await?;
            let entries = hybrid.peek(id.uid(), *count).await?;
            if cli.json {
                println!("{}", Value::Array(entries.iter().map(peeked_json).collect()));
            } else if entries.is_empty() {
                println!("{id}: nothing queued");
            } else {
                for (i, entry) in entries.iter().enumerate() {
                    println!("{i:>4}  {}", peeked_text(entry));
                }
            }
        }
        Command::Terminate { id } => {
            let id = resolve(hybrid, id).await?;
            exchange.terminate(&id).await?;
            if cli.json {
                println!("{}", json!({ "terminated": id_json(&id) }));
            } else {
                println!("terminated {id}");
            }
        }
        Command::Stats => {
            let all = hybrid.mailboxes().await?;
            let count = |status: MailboxStatus| all.iter().filter(|m| m.status == status).count();
            let agents = all.iter().filter(|m| m.id.role() == Role::Agent).count();
            let queued: u64 = all.iter().map(|m| m.queued).sum();
            let waiting = all.iter().filter(|m| m.queued > 0).count();
            let deepest = all.iter().max_by_key(|m| m.queued).filter(|m| m.queued > 0);
            // The oldest message: the head of each queue, by when it was made.
            let mut oldest: Option<(std::time::SystemTime, EntityId)> = None;
            for m in all.iter().filter(|m| m.queued > 0) {
                for entry in hybrid.peek(m.id.uid(), 1).await? {
                    if let Peeked::Message(envelope) = entry {
                        if let Some(at) = envelope.made_at() {
                            if oldest.as_ref().is_none_or(|(t, _)| at < *t) {
                                oldest = Some((at, m.id.clone()));
                            }
                        }
                    }
                }
            }
            let oldest_age = oldest.as_ref().map(|(at, id)| (age(*at), id.clone()));
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "mailboxes": all.len(), "agents": agents, "clients": all.len() - agents,
                        "listening": count(MailboxStatus::Listening), "offline": count(MailboxStatus::Offline),
                        "inactive": count(MailboxStatus::Inactive), "terminated": count(MailboxStatus::Terminated),
                        "queued": queued, "queues_not_empty": waiting,
                        "deepest": deepest.map(|m| json!({ "id": id_json(&m.id), "queued": m.queued })),
                        "oldest": oldest_age.as_ref().map(|(age, id)| json!({ "id": id_json(id), "age_s": age.as_secs_f64() })),
                    })
                );
            } else {
                println!("mailboxes   {} ({agents} agents, {} clients)", all.len(), all.len() - agents);
                println!(
                    "status      {} listening, {} offline, {} inactive, {} terminated",
                    count(MailboxStatus::Listening),
                    count(MailboxStatus::Offline),
                    count(MailboxStatus::Inactive),
                    count(MailboxStatus::Terminated)
                );
                println!("queued      {queued} messages in {waiting} queues");
                // With the short id: several entities may share a name.
                let short = |id: &EntityId| format!("{id} {}", &id.uid().simple().to_string()[..8]);
                if let Some(m) = deepest {
                    println!("deepest     {} ({} queued, {})", short(&m.id), m.queued, status_word(m.status));
                }
                if let Some((age, id)) = &oldest_age {
                    println!("oldest      {:.1} s old, for {}", age.as_secs_f64(), short(id));
                }
            }
        }
    }
    Ok(())
}

/// An id in any form the crate prints or parses: a UUID, its base32 form,
/// `AgentId<name>` or a name, `AgentId<1cc1db09>` or a UUID prefix.
async fn resolve(exchange: &Exchange, text: &str) -> Result<EntityId, Failure> {
    let inner = ["AgentId<", "ClientId<"]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix).and_then(|rest| rest.strip_suffix('>')))
        .unwrap_or(text);
    let all = exchange.mailboxes().await?;
    if let Ok(parsed) = inner.parse::<AgentId<AnyAgent>>() {
        let uid = parsed.uid();
        return all
            .into_iter()
            .find(|m| m.id.uid() == uid)
            .map(|m| m.id)
            .ok_or_else(|| Failure(format!("no mailbox {inner} in this namespace")));
    }
    let prefix = inner.to_ascii_lowercase();
    let mut matches: Vec<MailboxInfo> = all
        .into_iter()
        .filter(|m| {
            m.id.name() == Some(inner) || (prefix.len() >= 4 && m.id.uid().simple().to_string().starts_with(&prefix))
        })
        .collect();
    // A name reused after a restart: the live mailbox, not those gone.
    let preferences: [fn(&MailboxInfo) -> bool; 2] =
        [|m| m.status != MailboxStatus::Terminated, |m| m.status.is_active()];
    for keep in preferences {
        if matches.len() > 1 && matches.iter().any(keep) {
            matches.retain(keep);
        }
    }
    let matches: Vec<EntityId> = matches.into_iter().map(|m| m.id).collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Failure(format!("no mailbox named or starting with {inner:?} in this namespace"))),
        many => Err(Failure(format!(
            "{inner:?} is ambiguous: {}",
            many.iter().map(|id| format!("{id} ({})", id.uid())).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The id as an agent's: its kind is read from Redis, where an agent
/// terminated by an older version lost its lineage.
fn as_agent(id: &EntityId) -> AgentId<AnyAgent> {
    AgentId::from_entity(EntityId::from_parts(id.uid(), Role::Agent, id.name())).expect("an agent id")
}

fn kind(id: &EntityId) -> &'static str {
    match id.role() {
        Role::Agent => "agent",
        Role::Client => "client",
    }
}

fn status_word(status: MailboxStatus) -> &'static str {
    match status {
        MailboxStatus::Listening => "listening",
        MailboxStatus::Offline => "offline",
        MailboxStatus::Inactive => "inactive",
        MailboxStatus::Terminated => "terminated",
        MailboxStatus::Missing => "missing",
        _ => "unknown",
    }
}

fn id_json(id: &EntityId) -> Value {
    json!({ "uuid": id.uid().to_string(), "base32": id.base32(), "kind": kind(id), "name": id.name() })
}

fn print_mailboxes(as_json: bool, all: &[MailboxInfo]) {
    if as_json {
        let rows: Vec<Value> = all
            .iter()
            .map(|m| {
                json!({
                    "id": id_json(&m.id), "behavior": m.lineage.first(), "lineage": m.lineage,
                    "status": status_word(m.status), "address": m.address, "owner_alive": m.owner_alive,
                    "queued": m.queued,
                })
            })
            .collect();
        println!("{}", Value::Array(rows));
        return;
    }
    let rows: Vec<[String; 8]> = all
        .iter()
        .map(|m| {
            [
                kind(&m.id).to_owned(),
                m.id.name().unwrap_or("-").to_owned(),
                m.id.uid().simple().to_string()[..8].to_owned(),
                m.lineage.first().cloned().unwrap_or_else(|| "-".into()),
                status_word(m.status).to_owned(),
                m.address.clone().unwrap_or_else(|| "-".into()),
                match m.owner_alive {
                    Some(true) => "alive".into(),
                    Some(false) => "dead".into(),
                    None => "-".into(),
                },
                m.queued.to_string(),
            ]
        })
        .collect();
    let header = ["KIND", "NAME", "ID", "BEHAVIOR", "STATUS", "ADDRESS", "OWNER", "QUEUED"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: [&str; 8]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
    if rows.is_empty() {
        println!("(no mailbox in this namespace)");
    }
}

fn body_text(body: &Body) -> String {
    match body {
        Body::ActionRequest { action, args } => {
            format!("action request {action:?} ({} bytes of arguments)", args.len())
        }
        Body::ActionResponse { action, result: Ok(bytes) } => {
            format!("action response {action:?} ({} bytes)", bytes.len())
        }
        Body::ActionResponse { action, result: Err(e) } => format!("action response {action:?}: error {e}"),
        Body::PingRequest => "ping request".into(),
        Body::PingResponse => "ping response".into(),
        Body::CancelRequest { target } => format!("cancel of {target}"),
        Body::ShutdownRequest { terminate } => format!("shutdown request (terminate: {terminate})"),
        Body::ShutdownResponse { result } => format!("shutdown response {result:?}"),
        other => format!("{other:?}"),
    }
}

/// How long ago `at` was (zero if in the future: clocks differ).
fn age(at: std::time::SystemTime) -> Duration {
    std::time::SystemTime::now().duration_since(at).unwrap_or_default()
}

fn peeked_text(entry: &Peeked) -> String {
    match entry {
        Peeked::Message(envelope) => {
            let age = envelope.made_at().map_or("?".into(), |at| format!("{:.1} s", age(at).as_secs_f64()));
            format!("{age:>8} old  from {}  {}  tag {}", envelope.src, body_text(&envelope.body), envelope.tag)
        }
        Peeked::Unreadable(why) => format!("unreadable: {why}"),
    }
}

fn peeked_json(entry: &Peeked) -> Value {
    match entry {
        Peeked::Message(envelope) => json!({
            "from": id_json(&envelope.src), "to": id_json(&envelope.dest), "tag": envelope.tag.to_string(),
            "age_s": envelope.made_at().map(|at| age(at).as_secs_f64()),
            "deadline_ms": envelope.deadline, "body": body_text(&envelope.body),
        }),
        Peeked::Unreadable(why) => json!({ "unreadable": why }),
    }
}
