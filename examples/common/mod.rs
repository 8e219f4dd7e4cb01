//! What every example shares: choosing the exchange from the command line.
#![allow(dead_code)]

use actix_academy::Exchange;

/// `--redis URL` selects the hybrid exchange; without it, the local one.
#[derive(clap::Args, Debug, Clone)]
pub struct ExchangeArgs {
    /// Redis URL (e.g. redis://127.0.0.1:6379): run over the hybrid exchange.
    #[arg(long)]
    pub redis: Option<String>,
    /// Redis key namespace (default: a fresh random one).
    #[arg(long)]
    pub namespace: Option<String>,
}

impl ExchangeArgs {
    /// The chosen exchange; exits with a clear message if Redis is unreachable.
    pub async fn connect(&self) -> Exchange {
        let Some(url) = &self.redis else {
            return Exchange::local();
        };
        let builder = Exchange::builder(url);
        let builder = match &self.namespace {
            Some(namespace) => builder.namespace(namespace),
            None => builder.random_namespace(),
        };
        match builder.start().await {
            Ok(exchange) => exchange,
            Err(e) => fail(&format!(
                "cannot reach Redis at {url}: {e}\n  start one with: redis-server --port 6379 --save '' --appendonly no"
            )),
        }
    }

    /// Which exchange, for the output.
    pub fn describe(&self, exchange: &Exchange) -> String {
        match &self.redis {
            Some(url) => format!("hybrid exchange on {url} (namespace {})", exchange.namespace()),
            None => "local exchange (in process)".to_owned(),
        }
    }
}

/// Prints an error and exits non-zero.
pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}

/// Unwraps or exits non-zero with what failed.
pub trait OrExit<T> {
    fn or_exit(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> OrExit<T> for Result<T, E> {
    fn or_exit(self, what: &str) -> T {
        self.unwrap_or_else(|e| fail(&format!("{what}: {e}")))
    }
}

/// Progress of a long step: a bar redrawn in place where a person watches
/// (a terminal), a plain line every tenth of the way otherwise (a log).
pub struct Progress {
    what: String,
    total: u64,
    done: u64,
    terminal: bool,
}

impl Progress {
    pub fn new(what: &str, total: u64) -> Self {
        use std::io::IsTerminal;
        Self { what: what.to_owned(), total: total.max(1), done: 0, terminal: std::io::stdout().is_terminal() }
    }

    pub fn tick(&mut self) {
        use std::io::Write;
        self.done += 1;
        if self.terminal {
            let filled = (self.done * 30 / self.total) as usize;
            print!("\r  {} [{:<30}] {}/{}", self.what, "#".repeat(filled), self.done, self.total);
            if self.done >= self.total {
                println!();
            }
            let _ = std::io::stdout().flush();
        } else if self.done * 10 / self.total > (self.done - 1) * 10 / self.total {
            println!("  {}: {}/{}", self.what, self.done, self.total);
        }
    }
}
