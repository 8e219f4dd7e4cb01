// An action method cannot hide one of the handle's own methods.
use actix_academy::prelude::*;

struct Pinger;
impl Actor for Pinger {
    type Context = Context<Self>;
}

#[agent]
impl Pinger {
    #[action]
    fn ping(&self) -> u32 {
        1
    }
}

fn main() {}
