//! The main demo: an epidemic on a contact network, as a multi-agent
//! simulation. `Person` agents find the `HealthOffice` agent with
//! `discover`, join it, and get their neighbors' handles from it; then,
//! round by round, infected persons call `Contact` on their neighbors
//! (agent to agent), everyone advances its state and reports it to the
//! office, and the driver prints the office's tally.
//!
//! Deterministic for a given `--seed`: the network and every infection roll
//! come from the seed, never from timing or ids.
//!
//! `cargo run --release --example simulation [-- --agents 200 --rounds 50 --seed 7]`
//! `cargo run --release --example simulation -- --redis redis://127.0.0.1:6379`

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use actix_academy::prelude::*;
use clap::Parser;
use common::{fail, ExchangeArgs, OrExit};
use futures::future::join_all;

/// SplitMix64: a tiny, good, seedable generator (and hash).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform draw in [0, 1) determined by the inputs alone.
fn roll(parts: &[u64]) -> f64 {
    let h = parts.iter().fold(0u64, |h, p| mix(h ^ *p));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Health {
    Susceptible,
    Infected { since: u32 },
    Recovered,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Disease {
    seed: u64,
    transmission: f64,
    recovery_rounds: u32,
}

// ---------------------------------------------------------------- Person

struct Person {
    index: u32,
    disease: Disease,
    health: Health,
    exposed: bool,
    agent: AgentContext<Person>,
    office: Option<RemoteHandle<HealthOffice>>,
    neighbors: Vec<RemoteHandle<Person>>,
}

impl Actor for Person {
    type Context = Context<Self>;
}

#[agent(name = "person")]
impl Person {
    /// Finds the office by discovery and registers with it.
    #[action]
    fn join(&mut self) -> ResponseActFuture<Self, Result<(), String>> {
        let (agent, index) = (self.agent.clone(), self.index);
        let join = async move {
            let found = agent.exchange().discover::<HealthOffice>().await?;
            let office = found.into_iter().next().ok_or_else(|| Error::UnexpectedReply("no health office".into()))?;
            let office = agent.bind(agent.exchange().get_handle(office));
            office.register(index, UnboundRemoteHandle::new(agent.id().clone())).await?;
            Ok::<_, Error>(office)
        };
        Box::pin(join.into_actor(self).map(|office, person, _| {
            person.office = Some(office.map_err(|e| e.to_string())?);
            Ok(())
        }))
    }

    /// Asks the office who this person's neighbors are, and binds their handles.
    #[action]
    fn wire(&mut self) -> ResponseActFuture<Self, Result<usize, String>> {
        let (office, index) = (self.office.clone(), self.index);
        let ask = async move { office.ok_or("not joined")?.neighbors(index).await.map_err(|e| e.to_string()) };
        Box::pin(ask.into_actor(self).map(|neighbors, person, _| {
            person.neighbors = neighbors?.into_iter().map(|n| person.agent.bind(n)).collect();
            Ok(person.neighbors.len())
        }))
    }

    #[action]
    fn infect(&mut self, round: u32) {
        self.health = Health::Infected { since: round };
    }

    /// If infected, meets every neighbor this round: (contacts, new infections).
    #[action]
    fn spread(&mut self, round: u32) -> ResponseFuture<Result<(u32, u32), String>> {
        let targets = match self.health {
            Health::Infected { .. } => self.neighbors.clone(),
            _ => Vec::new(),
        };
        let from = self.index;
        Box::pin(async move {
            let results = join_all(targets.iter().map(|t| t.contact(round, from))).await;
            let mut infected = 0;
            for result in results {
                infected += u32::from(result.map_err(|e| e.to_string())?);
            }
            Ok((targets.len() as u32, infected))
        })
    }

    /// An infected neighbor met this person: whether it caught the disease.
    #[action]
    fn contact(&mut self, round: u32, from: u32) -> bool {
        let d = self.disease;
        let caught = self.health == Health::Susceptible
            && roll(&[d.seed, u64::from(round), u64::from(from), u64::from(self.index)]) < d.transmission;
        let newly = caught && !self.exposed;
        self.exposed |= caught;
        newly
    }

    /// End of the round: updates health and reports it to the office.
    #[action]
    fn advance(&mut self, round: u32) -> ResponseFuture<Result<(), String>> {
        self.health = match self.health {
            Health::Susceptible if self.exposed => Health::Infected { since: round },
            Health::Infected { since } if round + 1 - since >= self.disease.recovery_rounds => Health::Recovered,
            other => other,
        };
        self.exposed = false;
        let (office, index, health) = (self.office.clone(), self.index, self.health);
        Box::pin(
            async move { office.ok_or("not joined")?.report(round, index, health).await.map_err(|e| e.to_string()) },
        )
    }
}

// ----------------------------------------------------------- HealthOffice

/// Knows everyone, wires the contact network, and tallies daily reports.
struct HealthOffice {
    seed: u64,
    population: u32,
    degree: u32,
    shortcut: f64,
    members: BTreeMap<u32, UnboundRemoteHandle<Person>>,
    tallies: BTreeMap<u32, Tally>,
}

impl Actor for HealthOffice {
    type Context = Context<Self>;
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Tally {
    susceptible: u32,
    infected: u32,
    recovered: u32,
}

#[agent(name = "health-office")]
impl HealthOffice {
    #[action]
    fn register(&mut self, index: u32, person: UnboundRemoteHandle<Person>) {
        self.members.insert(index, person);
    }

    /// The handles of a person's neighbors.
    #[action]
    fn neighbors(&self, index: u32) -> Result<Vec<UnboundRemoteHandle<Person>>, String> {
        let member = |i: u32| self.members.get(&i).cloned().ok_or(format!("person {i} has not joined"));
        self.neighbors_of(index).into_iter().map(member).collect()
    }

    #[action]
    fn report(&mut self, round: u32, _index: u32, health: Health) {
        let tally = self.tallies.entry(round).or_default();
        match health {
            Health::Susceptible => tally.susceptible += 1,
            Health::Infected { .. } => tally.infected += 1,
            Health::Recovered => tally.recovered += 1,
        }
    }

    #[action]
    fn summary(&self, round: u32) -> Tally {
        self.tallies.get(&round).copied().unwrap_or_default()
    }

    /// A ring where each person knows `degree` others, some rewired at random
    /// (a small world). Built from the seed, so every run gets the same one.
    fn neighbors_of(&self, index: u32) -> Vec<u32> {
        let n = self.population;
        let mut out = Vec::new();
        for i in 0..n {
            if i == index {
                continue;
            }
            let (a, b) = (i.min(index), i.max(index));
            let ring = (b - a).min(n - (b - a)) <= self.degree / 2;
            let rewired = roll(&[self.seed, 0xfeed, u64::from(a), u64::from(b)]) < self.shortcut / f64::from(n);
            if ring || rewired {
                out.push(i);
            }
        }
        out
    }
}

// ----------------------------------------------------------------- driver

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    exchange: ExchangeArgs,
    /// Number of Person agents.
    #[arg(long, default_value_t = 200)]
    agents: u32,
    /// Rounds to simulate.
    #[arg(long, default_value_t = 50)]
    rounds: u32,
    /// Seed of the network and of every infection roll.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Contacts per person on the ring.
    #[arg(long, default_value_t = 6)]
    degree: u32,
    /// Extra random contacts per person, on average.
    #[arg(long, default_value_t = 1.0)]
    shortcuts: f64,
    /// Chance that one contact infects.
    #[arg(long, default_value_t = 0.07)]
    transmission: f64,
    /// Rounds an infection lasts.
    #[arg(long, default_value_t = 6)]
    recovery: u32,
    /// Persons infected at the start.
    #[arg(long, default_value_t = 3)]
    initial: u32,
}

/// Runs one step on every person at once and returns the results.
async fn everyone<'a, F, R>(
    persons: &'a [RemoteHandle<Person>],
    step: impl Fn(&'a RemoteHandle<Person>) -> F,
    what: &str,
) -> Vec<R>
where
    F: std::future::Future<Output = Result<R, ActionError<String>>>,
{
    join_all(persons.iter().map(step)).await.into_iter().map(|r| r.or_exit(what)).collect()
}

#[actix::main]
async fn main() {
    let args = Args::parse();
    if args.agents < 2 || args.initial > args.agents {
        fail("need --agents >= 2 and --initial <= --agents");
    }
    let exchange = args.exchange.connect().await;
    println!(
        "epidemic: {} persons + 1 health office, {} rounds, seed {}, on the {}",
        args.agents,
        args.rounds,
        args.seed,
        args.exchange.describe(&exchange)
    );
    let started = Instant::now();
    let disease = Disease { seed: args.seed, transmission: args.transmission, recovery_rounds: args.recovery };

    let mut launcher = Launcher::new(&exchange).await.or_exit("launcher");
    let (seed, population, degree, shortcut) = (args.seed, args.agents, args.degree, args.shortcuts);
    let office = launcher
        .launch(Some("health-office"), move |_| HealthOffice {
            seed,
            population,
            degree,
            shortcut,
            members: BTreeMap::new(),
            tallies: BTreeMap::new(),
        })
        .await
        .or_exit("launch the office");
    let mut persons = Vec::new();
    for index in 0..args.agents {
        let person = launcher
            .launch(Some(&format!("person-{index}")), move |agent| Person {
                index,
                disease,
                health: Health::Susceptible,
                exposed: false,
                agent: agent.clone(),
                office: None,
                neighbors: Vec::new(),
            })
            .await
            .or_exit("launch a person");
        persons.push(person);
    }
    everyone(&persons, |p| p.join(), "join").await;
    let degrees: Vec<usize> = everyone(&persons, |p| p.wire(), "wire").await;
    let links: usize = degrees.iter().sum::<usize>() / 2;
    let setup = started.elapsed();
    println!("setup: {} agents launched, found the office, wired {links} contacts in {setup:.2?}", persons.len() + 1);

    // Patients zero, chosen by the seed.
    let mut zero: Vec<u32> = (0..args.agents).collect();
    zero.sort_by_key(|i| mix(args.seed ^ u64::from(*i)));
    for &i in &zero[..args.initial as usize] {
        persons[i as usize].infect(0).await.or_exit("infect");
    }

    let mut actions = 1 + 4 * u64::from(args.agents) + u64::from(args.initial);
    let mut history = Vec::new();
    let rounds_started = Instant::now();
    for round in 0..args.rounds {
        let spread: Vec<(u32, u32)> = everyone(&persons, |p| p.spread(round), "spread").await;
        let contacts: u32 = spread.iter().map(|s| s.0).sum();
        let infections: u32 = spread.iter().map(|s| s.1).sum();
        everyone(&persons, |p| p.advance(round), "advance").await;
        let tally = office.summary(round).await.or_exit("summary");
        actions += 3 * u64::from(args.agents) + u64::from(contacts) + 1;
        let bar = "#".repeat((tally.infected * 40 / args.agents) as usize);
        println!(
            "round {round:>3}  S {:>5}  I {:>5}  R {:>5}  new {infections:>4}  contacts {contacts:>5}  {bar}",
            tally.susceptible, tally.infected, tally.recovered
        );
        if tally.susceptible + tally.infected + tally.recovered != args.agents {
            fail(&format!(
                "round {round}: the office heard from {} persons, not {}",
                tally.susceptible + tally.infected + tally.recovered,
                args.agents
            ));
        }
        history.push(tally);
    }
    let wall = started.elapsed();
    let rounds_wall = rounds_started.elapsed();

    let (peak_round, peak) = history
        .iter()
        .enumerate()
        .max_by_key(|(r, t)| (t.infected, std::cmp::Reverse(*r)))
        .map(|(r, t)| (r, t.infected))
        .unwrap_or((0, 0));
    let last = history.last().copied().unwrap_or_default();
    let outcomes = launcher.shutdown().await;
    exchange.close().await;

    println!();
    println!("| summary                         | value |");
    println!("|---------------------------------|-------|");
    println!("| persons                         | {:>5} |", args.agents);
    println!("| contacts in the network         | {links:>5} |");
    println!("| peak infected (round)           | {peak:>5} ({peak_round}) |");
    println!("| ever infected                   | {:>5} |", args.agents - last.susceptible);
    println!("| still susceptible               | {:>5} |", last.susceptible);
    println!("| actions called                  | {actions:>5} |");
    println!("| setup time                      | {setup:.2?} |");
    println!("| time for {} rounds              | {rounds_wall:.2?} |", args.rounds);
    println!("| actions per second (rounds)     | {:.0} |", actions as f64 / rounds_wall.as_secs_f64());
    println!("| wall time                       | {wall:.2?} |");
    println!("| agents shut down                | {:>5} |", outcomes.len());
}
