//! A TCP relay that delays every chunk by a fixed time in each direction: a stand-in for a
//! distant origin (10 ms each way = 20 ms round trip).
//!
//! Each direction is a reader task that stamps every chunk with its due time and puts it in a
//! bounded channel, and a writer task that sleeps until a chunk is due and writes it. Order is
//! kept (one channel per direction), throughput is kept (the reader keeps reading while the
//! writer waits), and memory is bounded (`QUEUE_CHUNKS` × `CHUNK` bytes per direction).
//!
//! Tokio's timer wakes on whole-millisecond ticks and late by up to one, which would make a
//! 10 ms hop about 11.5 ms; the writer therefore sleeps until shortly before the due time and
//! yields until it. The relay records the delays it actually applied ([`DelayRelay::mean_delay`]).

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use reference_proxy::stream::{BoxedStream, Dialer};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight per direction.
const QUEUE_CHUNKS: usize = 64;
/// How long before a chunk's due time the timer is asked to wake the writer.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Sum and count of the delays applied, to report the real one-way delay.
#[derive(Default)]
struct DelayStats {
    total_nanos: AtomicU64,
    chunks: AtomicU64,
}

/// A running relay; dropping it stops accepting (open connections finish on their own).
pub struct DelayRelay {
    address: SocketAddr,
    accept_task: JoinHandle<()>,
    stats: Arc<DelayStats>,
}

impl DelayRelay {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target`, each chunk delayed
    /// by `one_way` in each direction. Must be called inside a tokio runtime.
    pub async fn start(target: SocketAddr, one_way: Duration) -> io::Result<DelayRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let stats = Arc::new(DelayStats::default());
        let accept_stats = stats.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let stats = accept_stats.clone();
                tokio::spawn(async move {
                    let Ok(origin) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = origin.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (origin_read, origin_write) = origin.into_split();
                    pump(client_read, origin_write, one_way, stats.clone());
                    pump(origin_read, client_write, one_way, stats);
                });
            }
        });
        Ok(DelayRelay {
            address,
            accept_task,
            stats,
        })
    }

    /// The mean delay actually applied to a chunk (read to write), if any passed.
    pub fn mean_delay(&self) -> Option<Duration> {
        let chunks = self.stats.chunks.load(Ordering::Relaxed);
        let total = self.stats.total_nanos.load(Ordering::Relaxed);
        (chunks > 0).then(|| Duration::from_nanos(total / chunks))
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// Forwards `from` to `to`, every chunk `delay` after it was read; EOF is forwarded (after
/// the data before it) as a write shutdown.
fn pump<R, W>(mut from: R, mut to: W, delay: Duration, stats: Arc<DelayStats>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut receiver) = mpsc::channel::<(Instant, Bytes)>(QUEUE_CHUNKS);
    tokio::spawn(async move {
        let mut buffer = BytesMut::with_capacity(CHUNK);
        loop {
            buffer.reserve(CHUNK);
            match from.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let chunk = buffer.split().freeze();
                    if sender.send((Instant::now() + delay, chunk)).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping the sender tells the writer: EOF after the queued chunks.
    });
    tokio::spawn(async move {
        while let Some((due, chunk)) = receiver.recv().await {
            if let Some(early) = due.checked_sub(TIMER_SLACK) {
                tokio::time::sleep_until(early).await;
            }
            while Instant::now() < due {
                tokio::task::yield_now().await;
            }
            let applied = Instant::now() + delay - due;
            let nanos = u64::try_from(applied.as_nanos()).unwrap_or(u64::MAX);
            stats.total_nanos.fetch_add(nanos, Ordering::Relaxed);
            stats.chunks.fetch_add(1, Ordering::Relaxed);
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
}

/// Dials the relay. A real TCP connect to a distant host costs a round trip before the first
/// byte can be sent; the relay's listener answers at once on loopback, so the dialer waits
/// `connect_rtt` first to charge that round trip.
pub struct RelayDialer {
    address: SocketAddr,
    connect_rtt: Duration,
}

impl RelayDialer {
    /// A dialer for `relay`, charging `connect_rtt` per connect.
    pub fn new(relay: &DelayRelay, connect_rtt: Duration) -> Self {
        RelayDialer {
            address: relay.address(),
            connect_rtt,
        }
    }
}

impl Dialer for RelayDialer {
    fn dial(&self) -> BoxFuture<'_, io::Result<BoxedStream>> {
        Box::pin(async move {
            tokio::time::sleep(self.connect_rtt).await;
            let stream = TcpStream::connect(self.address).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxedStream)
        })
    }

    fn describe(&self) -> String {
        format!("delay relay {}", self.address)
    }
}
