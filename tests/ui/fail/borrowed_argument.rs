// Arguments travel over the network: they are owned.
use actix_academy::prelude::*;

struct Greeter;
impl Actor for Greeter {
    type Context = Context<Self>;
}

#[agent]
impl Greeter {
    #[action]
    fn greet(&self, name: &str) -> String {
        format!("hello {name}")
    }
}

fn main() {}
