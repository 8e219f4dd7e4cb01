// Nobody waits for what a one-way action returns.
use actix_academy::prelude::*;

struct Logger;
impl Actor for Logger {
    type Context = Context<Self>;
}

#[agent]
impl Logger {
    #[action(one_way)]
    fn log(&mut self, line: String) -> usize {
        line.len()
    }
}

fn main() {}
