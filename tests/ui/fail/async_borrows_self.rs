// An async action cannot hold the actor across awaits.
use actix_academy::prelude::*;

struct Market {
    stock: u32,
}
impl Actor for Market {
    type Context = Context<Self>;
}

#[agent]
impl Market {
    #[action]
    async fn restock(&mut self, n: u32) -> u32 {
        self.stock += n;
        self.stock
    }
}

fn main() {}
