//! A TCP proxy for network faults: it forwards every connection to the first backend that
//! accepts it (a small load balancer when given several), and can be "cut" like a pulled cable:
//! nothing passes in either direction, no socket is closed, and everything resumes on "restore".

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    sync::watch,
    task::JoinSet,
};

pub struct Proxy {
    pub addr: SocketAddr,
    /// True while the network is up.
    link: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1; each new connection goes to the first of `backends` that accepts.
    pub async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let (link, _) = watch::channel(true);
        let up = link.subscribe();
        let accept = tokio::spawn(async move {
            // Dropped with the accept task: every forwarded connection ends with the proxy.
            let mut connections = JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                connections.spawn(forward(client, backends.clone(), up.clone()));
                while connections.try_join_next().is_some() {}
            }
        });
        Self { addr, link, accept }
    }

    /// The base URL of a server behind the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Pulls the cable: nothing passes, nothing is closed.
    pub fn cut(&self) {
        self.link.send_replace(false);
    }

    pub fn restore(&self) {
        self.link.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn wait_up(up: &mut watch::Receiver<bool>) -> bool {
    up.wait_for(|up| *up).await.is_ok()
}

async fn forward(client: TcpStream, backends: Vec<SocketAddr>, mut up: watch::Receiver<bool>) {
    if !wait_up(&mut up).await {
        return;
    }
    let mut server = None;
    for backend in backends {
        if let Ok(stream) = TcpStream::connect(backend).await {
            server = Some(stream);
            break;
        }
    }
    // No backend alive: the client sees its connection closed.
    let Some(server) = server else { return };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(pump(client_read, server_write, up.clone()), pump(server_read, client_write, up));
}

/// Copies one direction while the link is up; passes on the end of the stream.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut up: watch::Receiver<bool>) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        if !wait_up(&mut up).await {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // What was read around a cut is held until the link is back, like a router's buffer.
        if !wait_up(&mut up).await || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
    // The end of the stream passes only while the link is up too (dropping `to` would end it).
    if wait_up(&mut up).await {
        let _ = to.shutdown().await;
    }
}
