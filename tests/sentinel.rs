//! An exchange behind Redis Sentinel: a master, a replica and three
//! Sentinels on loopback ports (started and stopped by this test), the
//! master SIGKILLed mid-stream, the failover followed.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_academy::{Agent, AgentId, Exchange};
use support::agents::{Counter, Increment};

const SERVICE: &str = "academy";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn query(port: u16, cmd: &mut redis::Cmd) -> redis::RedisResult<redis::Value> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection()?;
    cmd.query(&mut con)
}

fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A master, its replica and three Sentinels watching them.
struct SentinelSet {
    dir: std::path::PathBuf,
    master: (u16, Option<Child>),
    replica: (u16, Child),
    sentinels: Vec<(u16, Child)>,
}

impl SentinelSet {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("academy-sentinel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let redis = |port: u16, extra: &[String]| {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--protected-mode", "no", "--loglevel", "warning"])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be on PATH");
            wait_for("a Redis node to answer", Duration::from_secs(10), || {
                query(port, &mut redis::cmd("PING")).is_ok()
            });
            child
        };
        let master_port = free_port();
        let master = redis(master_port, &[]);
        let replica_port = free_port();
        let replica = redis(replica_port, &["--replicaof".into(), "127.0.0.1".into(), master_port.to_string()]);
        wait_for("the replica to sync", Duration::from_secs(20), || {
            let info = query(replica_port, redis::cmd("INFO").arg("replication"));
            matches!(info, Ok(redis::Value::BulkString(b)) if String::from_utf8_lossy(&b).contains("master_link_status:up"))
        });
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {SERVICE} 1000\n\
                     sentinel failover-timeout {SERVICE} 5000\n\
                     sentinel parallel-syncs {SERVICE} 1\n",
                    dir.display()
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            wait_for("a Sentinel to answer", Duration::from_secs(10), || query(port, &mut redis::cmd("PING")).is_ok());
            sentinels.push((port, child));
        }
        // Each knows the replica and the two other Sentinels (they find
        // each other through the master every 2 s).
        for (port, _) in &sentinels {
            wait_for("the Sentinels to know each other and the replica", Duration::from_secs(30), || {
                let count = |what: &str| match query(*port, redis::cmd("SENTINEL").arg(what).arg(SERVICE)) {
                    Ok(redis::Value::Array(items)) => items.len(),
                    _ => 0,
                };
                count("sentinels") == 2 && count("replicas") == 1
            });
        }
        println!("sentinel set: master {master_port}, replica {replica_port}, sentinels {:?}", ports(&sentinels));
        Self { dir, master: (master_port, Some(master)), replica: (replica_port, replica), sentinels }
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = ports(&self.sentinels).iter().map(|port| format!("127.0.0.1:{port}")).collect();
        format!("redis+sentinel://{}/{SERVICE}", hosts.join(","))
    }

    fn kill_master(&mut self) {
        if let Some(mut child) = self.master.1.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn ports(nodes: &[(u16, Child)]) -> Vec<u16> {
    nodes.iter().map(|(port, _)| *port).collect()
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        self.kill_master();
        let _ = self.replica.1.kill();
        let _ = self.replica.1.wait();
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[actix::test]
async fn behind_sentinels_a_master_failover_is_followed_and_calls_resume() {
    support::init_tracing();
    let mut set = SentinelSet::start();
    let url = set.url();
    // Everything through Redis, so every call needs the master.
    let host = Exchange::builder(&url).random_namespace().peer_to_peer(false).start().await.unwrap();
    let caller = Exchange::builder(&url).namespace(host.namespace()).peer_to_peer(false).start().await.unwrap();
    let id: AgentId<Counter> = host.register_agent(Some("counter")).await.unwrap();
    let _agent = Agent::launch(Counter::default(), id.clone(), &host).await.unwrap();
    let counter = caller.get_handle(id.clone()).bind_as_client(&caller).await.unwrap();
    let mut last = 0;
    for _ in 0..5 {
        last = counter.action(Increment(1)).await.unwrap();
    }
    assert_eq!(last, 5);
    // The replica has everything so far.
    let _ = query(set.master.0, redis::cmd("WAIT").arg(1).arg(5000));

    set.kill_master();
    let killed = Instant::now();
    println!("master {} killed", set.master.0);
    let mut failed = 0;
    let resumed = loop {
        assert!(killed.elapsed() < Duration::from_secs(90), "calls never resumed after the failover");
        match tokio::time::timeout(Duration::from_secs(15), counter.action(Increment(1))).await {
            Ok(Ok(n)) => {
                // At most once: a call that failed may have run, none twice.
                assert!(n > last, "the counter went from {last} to {n}");
                last = n;
                break killed.elapsed();
            }
            other => {
                failed += 1;
                println!("[{:.1?}] call failed during the failover: {other:?}", killed.elapsed());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    println!("calls resumed {resumed:?} after the master was killed; {failed} failed meanwhile");
    for _ in 0..5 {
        let n = counter.action(Increment(1)).await.unwrap();
        assert!(n > last);
        last = n;
    }
    // The agent is discoverable on the new master.
    let found = caller.discover::<Counter>().await.unwrap();
    assert!(found.contains(&id), "the agent left discovery: {found:?}");
    caller.close().await;
    host.close().await;
}
