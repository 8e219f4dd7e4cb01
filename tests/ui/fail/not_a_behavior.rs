// An actor that declares no actions is not an agent's behavior.
use actix_academy::prelude::*;

struct Plain;
impl Actor for Plain {
    type Context = Context<Self>;
}

async fn register(exchange: Exchange) {
    let _ = exchange.register_agent::<Plain>(None).await;
}

fn main() {
    let _ = register;
}
