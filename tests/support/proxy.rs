//! A TCP proxy in front of the registry that can make berth's view of it late: while a delay is
//! set, every answer except a `DELETE`'s reaches berth that much after the registry gave it. It
//! models a big or distant repository whose listing takes seconds, which widens the window
//! between what a lifecycle run saw and its deletes, where a concurrent push used to be lost.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub struct SlowProxy {
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    /// Tag listings requested through the proxy so far.
    listings: Arc<AtomicU64>,
    /// The paths of the `DELETE` requests berth sent, in order.
    deletes: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let listings = Arc::new(AtomicU64::new(0));
        let deletes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (upstream, delay, lists, deleted) =
            (upstream.to_string(), delay_ms.clone(), listings.clone(), deletes.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream.clone(), delay.clone(), lists.clone(), deleted.clone()));
            }
        });
        SlowProxy { port, delay_ms, listings, deletes, task }
    }

    /// Whether berth sent a `DELETE` for the manifest `digest` through the proxy.
    pub fn deleted(&self, digest: &str) -> bool {
        let deletes = self.deletes.lock().unwrap_or_else(|e| e.into_inner());
        deletes.iter().any(|path| path.ends_with(&format!("/manifests/{digest}")))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many tag listings berth has asked for so far.
    pub fn listings(&self) -> u64 {
        self.listings.load(Ordering::SeqCst)
    }

    /// Waits (up to `timeout`) until berth asks for a tag listing after `seen`.
    pub async fn next_listing(&self, seen: u64, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.listings() <= seen && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.listings()
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client: TcpStream,
    upstream: String,
    delay: Arc<AtomicU64>,
    listings: Arc<AtomicU64>,
    deletes: Arc<std::sync::Mutex<Vec<String>>>,
) {
    // The registry down means the connection is refused, as it would be without the proxy.
    let Ok(server) = TcpStream::connect(&upstream).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // HTTP/1.1 without pipelining: one request at a time per connection, so the response that
    // comes next answers the request seen last.
    let last_was_delete = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = last_was_delete.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let starts = [&b"GET "[..], b"HEAD ", b"PUT ", b"POST ", b"PATCH ", b"DELETE "];
            if starts.iter().any(|m| buf[..n].starts_with(m)) {
                seen.store(buf[..n].starts_with(b"DELETE "), Ordering::SeqCst);
                let line = buf[..n].split(|b| *b == b'\n').next().unwrap_or_default();
                if line.windows(10).any(|w| w == b"/tags/list") {
                    listings.fetch_add(1, Ordering::SeqCst);
                }
                if let Some(path) = line.strip_prefix(b"DELETE ").and_then(|rest| rest.split(|b| *b == b' ').next()) {
                    deletes.lock().unwrap_or_else(|e| e.into_inner()).push(String::from_utf8_lossy(path).into_owned());
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // The registry answered (its state is what it was now); berth hears it later.
            let ms = delay.load(Ordering::SeqCst);
            if ms > 0 && buf[..n].starts_with(b"HTTP/") && !last_was_delete.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}
