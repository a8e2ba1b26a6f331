//! Raft messages between the replicas of a set, over TCP.
//!
//! Each replica listens on its own port; to send, it keeps one connection per peer (A's messages
//! to B travel on A's connection, B's answers on B's). A connection starts with a `Hello` frame
//! that names the replica set and both ids; a listener closes a connection whose `Hello` names
//! another set, another id for itself, or a peer it does not know (cross-wired ports between
//! shards on one host are an easy mistake), and drops messages that claim another sender.
//!
//! ```text
//! frame:    "FDBR" | version u8 (1) | kind u8 | length u32 LE | crc32 u32 LE of the payload | payload
//! kind 1    Hello     replica set (u16 LE length, UTF-8) | from u64 LE | to u64 LE
//! kind 2    Messages  count u32 LE, then count × (length u32 LE | raft-rs `Message`, protobuf)
//! ```
//!
//! A payload is at most [`MAX_FRAME`] bytes. Every peer has a sender thread and a bounded queue:
//! it takes everything queued and writes it as one `Messages` frame (natural batching). A full
//! queue, a refused connection or a failed write drops the messages and marks the peer
//! unreachable ([`Transport::unreachable`]), which the node reports to raft-rs so that it probes
//! the peer again; dropping is always safe in Raft. A peer that is down does not hold up the
//! others: each has its own thread. The sender reconnects with a backoff from 50 ms to 1 s.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;

const MAGIC: [u8; 4] = *b"FDBR";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 14;
/// The largest payload a frame may have.
pub const MAX_FRAME: usize = 64 << 20;
/// Messages queued for one peer before new ones are dropped.
pub const QUEUE: usize = 4096;
const KIND_HELLO: u8 = 1;
const KIND_MESSAGES: u8 = 2;

/// The first frame of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub replica_set: String,
    pub from: u64,
    pub to: u64,
}

/// A frame, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Hello(Hello),
    Messages(Vec<Message>),
}

/// What is wrong with bytes read from a peer.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a facedb replication frame: {0}")]
    Bad(String),
}

fn bad(what: impl Into<String>) -> FrameError {
    FrameError::Bad(what.into())
}

/// A frame as bytes.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let (kind, payload) = match frame {
        Frame::Hello(hello) => {
            let mut payload = Vec::with_capacity(hello.replica_set.len() + 18);
            payload.extend_from_slice(&(hello.replica_set.len() as u16).to_le_bytes());
            payload.extend_from_slice(hello.replica_set.as_bytes());
            payload.extend_from_slice(&hello.from.to_le_bytes());
            payload.extend_from_slice(&hello.to.to_le_bytes());
            (KIND_HELLO, payload)
        }
        Frame::Messages(messages) => {
            let mut payload = (messages.len() as u32).to_le_bytes().to_vec();
            for message in messages {
                // Encoding a message built by raft-rs cannot fail (no required fields).
                let bytes = message.write_to_bytes().unwrap_or_default();
                payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                payload.extend_from_slice(&bytes);
            }
            (KIND_MESSAGES, payload)
        }
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads one frame; an error says what was wrong.
pub fn read_frame(reader: &mut impl Read) -> Result<Frame, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header)?;
    if header[..4] != MAGIC {
        return Err(bad("bad magic"));
    }
    if header[4] != VERSION {
        return Err(bad(format!("version {}, this build speaks {VERSION}", header[4])));
    }
    let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let len = word(6) as usize;
    if len > MAX_FRAME {
        return Err(bad(format!("a frame of {len} bytes, more than {MAX_FRAME}")));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload)?;
    if crc32fast::hash(&payload) != word(10) {
        return Err(bad("frame checksum mismatch (crc32)"));
    }
    decode_payload(header[5], &payload)
}

fn decode_payload(kind: u8, payload: &[u8]) -> Result<Frame, FrameError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], FrameError> {
        let part = payload.get(at..at + n).ok_or_else(|| bad("frame payload cut short"))?;
        at += n;
        Ok(part)
    };
    let frame = match kind {
        KIND_HELLO => {
            let len = u16::from_le_bytes(take(2)?.try_into().unwrap_or_default()) as usize;
            let replica_set =
                String::from_utf8(take(len)?.to_vec()).map_err(|_| bad("a replica set name that is not UTF-8"))?;
            let from = u64::from_le_bytes(take(8)?.try_into().unwrap_or_default());
            let to = u64::from_le_bytes(take(8)?.try_into().unwrap_or_default());
            Frame::Hello(Hello { replica_set, from, to })
        }
        KIND_MESSAGES => {
            let count = u32::from_le_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
            let mut messages = Vec::with_capacity(count.min(QUEUE));
            for _ in 0..count {
                let len = u32::from_le_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
                let message = Message::parse_from_bytes(take(len)?).map_err(|e| bad(format!("a bad message: {e}")))?;
                messages.push(message);
            }
            Frame::Messages(messages)
        }
        other => return Err(bad(format!("unknown frame kind {other}"))),
    };
    if at != payload.len() {
        return Err(bad("bytes after the frame's content"));
    }
    Ok(frame)
}

