// Every kind of action the attribute accepts, and the calls it writes.
use actix_academy::prelude::*;

#[derive(Debug, Serialize, Deserialize)]
pub struct Order {
    pub qty: u32,
}

pub struct Market {
    stock: u32,
}
impl Actor for Market {
    type Context = Context<Self>;
}

#[agent(name = "market")]
impl Market {
    /// Sync, typed error.
    #[action]
    pub fn place(&mut self, order: Order) -> Result<u32, String> {
        self.stock = self.stock.checked_sub(order.qty).ok_or("out of stock")?;
        Ok(self.stock)
    }

    #[action(one_way)]
    pub fn restock(&mut self, n: u32) {
        self.stock += n;
    }

    #[action]
    pub async fn quote(qty: u32, ctx: AgentContext<Self>, #[caller] caller: EntityId) -> String {
        format!("{qty} for {caller} from {}", ctx.id())
    }

    #[action]
    pub fn later(&mut self) -> ResponseFuture<u32> {
        let stock = self.stock;
        Box::pin(async move { stock })
    }

    #[action(name = "halt")]
    pub fn stop(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }

    /// Not an action: an ordinary method.
    pub fn local(&self) -> u32 {
        self.stock
    }
}

async fn calls(market: RemoteHandle<Market>) -> Result<(), Box<dyn std::error::Error>> {
    let left: u32 = market.place(Order { qty: 1 }).await?;
    let (): () = market.restock(left).await?;
    let _: String = market.quote(3).await?;
    let _: u32 = market.later().await?;
    market.stop().await?;
    Ok(())
}

/// An actor whose actions take and return its own type.
#[derive(Clone, Serialize, Deserialize)]
pub struct Cell {
    value: u32,
}
impl Actor for Cell {
    type Context = Context<Self>;
}

#[agent]
impl Cell {
    #[action]
    fn get(&self) -> Self {
        self.clone()
    }

    #[action]
    fn merge(&mut self, other: Self, more: Vec<Self>) -> Option<Self> {
        self.value += other.value + more.iter().map(|c| c.value).sum::<u32>();
        Some(self.clone())
    }
}

async fn cells(cell: RemoteHandle<Cell>) -> Result<u32, actix_academy::Error> {
    let copy: Cell = cell.get().await?;
    let merged: Option<Cell> = cell.merge(copy.clone(), vec![copy]).await?;
    Ok(merged.map_or(0, |c| c.value))
}

fn main() {
    let _ = cells;
    let _ = calls;
    assert_eq!(<Market as Behavior>::name(), "market");
    assert_eq!(Market { stock: 2 }.local(), 2);
}
