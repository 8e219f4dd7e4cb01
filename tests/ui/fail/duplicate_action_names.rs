// Two actions cannot share a name on the wire.
use actix_academy::prelude::*;

struct Market;
impl Actor for Market {
    type Context = Context<Self>;
}

#[agent]
impl Market {
    #[action]
    fn buy(&mut self, qty: u32) -> u32 {
        qty
    }

    #[action(name = "buy")]
    fn purchase(&mut self, qty: u32) -> u32 {
        qty
    }
}

fn main() {}
