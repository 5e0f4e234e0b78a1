//! A TCP relay in front of a server that the test controls: it passes bytes
//! through, holds them (a frozen node: connections open, nothing answered,
//! like SIGSTOP), delays what the client sends by a fixed time without
//! limiting throughput (a slow node), or cuts every connection and refuses
//! new ones (a network partition or a database restart).
#![allow(dead_code)] // each test binary compiles `common`; only some use the relay

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Freeze,
    /// Requests reach the node this much later.
    Delay(Duration),
    /// Every connection closed, new ones refused.
    Cut,
}

pub struct Relay {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let addr = listener.local_addr().expect("relay address");
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let accept = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                if *mode_rx.borrow() == Mode::Cut {
                    drop(client); // refused: closed at once
                    continue;
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                connections.spawn(pump(cr, sw, mode_rx.clone(), true));
                connections.spawn(pump(sr, cw, mode_rx.clone(), false));
            }
        });
        Relay { addr, mode, accept }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.set(Mode::Pass);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn wait_unfrozen(mode: &mut watch::Receiver<Mode>) -> Option<Mode> {
    mode.wait_for(|m| *m != Mode::Freeze).await.ok().map(|m| *m)
}

/// Copies `from` to `to`; `upstream` (client to node) is the delayed direction.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    upstream: bool,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut writer_mode = mode.clone();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match wait_unfrozen(&mut writer_mode).await {
                None | Some(Mode::Cut) => return,
                Some(_) => {}
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Some(current) = wait_unfrozen(&mut mode).await else {
            break;
        };
        if current == Mode::Cut {
            break;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // A mode change (a cut above all) is looked at before the next read.
            _ = mode.changed() => continue,
        };
        let delay = match current {
            Mode::Delay(d) if upstream => d,
            _ => Duration::ZERO,
        };
        if tx
            .send((Instant::now() + delay, buf[..n].to_vec()))
            .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
