// Two hand-written messages whose types share a name collide on the wire.
use actix_academy::prelude::*;

mod one {
    use actix_academy::prelude::*;
    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "i64")]
    pub struct Add(pub i64);
}

mod two {
    use actix_academy::prelude::*;
    #[derive(Message, Serialize, Deserialize)]
    #[rtype(result = "f64")]
    pub struct Add(pub f64);
}

struct Calculator;
impl Actor for Calculator {
    type Context = Context<Self>;
}
impl Handler<one::Add> for Calculator {
    type Result = i64;
    fn handle(&mut self, m: one::Add, _: &mut Context<Self>) -> i64 {
        m.0
    }
}
impl Handler<two::Add> for Calculator {
    type Result = f64;
    fn handle(&mut self, m: two::Add, _: &mut Context<Self>) -> f64 {
        m.0
    }
}

behavior!(Calculator { actions: [one::Add, two::Add] });

fn main() {}
