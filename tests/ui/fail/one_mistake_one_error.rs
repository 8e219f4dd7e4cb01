// One mistake in one action gives one error: the behavior is still written
// (without that action), so the program that uses it does not fail too.
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
    fn greet(&self, who: &str) -> String {
        format!("hello {who}")
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
