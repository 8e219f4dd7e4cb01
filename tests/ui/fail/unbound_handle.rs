// Calling through a handle that is not bound to a mailbox says how to bind it.
use actix_academy::prelude::*;

#[derive(Default)]
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
    let _ = counter.ping().await;
}

fn main() {
    let _ = call;
}
