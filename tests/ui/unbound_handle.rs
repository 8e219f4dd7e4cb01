use actix::prelude::*;
use actix_academy::{behavior, UnboundRemoteHandle};
use serde::{Deserialize, Serialize};

struct Counter;
impl Actor for Counter {
    type Context = Context<Self>;
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "i64")]
struct Increment(i64);
impl Handler<Increment> for Counter {
    type Result = i64;
    fn handle(&mut self, m: Increment, _: &mut Context<Self>) -> i64 {
        m.0
    }
}

behavior!(Counter { actions: [Increment] });

async fn call(counter: UnboundRemoteHandle<Counter>) {
    let _ = counter.action(Increment(1)).await;
}

fn main() {
    let _ = call;
}
