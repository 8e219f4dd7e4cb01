//! Agents written with `#[agent]`: every kind of action, typed errors,
//! one-way calls, the agent's context, describe, names that travel, and a
//! macro-written agent and a hand-written one calling each other across two
//! processes, each process naming the other's behavior with its own type.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix_academy::prelude::*;
use actix_academy::{ActionInfo, Parameter, RemoteErrorKind};
use support::RedisServer;

const CHILD: &str = "ACADEMY_MACROS_CHILD";

/// The agent under test, written with the attribute.
mod market {
    use actix_academy::prelude::*;

    use super::tally::Tally;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Order {
        pub item: String,
        pub qty: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub enum MarketError {
        OutOfStock { left: u32 },
    }

    impl std::fmt::Display for MarketError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl std::error::Error for MarketError {}

    pub struct Market {
        pub stock: u32,
        pub notes: Vec<String>,
    }

    impl Actor for Market {
        type Context = Context<Self>;
    }

    #[agent(name = "market")]
    impl Market {
        /// Sells `order.qty` items; what is left.
        #[action]
        pub fn place(&mut self, order: Order) -> Result<u32, MarketError> {
            if order.qty > self.stock {
                return Err(MarketError::OutOfStock { left: self.stock });
            }
            self.stock -= order.qty;
            Ok(self.stock)
        }

        #[action]
        pub fn stock(&self) -> u32 {
            self.stock
        }

        /// Keeps a note; nobody waits for it.
        #[action(one_way)]
        pub fn note(&mut self, text: String) {
            self.notes.push(text);
        }

        #[action]
        pub fn notes(&self) -> Vec<String> {
            self.notes.clone()
        }

        #[action]
        pub async fn quote(item: String, qty: u32) -> f64 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            item.len() as f64 * qty as f64
        }

        #[action]
        pub fn whoami(&self, ctx: &AgentContext<Self>, #[caller] caller: &EntityId) -> (String, String) {
            (ctx.id().to_string(), caller.to_string())
        }

        #[action]
        pub fn restock(&mut self, n: u32) -> ResponseActFuture<Self, u32> {
            Box::pin(async {}.into_actor(self).map(move |_, market, _| {
                market.stock += n;
                market.stock
            }))
        }

        /// Asks itself, through its own handle.
        #[action(name = "ask_self")]
        pub async fn ask_itself(ctx: AgentContext<Self>) -> Result<u32, String> {
            ctx.handle().stock().await.map_err(|e| e.to_string())
        }

        /// Records `amount` with a (hand-written) tally agent.
        #[action]
        pub async fn settle(
            ctx: AgentContext<Self>,
            tally: UnboundRemoteHandle<Tally>,
            amount: u32,
        ) -> Result<u32, String> {
            let tally = ctx.bind(tally);
            tally.action(super::tally::Record(amount)).await.map_err(|e| e.to_string())
        }

        #[action]
        pub fn stop(&mut self, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }
}

/// What another program knows of the market: its own type, the same name.
mod view {
    use actix_academy::prelude::*;

    use super::market::{MarketError, Order};
    use super::tally::Tally;

    pub struct MarketView;

    impl Actor for MarketView {
        type Context = Context<Self>;
    }

    #[agent(name = "market")]
    impl MarketView {
        #[action]
        pub fn place(&mut self, _order: Order) -> Result<u32, MarketError> {
            unreachable!("only called remotely")
        }

        #[action]
        pub fn stock(&self) -> u32 {
            unreachable!("only called remotely")
        }

        #[action]
        pub async fn settle(_tally: UnboundRemoteHandle<Tally>, _amount: u32) -> Result<u32, String> {
            unreachable!("only called remotely")
        }
    }
}

/// A hand-written agent: messages, handlers, `behavior!`.
mod tally {
    use actix_academy::prelude::*;

    use super::view::MarketView;

    pub struct Tally {
        pub total: u32,
        pub agent: AgentContext<Tally>,
    }

    impl Actor for Tally {
        type Context = Context<Self>;
    }

    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "u32")]
    pub struct Record(pub u32);

    impl Handler<Record> for Tally {
        type Result = u32;
        fn handle(&mut self, m: Record, _: &mut Context<Self>) -> u32 {
            self.total += m.0;
            self.total
        }
    }

    /// Asks a market (written with `#[agent]`) for its stock.
    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "Result<u32, String>")]
    pub struct Audit(pub UnboundRemoteHandle<MarketView>);

    impl Handler<Audit> for Tally {
        type Result = ResponseFuture<Result<u32, String>>;
        fn handle(&mut self, m: Audit, _: &mut Context<Self>) -> Self::Result {
            let market = self.agent.bind(m.0);
            Box::pin(async move { market.stock().await.map_err(|e| e.to_string()) })
        }
    }

    behavior!(Tally { name: "tally", actions: [Record, Audit] });
}