/// Who a replica is and whom it talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    pub replica_set: String,
    pub id: u64,
    /// Where it listens for its peers.
    pub listen: SocketAddr,
    /// The other replicas and where they listen.
    pub peers: BTreeMap<u64, SocketAddr>,
}

/// The transport of one replica: a listener, and a sender per peer.
pub struct Transport {
    senders: BTreeMap<u64, PeerSender>,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
}

struct PeerSender {
    queue: mpsc::SyncSender<Message>,
    unreachable: Arc<AtomicBool>,
}

impl Transport {
    /// Starts listening and the senders; messages from peers go to `inbox`.
    pub fn start(config: TransportConfig, inbox: mpsc::Sender<Message>) -> std::io::Result<Transport> {
        let listener = TcpListener::bind(config.listen)?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepting = Accepting { config: config.clone(), inbox, stop: stop.clone() };
        std::thread::Builder::new().name("facedb-raft-listen".into()).spawn(move || accepting.run(listener))?;
        let mut senders = BTreeMap::new();
        for (&peer, &address) in &config.peers {
            let (queue, messages) = mpsc::sync_channel(QUEUE);
            let unreachable = Arc::new(AtomicBool::new(false));
            let hello = Hello { replica_set: config.replica_set.clone(), from: config.id, to: peer };
            let sending = Sending { hello, address, unreachable: unreachable.clone() };
            std::thread::Builder::new()
                .name(format!("facedb-raft-send-{peer}"))
                .spawn(move || sending.run(messages))?;
            senders.insert(peer, PeerSender { queue, unreachable });
        }
        Ok(Transport { senders, local, stop })
    }

    /// Queues messages for their peers; a message to an unknown peer or a full queue is dropped
    /// (and that peer reported unreachable).
    pub fn send(&self, messages: Vec<Message>) {
        for message in messages {
            let Some(sender) = self.senders.get(&message.to) else { continue };
            if sender.queue.try_send(message).is_err() {
                sender.unreachable.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The peers whose messages were dropped since the last call.
    pub fn unreachable(&self) -> Vec<u64> {
        self.senders.iter().filter(|(_, s)| s.unreachable.swap(false, Ordering::Relaxed)).map(|(&id, _)| id).collect()
    }

    /// Where the listener listens (the port chosen, if the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the listener so that it sees the stop; the senders end with their queues.
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_millis(100));
    }
}

/// The listener's side.
struct Accepting {
    config: TransportConfig,
    inbox: mpsc::Sender<Message>,
    stop: Arc<AtomicBool>,
}

impl Accepting {
    fn run(self, listener: TcpListener) {
        for stream in listener.incoming() {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let (config, inbox, stop) = (self.config.clone(), self.inbox.clone(), self.stop.clone());
            let _ = std::thread::Builder::new()
                .name("facedb-raft-recv".into())
                .spawn(move || receive(stream, &config, &inbox, &stop));
        }
    }
}

/// Reads one peer's connection: its `Hello`, checked, then its messages.
fn receive(stream: TcpStream, config: &TransportConfig, inbox: &mpsc::Sender<Message>, stop: &AtomicBool) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut reader = BufReader::with_capacity(1 << 20, &stream);
    let hello = match read_frame(&mut reader) {
        Ok(Frame::Hello(hello)) => hello,
        Ok(Frame::Messages(_)) => {
            tracing::warn!(%peer, "replication: a connection sent messages before its Hello; closed");
            return;
        }
        Err(e) => {
            tracing::warn!(%peer, "replication: a connection's Hello could not be read ({e}); closed");
            return;
        }
    };
    if let Some(problem) = refusal(&hello, config) {
        tracing::warn!(%peer, from = hello.from, "replication: refused a peer: {problem}");
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match read_frame(&mut reader) {
            Ok(Frame::Messages(messages)) => {
                for message in messages {
                    if message.from != hello.from || message.to != config.id {
                        tracing::warn!(%peer, from = message.from, to = message.to, "replication: dropped a message that is not from {} to {}", hello.from, config.id);
                        continue;
                    }
                    if inbox.send(message).is_err() {
                        return;
                    }
                }
            }
            Ok(Frame::Hello(_)) => {
                tracing::warn!(%peer, "replication: a second Hello on one connection; closed");
                return;
            }
            Err(FrameError::Io(_)) => return,
            Err(e) => {
                tracing::warn!(%peer, "replication: {e}; connection closed");
                return;
            }
        }
    }
}

/// Why a `Hello` is refused, if it is.
fn refusal(hello: &Hello, config: &TransportConfig) -> Option<String> {
    if hello.replica_set != config.replica_set {
        return Some(format!(
            "it belongs to replica set {:?}, this replica to {:?} (cross-wired ports?)",
            hello.replica_set, config.replica_set
        ));
    }
    if hello.to != config.id {
        return Some(format!("it took this replica for replica {}, but this is replica {}", hello.to, config.id));
    }
    if !config.peers.contains_key(&hello.from) {
        let known: Vec<u64> = config.peers.keys().copied().collect();
        return Some(format!("replica {} is not a peer of this one (peers: {known:?})", hello.from));
    }
    None
}

