//! A market, five traders and a reporter: three behaviors, thirteen actions;
//! a trader's actions await the market, then update the trader. One process:
//! `cargo run --example market [-- --redis URL]`. Two, over Redis, found by
//! discovery: `... -- --redis URL --namespace demo --role market`, then `--role traders`.

mod common;

use std::{fmt::Display, future::Future, time::Duration};

use actix_academy::prelude::*;
use clap::{Parser, ValueEnum};
use common::{fail, ExchangeArgs, OrExit};
use futures::future::join_all;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    /// Shares to buy (positive) or sell (negative).
    qty: i64,
    limit: f64,
}

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
enum Refused {
    #[error("the price {0:.2} is past the order's limit")]
    PastLimit(f64),
    #[error("the market is halted")]
    Halted,
}

#[derive(Actor, Clone, Copy, Default, Serialize, Deserialize)]
struct Market {
    price: f64,
    trades: u64,
    volume: u64,
    halted: bool,
}

#[agent(name = "market")]
impl Market {
    #[action]
    fn quote(&self) -> f64 {
        self.price
    }

    /// Fills an order at the current price if it is within its limit; the
    /// price moves a little with each fill. The fill price.
    #[action]
    fn place(&mut self, order: Order) -> Result<f64, Refused> {
        let price = self.price;
        let within = if order.qty > 0 { price <= order.limit } else { price >= order.limit };
        if self.halted || !within {
            return Err(if self.halted { Refused::Halted } else { Refused::PastLimit(price) });
        }
        self.price *= 1.0 + 0.002 * order.qty as f64;
        self.trades += 1;
        self.volume += order.qty.unsigned_abs();
        Ok(price)
    }

    #[action]
    fn stats(&self) -> Market {
        *self
    }

    /// Refuses every order until `reopen`.
    #[action]
    fn halt(&mut self) {
        self.halted = true;
    }

    #[action]
    fn reopen(&mut self) {
        self.halted = false;
    }
}

#[derive(Actor)]
struct Trader {
    index: u32,
    cash: f64,
    shares: i64,
    market: Option<RemoteHandle<Market>>,
}

/// A trader's actions are `async fn`s: each awaits the market, then updates
/// the trader with `ctx.update`, and the trader serves other calls meanwhile.
#[agent(name = "trader")]
impl Trader {
    /// Finds the market by discovery.
    #[action]
    async fn connect(ctx: AgentContext<Self>) -> Result<(), String> {
        let id = ctx.exchange().discover::<Market>().await?.pop().ok_or("no market")?;
        let market = ctx.bind(ctx.exchange().get_handle(id));
        Ok(ctx.update(move |trader| trader.market = Some(market)).await?)
    }

    /// One round: buys (or sells) five shares if the price is below (or
    /// above) its idea of their value. Whether the market filled the order.
    #[action]
    async fn trade(ctx: AgentContext<Self>, round: u32) -> Result<bool, String> {
        let (index, shares) = ctx.update(|t| (t.index, t.shares)).await?;
        let value = 100.0 + (f64::from(index) - 2.0) * 2.0 + f64::from(round % 5);
        Self::fill(ctx, Order { qty: if round % 2 == 0 || shares < 5 { 5 } else { -5 }, limit: value }).await
    }

    /// Sells every share at whatever the market pays. Whether it did.
    #[action]
    async fn liquidate(ctx: AgentContext<Self>) -> Result<bool, String> {
        let shares = ctx.update(|t| t.shares).await?;
        Self::fill(ctx, Order { qty: -shares, limit: 0.0 }).await
    }

    /// Cash plus shares at the market's price.
    #[action]
    async fn worth(ctx: AgentContext<Self>) -> Result<f64, String> {
        let (market, cash, shares) = ctx.update(|t| (t.market.clone(), t.cash, t.shares)).await?;
        Ok(cash + shares as f64 * market.ok_or("not connected")?.quote().await?)
    }

    #[action]
    fn shares(&self) -> i64 {
        self.shares
    }

    /// Places `order`; if it fills, settles it. Whether it filled.
    async fn fill(ctx: AgentContext<Self>, order: Order) -> Result<bool, String> {
        let market = ctx.update(|t| t.market.clone()).await?.ok_or("not connected")?;
        let qty = order.qty;
        let price = match market.place(order).await {
            Err(ActionError::Action(_refused)) => return Ok(false),
            fill => fill?,
        };
        ctx.update(move |t| (t.cash, t.shares) = (t.cash - price * qty as f64, t.shares + qty)).await?;
        Ok(true)
    }
}

#[derive(Actor, Default)]
struct Reporter {
    lines: Vec<String>,
    stopped: bool,
}

