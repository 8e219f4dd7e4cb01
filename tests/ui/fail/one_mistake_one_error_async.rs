// An async action that borrows the actor, in a program that uses the
// behavior: one error, not one for every use of the behavior.
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
    fn stock(&self) -> u32 {
        self.stock
    }

    #[action]
    async fn later(&self) -> u32 {
        self.stock
    }
}

async fn run(exchange: &Exchange) -> Result<u32, Box<dyn std::error::Error>> {
    let agent = Agent::start(Market { stock: 3 }, exchange, Some("market")).await?;
    let market = exchange.get_handle(agent.id().clone()).bind_as_client(exchange).await?;
    Ok(market.stock().await?)
}

fn main() {
    let _ = run;
}
