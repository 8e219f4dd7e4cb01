// A handle offers exactly the behavior's actions.
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
}

async fn call(market: RemoteHandle<Market>) {
    let _ = market.buy(1).await;
    let _ = market.sell(1).await;
}

fn main() {
    let _ = call;
}