/// An agent whose async action awaits another agent, then updates its own
/// state: the few lines `AgentContext::update` makes it.
mod buyer {
    use actix_academy::prelude::*;

    use super::market::{Market, Order};

    pub struct Buyer {
        pub bought: u32,
    }

    impl Actor for Buyer {
        type Context = Context<Self>;
    }

    #[agent]
    impl Buyer {
        /// Buys `qty` from `market` and counts it; what the market has left.
        #[action]
        pub async fn buy(
            ctx: AgentContext<Self>,
            market: UnboundRemoteHandle<Market>,
            qty: u32,
        ) -> Result<u32, String> {
            let order = Order { item: "apple".into(), qty };
            let left = ctx.bind(market).place(order).await.map_err(|e| e.to_string())?;
            ctx.update(move |me| me.bought += qty).await.map_err(|e| e.to_string())?;
            Ok(left)
        }

        /// How many it bought.
        #[action]
        pub fn bought(&self) -> u32 {
            self.bought
        }
    }
}

use market::{Market, MarketError, Order};
use tally::{Audit, Record, Tally};
use view::MarketView;

fn order(qty: u32) -> Order {
    Order { item: "apple".into(), qty }
}

async fn every_kind_of_action(exchange: &Exchange) {
    let agent = Agent::start(Market { stock: 10, notes: Vec::new() }, exchange, Some("stall")).await.unwrap();
    let market = exchange.get_handle(agent.id().clone()).bind_as_client(exchange).await.unwrap();

    // Sync, with a typed error that is the action's own.
    assert_eq!(market.place(order(3)).await.unwrap(), 7);
    match market.place(order(30)).await {
        Err(ActionError::Action(MarketError::OutOfStock { left: 7 })) => {}
        other => panic!("expected the market's own error, got {other:?}"),
    }
    assert_eq!(market.stock().await.unwrap(), 7);
    // Async, without the actor; an Actix response type; the agent's context.
    assert_eq!(market.quote("pear".into(), 3).await.unwrap(), 12.0);
    assert_eq!(market.restock(5).await.unwrap(), 12);
    assert_eq!(market.ask_itself().await.unwrap(), 12);
    let (me, caller) = market.whoami().await.unwrap();
    assert_eq!(me, "AgentId<stall>");
    assert_eq!(caller, market.mailbox_id().to_string());

    // One-way: sent in order, applied, nobody waits.
    for i in 0..3 {
        market.note(format!("note {i}")).await.unwrap();
    }
    assert_eq!(market.notes().await.unwrap(), ["note 0", "note 1", "note 2"]);

    // Describe: names, parameters, results, one-way, docs.
    let description = market.describe().await.unwrap();
    assert_eq!(description.behavior, "market");
    let place = description.actions.iter().find(|a| a.name == "place").unwrap();
    const ORDER: &[Parameter] = &[Parameter::new("order", "Order")];
    assert_eq!(
        *place,
        ActionInfo::fallible(
            "place",
            ORDER,
            "Result<u32, MarketError>",
            "Sells `order.qty` items; what is left.",
            "MarketError"
        )
    );
    assert!(description.actions.iter().any(|a| a.name == "note" && a.one_way));
    assert!(description.actions.iter().any(|a| a.name == "ask_self"));
    assert!(!description.actions.iter().any(|a| a.name == "ask_itself"));
    assert_eq!(description.actions, Market::actions());

    // The hand-written behavior describes itself too.
    assert_eq!(Tally::actions().iter().map(|a| a.name.as_ref()).collect::<Vec<_>>(), ["Record", "Audit"]);
    assert_eq!(Tally::actions()[0].result, "u32");

    // An actor that stops itself ends the agent as a failure, its mailbox
    // kept for a restart (over Redis it reads inactive at once, so callers
    // fail fast); shutting it down then terminates the mailbox.
    market.stop().await.unwrap();
    assert_eq!(agent.wait().await, AgentExit::Failed);
    assert_ne!(exchange.status(agent.id()).await.unwrap(), actix_academy::MailboxStatus::Terminated);
    assert_eq!(agent.shutdown().await, AgentExit::Failed);
    assert_eq!(exchange.status(agent.id()).await.unwrap(), actix_academy::MailboxStatus::Terminated);
    market.close().await.unwrap();
}

#[actix::test]
async fn every_kind_of_action_on_the_local_exchange() {
    every_kind_of_action(&Exchange::local()).await;
}

#[actix::test]
async fn every_kind_of_action_over_redis_and_tcp() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    every_kind_of_action(&exchange).await;
    exchange.close().await;
}

