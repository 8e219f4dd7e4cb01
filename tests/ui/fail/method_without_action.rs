// A method of the agent's impl without `#[action]` is not callable through
// a handle, and calling it says so.
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
    fn buy(&mut self, qty: u32) -> u32 {
        self.stock -= qty;
        self.stock
    }

    fn stock(&self) -> u32 {
        self.stock
    }
}

async fn call(market: RemoteHandle<Market>) {
    let _ = market.buy(1).await;
    let _ = market.stock().await;
}

fn main() {
    let _ = call;
}
