// A message the behavior does not declare is named as such.
use actix_academy::prelude::*;

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

/// A message Counter does not handle.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "i64")]
struct Decrement(i64);

behavior!(Counter { actions: [Increment] });

async fn call(counter: RemoteHandle<Counter>) {
    let _ = counter.action(Increment(1)).await;
    let _ = counter.action(Decrement(1)).await;
}

fn main() {
    let _ = call;
}