#[actix::test]
async fn an_agent_shuts_down_from_its_own_process_and_names_travel_through_redis() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let agent = Agent::start(Market { stock: 1, notes: Vec::new() }, &exchange, Some("stall-7")).await.unwrap();

    // Another process (another exchange) sees the agent with its name.
    let other = redis.builder().namespace(exchange.namespace()).start().await.unwrap();
    let found = other.discover::<MarketView>().await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].to_string(), "AgentId<stall-7>");
    assert_eq!(found[0].entity().uid(), agent.id().entity().uid());

    // A behavior-level description for tools, without the type.
    let by_name = other.discover_by_name("market", Discovery::new().exact()).await.unwrap();
    assert_eq!(by_name[0].name(), Some("stall-7"));

    // Restarted elsewhere from its bare UUID (as a restart recipe parses
    // it), it keeps its name.
    assert_eq!(agent.shutdown_with(false).await, AgentExit::Shutdown);
    let bare: AgentId<Market> = agent.id().uid().to_string().parse().unwrap();
    assert_eq!(bare.name(), None);
    let again = Agent::launch(Market { stock: 1, notes: Vec::new() }, bare, &other).await.unwrap();
    assert_eq!(again.id().to_string(), "AgentId<stall-7>");

    assert_eq!(again.shutdown().await, AgentExit::Shutdown);
    assert_eq!(exchange.status(again.id()).await.unwrap(), actix_academy::MailboxStatus::Terminated);
    assert!(other.discover::<MarketView>().await.unwrap().is_empty());
    other.close().await;
    exchange.close().await;
}

/// The child process: serves a market (written with `#[agent]`) until it is
/// shut down.
#[actix::test]
#[ignore = "run by the other tests in a child process"]
async fn child() {
    let Ok(config) = std::env::var(CHILD) else {
        panic!("a child process entry point, started by the other tests of this file with {CHILD} set; it fails when run alone")
    };
    let (url, namespace) = config.split_once(' ').unwrap();
    let exchange =
        actix_academy::Exchange::builder(url).namespace(namespace).secret("test secret").start().await.unwrap();
    let agent = Agent::start(Market { stock: 100, notes: Vec::new() }, &exchange, Some("far-market")).await.unwrap();
    agent.wait().await;
    exchange.close().await;
}

#[actix::test]
async fn a_macro_agent_and_a_hand_written_agent_call_each_other_across_processes() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{} {}", redis.url(), exchange.namespace()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // This process knows the market only as `MarketView`, named "market".
    let deadline = Instant::now() + Duration::from_secs(60);
    let id: AgentId<MarketView> = loop {
        if let Some(id) = exchange.discover::<MarketView>().await.unwrap().pop() {
            break id;
        }
        assert!(Instant::now() < deadline, "the market process never showed up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(id.to_string(), "AgentId<far-market>");

    let tally = Agent::launch_with(exchange.register_agent(Some("tally")).await.unwrap(), &exchange, 16, |agent| {
        Tally { total: 0, agent: agent.clone() }
    })
    .await
    .unwrap();
    let market = exchange.get_handle(id.clone()).bind_as_client(&exchange).await.unwrap();
    let tally_handle = exchange.get_handle(tally.id().clone()).bind_as_client(&exchange).await.unwrap();

    // Macro-written, in the other process, calls the hand-written one here.
    assert_eq!(market.place(order(40)).await.unwrap(), 60);
    assert_eq!(market.settle(tally_handle.unbound(), 40).await.unwrap(), 40);
    assert_eq!(tally_handle.action(Record(2)).await.unwrap(), 42);
    // Hand-written, here, calls the macro-written one there.
    assert_eq!(tally_handle.action(Audit(market.unbound())).await.unwrap(), Ok(60));
    // A runtime error stays a runtime error.
    match market.place(order(1000)).await {
        Err(ActionError::Action(MarketError::OutOfStock { left: 60 })) => {}
        other => panic!("expected OutOfStock, got {other:?}"),
    }

    market.shutdown().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the market process did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "the market process failed: {status}");
    assert_eq!(tally.shutdown().await, AgentExit::Shutdown);
    let gone = market.stock().await;
    assert!(matches!(gone, Err(Error::MailboxClosed(_))), "{gone:?}");
    exchange.close().await;
}