#[agent(name = "reporter")]
impl Reporter {
    /// A loop: every `period_ms` until `stop`, reads the market's
    /// statistics. One way, so the caller does not wait for it to end.
    #[action(one_way)]
    async fn watch(ctx: AgentContext<Self>, market: UnboundRemoteHandle<Market>, period_ms: u64) {
        let market = ctx.bind(market);
        while let Ok(false) = ctx.update(|me| me.stopped).await {
            if let Ok(s) = market.stats().await {
                let line = format!("price {:>7.2}  trades {:>4}  volume {:>5}", s.price, s.trades, s.volume);
                ctx.update(move |me| me.lines.push(line)).await.ok();
            }
            tokio::time::sleep(Duration::from_millis(period_ms)).await;
        }
    }

    #[action]
    fn stop(&mut self) {
        self.stopped = true;
    }

    /// The latest reading, and how many there were.
    #[action]
    fn report(&self) -> (Option<String>, usize) {
        (self.lines.last().cloned(), self.lines.len())
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Role {
    /// The market and the reporter, until the traders shut them down.
    Market,
    /// The traders, which find the market and the reporter by discovery.
    Traders,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    exchange: ExchangeArgs,
    /// Without it, everything in this process.
    #[arg(long, value_enum)]
    role: Option<Role>,
}

#[actix::main]
async fn main() {
    let args = Args::parse();
    if args.role.is_some() && args.exchange.namespace.is_none() {
        fail("two processes share an exchange through --redis URL and the same --namespace NAME");
    }
    let exchange = args.exchange.connect().await;
    println!("a market, 5 traders and a reporter on the {}", args.exchange.describe(&exchange));
    let mut launcher = Launcher::new(&exchange).await.or_exit("launcher");
    if args.role != Some(Role::Traders) {
        let make = |_: &_| Market { price: 100.0, ..Market::default() };
        let market = launcher.launch(Some("market"), make).await.or_exit("launch");
        let reporter = launcher.launch(Some("reporter"), |_| Reporter::default()).await.or_exit("launch");
        reporter.watch(market.unbound(), 2).await.or_exit("watch");
    }
    if args.role == Some(Role::Market) {
        println!("the market and the reporter are up; start the traders' process");
        return println!("{} agents shut down by the traders' process", launcher.wait().await.len());
    }
    let wait = Discovery::new().wait_for(1, Duration::from_secs(60));
    let market = exchange.discover_with::<Market>(wait).await.or_exit("find the market").remove(0);
    let reporter = exchange.discover_with::<Reporter>(wait).await.or_exit("find the reporter").remove(0);
    let client = Client::connect(&exchange, Some("driver")).await.or_exit("client");
    let (market, reporter) = (client.bind(exchange.get_handle(market)), client.bind(exchange.get_handle(reporter)));
    let mut traders = Vec::new();
    for index in 0..5 {
        let make = move |_: &_| Trader { index, cash: 10_000.0, shares: 50, market: None };
        traders.push(launcher.launch(Some(&format!("trader-{index}")), make).await.or_exit("launch"));
    }
    all(traders.iter().map(|t| t.connect()), "connect").await;
    for round in 0..20 {
        let filled = all(traders.iter().map(|t| t.trade(round)), "trade").await.into_iter().filter(|f| *f).count();
        let (latest, _) = reporter.report().await.or_exit("report");
        println!("round {round:>2}: {filled} orders filled   reporter: {}", latest.as_deref().unwrap_or("-"));
    }
    market.halt().await.or_exit("halt");
    let sold = all(traders.iter().map(|t| t.liquidate()), "liquidate").await.into_iter().filter(|f| *f).count();
    market.reopen().await.or_exit("reopen");
    all(traders.iter().map(|t| t.liquidate()), "liquidate").await;
    let mut worth = all(traders.iter().map(|t| t.worth()), "worth").await;
    worth.sort_by(f64::total_cmp);
    let held: i64 = all(traders.iter().map(|t| t.shares()), "shares").await.into_iter().sum();
    let stats = market.stats().await.or_exit("stats");
    println!("final price {:.2} after {} trades, {sold} of them while halted", stats.price, stats.trades);
    println!("richest {:.0}, poorest {:.0}, shares still held {held}", worth[worth.len() - 1], worth[0]);
    reporter.stop().await.or_exit("stop");
    let (_, readings) = reporter.report().await.or_exit("report");
    println!("the reporter's loop read the market {readings} times");
    if args.role == Some(Role::Traders) {
        market.shutdown().await.or_exit("shut the market down");
        reporter.shutdown().await.or_exit("shut the reporter down");
    }
    println!("{} agents shut down", launcher.shutdown().await.len());
    if stats.trades == 0 || readings == 0 || held != 0 || sold != 0 {
        fail("no trade, no reading, a trader still holds shares, or the halted market sold");
    }
}

/// Awaits every call; exits on the first that failed.
async fn all<T, E: Display>(calls: impl Iterator<Item = impl Future<Output = Result<T, E>>>, what: &str) -> Vec<T> {
    join_all(calls).await.into_iter().map(|r| r.or_exit(what)).collect()
}
