//! Two mailboxes on the hybrid exchange: messages queue in Redis while the
//! receiver is offline, then go peer to peer once it listens.
//!
//! `cargo run --example ping -- [REDIS_URL]` (default `redis://127.0.0.1:6379`).

use std::time::{Duration, Instant};

use actix_academy::{Body, Envelope, HybridExchange};

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let exchange = match HybridExchange::builder(&url)
        .random_namespace()
        .start()
        .await
    {
        Ok(exchange) => exchange,
        Err(e) => {
            eprintln!("cannot reach Redis at {url}: {e}\nstart one with: redis-server --port 6379 --save '' --appendonly no");
            std::process::exit(1);
        }
    };
    let alice = exchange.register_client(Some("alice")).await?;
    let bob = exchange.register_client(Some("bob")).await?;

    for _ in 0..3 {
        exchange
            .send(Envelope::new(
                alice.clone().into(),
                bob.clone().into(),
                Body::PingRequest,
            ))
            .await?;
    }
    println!("sent 3 pings while {bob} was offline: they wait in Redis");

    let mut inbox = exchange.get_mailbox(&bob).await?;
    println!("{bob} listens on {}", inbox.address().unwrap());
    for _ in 0..3 {
        let message = inbox.recv(Some(Duration::from_secs(5))).await?;
        println!("  {} got {:?} from {}", bob, message.body, message.src);
    }

    let rounds = 1000;
    let started = Instant::now();
    for _ in 0..rounds {
        exchange
            .send(Envelope::new(
                alice.clone().into(),
                bob.clone().into(),
                Body::PingRequest,
            ))
            .await?;
        inbox.recv(Some(Duration::from_secs(5))).await?;
    }
    println!(
        "{rounds} direct sends, each received before the next: {:?} per message",
        started.elapsed() / rounds
    );

    inbox.close().await?;
    exchange.terminate(&alice).await?;
    exchange.terminate(&bob).await?;
    exchange.close().await;
    Ok(())
}