#[actix::test]
async fn a_call_to_an_agent_that_lacks_the_action_is_a_typed_remote_error() {
    // Two programs that disagree on a behavior's actions: the call fails
    // with UnknownAction, it does not hang or decode garbage.
    mod newer {
        use actix_academy::prelude::*;
        pub struct Stall;
        impl Actor for Stall {
            type Context = Context<Self>;
        }
        #[agent(name = "stall")]
        impl Stall {
            #[action]
            pub fn refund(&mut self, amount: u32) -> u32 {
                amount
            }

            /// Not one-way here.
            #[action]
            pub fn poke(&mut self) {}
        }
    }
    mod older {
        use actix_academy::prelude::*;
        pub struct Stall;
        impl Actor for Stall {
            type Context = Context<Self>;
        }
        #[agent(name = "stall")]
        impl Stall {
            #[action]
            pub fn sell(&mut self) -> u32 {
                1
            }

            #[action(one_way)]
            pub fn poke(&mut self) {}
        }
    }
    let exchange = Exchange::local();
    let agent = Agent::start(older::Stall, &exchange, None).await.unwrap();
    let id = exchange.discover::<newer::Stall>().await.unwrap().pop().unwrap();
    let stall = exchange.get_handle(id).bind_as_client(&exchange).await.unwrap();
    match stall.refund(3).await {
        Err(Error::Remote(e)) if e.kind == RemoteErrorKind::UnknownAction => {}
        other => panic!("expected UnknownAction, got {other:?}"),
    }
    // One-way for the agent, not for this caller: it is answered all the same.
    let poked = tokio::time::timeout(Duration::from_secs(60), stall.poke()).await;
    assert!(matches!(poked, Ok(Ok(()))), "{poked:?}");
    agent.shutdown().await;
}

/// An agent whose every slot is taken by actions that wait for a call to
/// the agent itself: the waiting calls expire at their deadline instead of
/// holding the agent for ever.
#[actix::test]
async fn actions_that_call_their_own_busy_agent_fail_at_the_deadline_instead_of_hanging() {
    mod selfish {
        use actix_academy::prelude::*;
        use std::time::Duration;
        pub struct Loop;
        impl Actor for Loop {
            type Context = Context<Self>;
        }
        #[agent]
        impl Loop {
            #[action]
            pub async fn ask_myself(ctx: AgentContext<Self>) -> Result<u32, String> {
                let me = ctx.handle().with_liveness_timeout(Some(Duration::from_millis(300)));
                me.answer().await.map_err(|e| e.to_string())
            }

            #[action]
            pub fn answer(&self) -> u32 {
                42
            }
        }
    }
    let exchange = Exchange::local();
    let id = exchange.register_agent(None).await.unwrap();
    let agent = Agent::launch_with(id, &exchange, 1, |_| selfish::Loop).await.unwrap();
    let handle = exchange.get_handle(agent.id().clone()).bind_as_client(&exchange).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), handle.ask_myself()).await.expect("no deadlock");
    match outcome {
        Err(ActionError::Action(e)) => assert!(e.contains("DeadlinePassed"), "{e}"),
        other => panic!("expected the inner call to pass its deadline, got {other:?}"),
    }
    // The slot is free again.
    assert_eq!(handle.answer().await.unwrap(), 42);
    agent.shutdown().await;
}

#[test]
fn hand_written_action_names_are_the_last_segment_with_its_generics() {
    use actix_academy::__private::action_name;
    assert_eq!(action_name("Add"), "Add");
    assert_eq!(action_name("a::b::Add"), "Add");
    assert_eq!(action_name("m::Msg<x::A, B>"), "Msg<x::A, B>");
    assert_eq!(action_name("Msg < x :: A >"), "Msg < x :: A >");
}

#[actix::test]
async fn an_async_action_awaits_another_agent_then_updates_its_own_state() {
    let redis = RedisServer::start();
    let exchange = redis.exchange().await;
    let market = Agent::start(Market { stock: 10, notes: Vec::new() }, &exchange, Some("stall")).await.unwrap();
    let buyer = Agent::start(buyer::Buyer { bought: 0 }, &exchange, Some("buyer")).await.unwrap();
    let handle = exchange.get_handle(buyer.id().clone()).bind_as_client(&exchange).await.unwrap();
    let stall = exchange.get_handle(market.id().clone());
    assert_eq!(handle.buy(stall.clone(), 3).await.unwrap(), 7);
    // Buys run side by side (async actions do not hold the actor); each
    // update is applied whole, so none is lost.
    let buys = (0..3).map(|_| handle.buy(stall.clone(), 2));
    for left in futures::future::join_all(buys).await {
        left.unwrap();
    }
    assert_eq!(handle.bought().await.unwrap(), 9);
    // The market refuses (1 left): nothing is counted.
    assert!(matches!(handle.buy(stall.clone(), 5).await, Err(ActionError::Action(_))));
    assert_eq!(handle.bought().await.unwrap(), 9);
    buyer.shutdown().await;
    market.shutdown().await;
    exchange.close().await;
}