/// One peer's sender.
struct Sending {
    hello: Hello,
    address: SocketAddr,
    unreachable: Arc<AtomicBool>,
}

impl Sending {
    fn run(self, queue: mpsc::Receiver<Message>) {
        let mut connection: Option<BufWriter<TcpStream>> = None;
        let mut backoff = Duration::from_millis(50);
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            batch.extend(queue.try_iter().take(QUEUE));
            if connection.is_none() {
                match self.connect() {
                    Ok(stream) => {
                        connection = Some(stream);
                        backoff = Duration::from_millis(50);
                    }
                    Err(e) => {
                        tracing::debug!(peer = self.hello.to, "replication: cannot reach {}: {e}", self.address);
                        self.unreachable.store(true, Ordering::Relaxed);
                        // Messages queued meanwhile are stale by the time it answers: drop them.
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        while queue.try_recv().is_ok() {}
                        continue;
                    }
                }
            }
            let Some(stream) = connection.as_mut() else { continue };
            let written = stream.write_all(&encode(&Frame::Messages(batch))).and_then(|()| stream.flush());
            if written.is_err() {
                connection = None;
                self.unreachable.store(true, Ordering::Relaxed);
            }
        }
    }

    fn connect(&self) -> std::io::Result<BufWriter<TcpStream>> {
        let stream = TcpStream::connect_timeout(&self.address, Duration::from_secs(1))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut writer = BufWriter::with_capacity(1 << 20, stream);
        writer.write_all(&encode(&Frame::Hello(self.hello.clone())))?;
        writer.flush()?;
        Ok(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    fn message(from: u64, to: u64, term: u64) -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgAppend);
        (message.from, message.to, message.term) = (from, to, term);
        let mut entry = Entry::default();
        (entry.index, entry.term, entry.data) = (7, term, vec![1, 2, 3].into());
        message.entries = vec![entry].into();
        message
    }

    #[test]
    fn frames_round_trip_and_damage_is_refused() {
        let hello = Frame::Hello(Hello { replica_set: "s0".into(), from: 2, to: 3 });
        let messages = Frame::Messages(vec![message(2, 3, 5), message(2, 3, 6)]);
        for frame in [&hello, &messages] {
            assert_eq!(&read_frame(&mut encode(frame).as_slice()).unwrap(), frame);
        }
        let mut bytes = encode(&messages);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(read_frame(&mut bytes.as_slice()).unwrap_err().to_string().contains("checksum"));
        bytes[0] = b'X';
        assert!(read_frame(&mut bytes.as_slice()).unwrap_err().to_string().contains("bad magic"));
        let mut huge = encode(&hello);
        huge[6..10].copy_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert!(read_frame(&mut huge.as_slice()).unwrap_err().to_string().contains("more than"));
        let cut = encode(&messages);
        assert!(matches!(read_frame(&mut &cut[..cut.len() - 3]), Err(FrameError::Io(_))));
    }

    fn free_address() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    fn start(
        set: &str,
        id: u64,
        listen: SocketAddr,
        peers: &[(u64, SocketAddr)],
    ) -> (Transport, mpsc::Receiver<Message>) {
        let (inbox, received) = mpsc::channel();
        let config = TransportConfig { replica_set: set.into(), id, listen, peers: peers.iter().copied().collect() };
        (Transport::start(config, inbox).unwrap(), received)
    }

    #[test]
    fn replicas_exchange_messages_and_a_peer_of_another_set_is_refused() {
        let (a, b, c) = (free_address(), free_address(), free_address());
        let (one, from_one) = start("s0", 1, a, &[(2, b), (3, c)]);
        let (two, from_two) = start("s0", 2, b, &[(1, a), (3, c)]);
        // Replica 3 is down: messages to it are dropped and it is reported, and 2 still gets its.
        one.send(vec![message(1, 3, 1), message(1, 2, 1), message(1, 2, 2)]);
        let got: Vec<u64> = (0..2).map(|_| from_two.recv_timeout(Duration::from_secs(5)).unwrap().term).collect();
        assert_eq!(got, [1, 2]);
        two.send(vec![message(2, 1, 3)]);
        assert_eq!(from_one.recv_timeout(Duration::from_secs(5)).unwrap().term, 3);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut unreachable = Vec::new();
        while unreachable.is_empty() && std::time::Instant::now() < deadline {
            unreachable = one.unreachable();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(unreachable, [3]);
        // A replica of another set, wired to replica 1's port, is refused: nothing arrives.
        let (stranger, _) = start("s1", 2, free_address(), &[(1, a)]);
        stranger.send(vec![message(2, 1, 9)]);
        // So is a message that claims another sender on a good connection.
        two.send(vec![message(3, 1, 10), message(2, 1, 11)]);
        let next = from_one.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((next.from, next.term), (2, 11));
        assert!(from_one.recv_timeout(Duration::from_millis(300)).is_err(), "the stranger's message arrived");
    }
}
