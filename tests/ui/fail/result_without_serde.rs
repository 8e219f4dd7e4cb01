// A result type must travel over the network: it derives Serialize and
// Deserialize. The error points at the action that returns it.
use actix_academy::prelude::*;

struct Report {
    lines: u32,
}

struct Market;
impl Actor for Market {
    type Context = Context<Self>;
}

#[agent]
impl Market {
    #[action]
    fn report(&self) -> Report {
        Report { lines: 1 }
    }
}

fn main() {}
