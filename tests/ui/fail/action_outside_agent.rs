// `#[action]` only means something inside an `#[agent]` impl block.
use actix_academy::prelude::*;

struct Market;
impl Actor for Market {
    type Context = Context<Self>;
}

impl Market {
    #[action]
    fn buy(&mut self, qty: u32) -> u32 {
        qty
    }
}

fn main() {}
