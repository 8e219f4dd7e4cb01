//! A market, twenty traders and a reporter: three behaviors, nine actions,
//! all written with `#[agent]`; a trader's actions await the market, then
//! update the trader (`ctx.update`). Traders find the market by discovery, ask
//! for quotes and place orders whose price moves with demand; the reporter
//! runs a loop in its own actor that reads the market's statistics; the
//! driver prints what each trader ended with.
//!
//! `cargo run --example market [-- --redis redis://127.0.0.1:6379 --rounds 20]`

mod common;

use std::time::Duration;

use actix_academy::prelude::*;
use clap::Parser;
use common::{ExchangeArgs, OrExit};
use futures::future::join_all;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    buy: bool,
    qty: u32,
    limit: f64,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Stats {
    price: f64,
    trades: u64,
    volume: u64,
    refused: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum Refused {
    PriceAboveLimit { price: f64 },
    PriceBelowLimit { price: f64 },
    Closed,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

// ---------------------------------------------------------------- Market

struct Market {
    stats: Stats,
    open: bool,
}

impl Actor for Market {
    type Context = Context<Self>;
}

#[agent(name = "market")]
impl Market {
    #[action]
    fn quote(&self) -> f64 {
        self.stats.price
    }

    /// Fills an order at the current price if it is within its limit; the
    /// price moves a little with each fill. The fill price.
    #[action]
    fn place(&mut self, order: Order) -> Result<f64, Refused> {
        let price = self.stats.price;
        if !self.open {
            return Err(Refused::Closed);
        }
        if order.buy && price > order.limit {
            self.stats.refused += 1;
            return Err(Refused::PriceAboveLimit { price });
        }
        if !order.buy && price < order.limit {
            self.stats.refused += 1;
            return Err(Refused::PriceBelowLimit { price });
        }
        let impact = 0.002 * f64::from(order.qty);
        self.stats.price *= if order.buy { 1.0 + impact } else { 1.0 - impact };
        self.stats.trades += 1;
        self.stats.volume += u64::from(order.qty);
        Ok(price)
    }

    #[action]
    fn stats(&self) -> Stats {
        self.stats
    }

    /// Refuses every order from now on.
    #[action(one_way)]
    fn halt(&mut self) {
        self.open = false;
    }
}

// ---------------------------------------------------------------- Trader

struct Trader {
    index: u64,
    cash: f64,
    shares: u32,
    market: Option<RemoteHandle<Market>>,
}

impl Actor for Trader {
    type Context = Context<Self>;
}

#[agent(name = "trader")]
impl Trader {
    /// Finds the market by discovery. (An `async fn` action: it awaits
    /// other agents, then changes the trader with `ctx.update`.)
    #[action]
    async fn connect(ctx: AgentContext<Self>) -> Result<(), String> {
        let id = ctx.exchange().discover::<Market>().await.map_err(|e| e.to_string())?.pop();
        let market = ctx.bind(ctx.exchange().get_handle(id.ok_or("no market")?));
        ctx.update(move |trader| trader.market = Some(market)).await.map_err(|e| e.to_string())
    }

    /// One round: buys below its idea of value, sells above it.
    #[action]
    async fn trade(ctx: AgentContext<Self>, round: u32) -> Result<bool, String> {
        let seen = ctx.update(|trader| (trader.market.clone(), trader.index, trader.cash, trader.shares));
        let (market, index, cash, shares) = seen.await.map_err(|e| e.to_string())?;
        let market = market.ok_or("not connected")?;
        let value = 100.0 + (index as f64 - 10.0) * 0.8 + f64::from(round % 5);
        let price = market.quote().await.map_err(|e| e.to_string())?;
        let order = match price < value {
            true if cash >= price * 5.0 => Order { buy: true, qty: 5, limit: value },
            false if shares >= 5 => Order { buy: false, qty: 5, limit: value },
            _ => return Ok(false),
        };
        let fill = match market.place(order.clone()).await {
            Ok(fill) => fill,
            Err(ActionError::Action(_refused)) => return Ok(false),
            Err(e) => return Err(e.to_string()),
        };
        let amount = fill * f64::from(order.qty);
        let settle = move |trader: &mut Trader| {
            if order.buy {
                trader.cash -= amount;
                trader.shares += order.qty;
            } else {
                trader.cash += amount;
                trader.shares -= order.qty;
            }
        };
        ctx.update(settle).await.map_err(|e| e.to_string())?;
        Ok(true)
    }

    #[action]
    fn portfolio(&self) -> (f64, u32) {
        (self.cash, self.shares)
    }
}

// -------------------------------------------------------------- Reporter

struct Reporter {
    lines: Vec<String>,
}

impl Actor for Reporter {
    type Context = Context<Self>;
}

#[agent(name = "reporter")]
impl Reporter {
    /// Starts the loop: every `period_ms`, reads the market's statistics.
    #[action]
    fn watch(
        &mut self,
        market: UnboundRemoteHandle<Market>,
        period_ms: u64,
        me: &AgentContext<Self>,
        ctx: &mut Context<Self>,
    ) {
        let market = me.bind(market);
        // The loop runs in the reporter's own context and stops with it.
        ctx.run_interval(Duration::from_millis(period_ms), move |reporter, ctx| {
            let market = market.clone();
            let read = async move { market.stats().await }.into_actor(reporter).map(|stats, reporter, _| {
                if let Ok(s) = stats {
                    let line = format!("price {:>7.2}  trades {:>4}  volume {:>5}", s.price, s.trades, s.volume);
                    reporter.lines.push(line);
                }
            });
            ctx.spawn(read);
        });
    }

    /// The latest reading, and how many there were.
    #[action]
    fn report(&self) -> (Option<String>, usize) {
        (self.lines.last().cloned(), self.lines.len())
    }
}

// ---------------------------------------------------------------- driver

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    exchange: ExchangeArgs,
    /// Trading rounds.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Traders.
    #[arg(long, default_value_t = 20)]
    traders: u64,
}

#[actix::main]
async fn main() {
    let args = Args::parse();
    let exchange = args.exchange.connect().await;
    println!(
        "a market, {} traders and a reporter, {} rounds, on the {}",
        args.traders,
        args.rounds,
        args.exchange.describe(&exchange)
    );
    let mut launcher = Launcher::new(&exchange).await.or_exit("launcher");
    let stats = Stats { price: 100.0, ..Stats::default() };
    let market = launcher.launch(Some("market"), move |_| Market { stats, open: true }).await.or_exit("launch");
    let reporter = launcher.launch(Some("reporter"), |_| Reporter { lines: Vec::new() }).await.or_exit("launch");
    let mut traders = Vec::new();
    for index in 0..args.traders {
        let name = format!("trader-{index}");
        let trader = launcher
            .launch(Some(&name), move |_| Trader { index, cash: 10_000.0, shares: 50, market: None })
            .await
            .or_exit("launch");
        traders.push(trader);
    }
    join_all(traders.iter().map(|t| t.connect())).await.into_iter().for_each(|r| r.or_exit("connect"));
    reporter.watch(market.unbound(), 2).await.or_exit("watch");

    for round in 0..args.rounds {
        let fills = join_all(traders.iter().map(|t| t.trade(round))).await;
        let filled = fills.into_iter().map(|r| r.or_exit("trade")).filter(|f| *f).count();
        let (latest, _) = reporter.report().await.or_exit("report");
        println!("round {round:>3}: {filled:>2} orders filled   reporter: {}", latest.as_deref().unwrap_or("-"));
    }
    market.halt().await.or_exit("halt");
    let stats = market.stats().await.or_exit("stats");
    let mut worth = Vec::new();
    for trader in &traders {
        let (cash, shares) = trader.portfolio().await.or_exit("portfolio");
        worth.push((trader.agent_id().to_string(), cash + f64::from(shares) * stats.price));
    }
    worth.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("final price {:.2} after {} trades ({} refused)", stats.price, stats.trades, stats.refused);
    println!(
        "richest {} ({:.0}), poorest {} ({:.0})",
        worth[0].0,
        worth[0].1,
        worth[worth.len() - 1].0,
        worth[worth.len() - 1].1
    );
    let (_, readings) = reporter.report().await.or_exit("report");
    println!("the reporter's loop read the market {readings} times");
    let outcomes = launcher.shutdown().await;
    println!("{} agents shut down", outcomes.len());
    if stats.trades == 0 {
        common::fail("no trade happened");
    }
}
