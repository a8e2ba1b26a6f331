//! A replica set in one process, driven step by step over a simulated network.
//!
//! The replicas are real: [`Replica`] (raft-rs over the real [`LogStore`] in a temporary data
//! directory, applying to a real [`Engine`]). The network is the test's: messages in flight are
//! delivered in a random order, some dropped, and replicas are cut off from the others and healed.
//! Ticks replace time, one replica at a time, in a random order. Everything random comes from one
//! seed, printed when a run fails (raft-rs's own election jitter is off, so the seed decides).
//!
//! Checked at every step: no two leaders in one term; every replica's applied index never goes
//! back. Checked every few hundred steps and at the end: the logs of all replicas agree on every
//! entry up to the lowest commit index, and no entry once seen committed ever changes. At the end,
//! after the network heals and the set settles: every replica applied the same entries to the
//! same faces, every write answered "applied" is there, and every write got an answer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{mpsc, Arc};

use raft::eraftpb::Message;

use super::member::Replica;
use super::node::NodeConfig;
use super::storage::{LogEnd, LogStore};
use super::Error;
use crate::engine::op::{self, Op};
use crate::engine::{Applied, Engine, EngineConfig};
use crate::schema::{MetaValue, Schema};
use crate::store::Face;
use crate::test_dir::TestDir;
use crate::wal::recover::{read_log, ReadOptions};
use crate::wal::writer::WalConfig;
use crate::wal::WalMode;

/// A small, seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    /// Replica `i` has id `i + 1`.
    replicas: Vec<Replica>,
    engines: Vec<Arc<Engine>>,
    _dirs: Vec<TestDir>,
    in_flight: VecDeque<Message>,
    /// Replicas cut off from all others (messages to and from them are lost).
    cut: Vec<bool>,
    /// The leader seen in each term.
    leaders: BTreeMap<u64, u64>,
    /// Every entry seen committed: index → (term, payload).
    committed: BTreeMap<u64, (u64, Vec<u8>)>,
    applied: Vec<u64>,
    /// Writes proposed and not answered yet: face id and the answer's channel.
    waiting: Vec<(u64, mpsc::Receiver<Result<Applied, Error>>)>,
    acknowledged: Vec<u64>,
    next_id: u64,
    steps: usize,
}

fn schema() -> Schema {
    Schema::from_yaml("- {id: 1, name: cam, field_type: string}\n", "sim").unwrap()
}

fn engine_config() -> EngineConfig {
    EngineConfig { facen_size: 2, ..EngineConfig::default() }
}

impl Sim {
    fn new(seed: u64, voters: u64) -> Sim {
        let ids: Vec<u64> = (1..=voters).collect();
        let mut sim = Sim {
            seed,
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            replicas: Vec::new(),
            engines: Vec::new(),
            _dirs: Vec::new(),
            in_flight: VecDeque::new(),
            cut: vec![false; voters as usize],
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            applied: vec![0; voters as usize],
            waiting: Vec::new(),
            acknowledged: Vec::new(),
            next_id: 1,
            steps: 0,
        };
        for &id in &ids {
            let dir = TestDir::new(&format!("replica-sim-{seed}-{id}"));
            let config = WalConfig { dir: dir.0.join("wal"), mode: WalMode::Write, segment_bytes: 4096 };
            let store = LogStore::open(config, LogEnd { index: 0, term: 0 }, Vec::new(), id, ids.clone()).unwrap();
            let engine = Arc::new(Engine::new(schema(), engine_config()));
            // Every replica starts with the same gallery, as from the same snapshot.
            engine.apply(0, Op::CreateGallery { name: "g".into() }).unwrap();
            let node = NodeConfig { id, voters: ids.clone(), election_jitter: false, ..NodeConfig::single() };
            sim.replicas.push(Replica::new(engine.clone(), store, &node).unwrap());
            sim.engines.push(engine);
            sim._dirs.push(dir);
        }
        sim
    }

    /// Fails the test with the seed and the step.
    fn check(&self, holds: bool, what: impl FnOnce() -> String) {
        assert!(holds, "seed {} step {}: {}", self.seed, self.steps, what());
    }

    /// One random step, then every replica's `Ready` and the per-step checks.
    fn step(&mut self) {
        self.steps += 1;
        match self.rng.below(100) {
            0..=41 => self.deliver_one(),
            42..=44 => {
                if !self.in_flight.is_empty() {
                    let at = self.rng.below(self.in_flight.len());
                    self.in_flight.remove(at);
                }
            }
            45..=79 => {
                let at = self.rng.below(self.replicas.len());
                self.replicas[at].tick();
            }
            80..=98 => {
                let at = self.rng.below(self.replicas.len());
                self.propose(at);
            }
            _ => {
                let at = self.rng.below(self.replicas.len());
                // Cut one replica off, or heal; never more than a minority at once.
                let cut_now = self.cut.iter().filter(|&&c| c).count();
                if self.cut[at] || cut_now + 1 > (self.replicas.len() - 1) / 2 {
                    self.cut.iter_mut().for_each(|c| *c = false);
                } else {
                    self.cut[at] = true;
                }
            }
        }
        self.ready_all();
    }

    fn deliver_one(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        let at = self.rng.below(self.in_flight.len());
        let message = self.in_flight.remove(at).unwrap();
        let (from, to) = (message.from as usize - 1, message.to as usize - 1);
        if !self.cut[from] && !self.cut[to] {
            self.replicas[to].step(message);
        }
    }

    fn propose(&mut self, at: usize) {
        let id = self.next_id;
        self.next_id += 1;
        let face = Face { id, vector: vec![id as f32, 1.0], meta: vec![MetaValue::String(format!("c{id}"))] };
        let op = Op::AddFaces { gallery: "g".into(), faces: vec![face] };
        let payload = op::encode(&op).unwrap();
        let (reply, answer) = mpsc::sync_channel(1);
        self.replicas[at].propose(op, payload, reply);
        self.waiting.push((id, answer));
    }

    fn ready_all(&mut self) {
        for at in 0..self.replicas.len() {
            let messages = self.replicas[at].on_ready();
            self.in_flight.extend(messages);
            let replica = &self.replicas[at];
            self.check(replica.failure().is_none(), || format!("replica {} failed: {:?}", at + 1, replica.failure()));
            let (term, leader) = replica.term_and_leader();
            if replica.is_leader() {
                let seen = *self.leaders.entry(term).or_insert(at as u64 + 1);
                self.check(seen == at as u64 + 1, || format!("two leaders in term {term}: {seen} and {}", at + 1));
            }
            let _ = leader;
            let applied = replica.applied();
            self.check(applied >= self.applied[at], || format!("replica {} applied went back", at + 1));
            self.applied[at] = applied;
        }
        self.collect_answers();
    }

    fn collect_answers(&mut self) {
        let mut still = Vec::new();
        for (id, answer) in std::mem::take(&mut self.waiting) {
            match answer.try_recv() {
                Ok(Ok(_)) => self.acknowledged.push(id),
                Ok(Err(_)) | Err(mpsc::TryRecvError::Disconnected) => {}
                Err(mpsc::TryRecvError::Empty) => still.push((id, answer)),
            }
        }
        self.waiting = still;
    }

    /// The logs agree up to the lowest commit index, and no entry once seen committed changed.
    fn check_logs(&mut self) {
        let lowest = self.replicas.iter().map(Replica::committed).min().unwrap_or(0);
        for (at, dir) in self._dirs.iter().enumerate() {
            let log = read_log(&dir.0.join("wal"), &ReadOptions::default()).unwrap();
            let committed = self.replicas[at].committed();
            for entry in log.entries.into_iter().filter(|e| e.index <= committed) {
                let seen = self.committed.entry(entry.index).or_insert((entry.term, entry.payload.clone()));
                let same = *seen == (entry.term, entry.payload);
                let index = entry.index;
                self.check(same, || format!("replica {}: committed entry {index} changed", at + 1));
            }
        }
        let known = self.committed.range(..=lowest).count() as u64;
        self.check(known == lowest, || format!("entries up to {lowest} committed, {known} seen"));
    }

    /// Heals the network and runs until every replica has applied the same last index.
    fn settle(&mut self) {
        self.cut.iter_mut().for_each(|c| *c = false);
        for round in 0..2_000 {
            while let Some(message) = self.in_flight.pop_front() {
                let to = message.to as usize - 1;
                self.replicas[to].step(message);
                self.ready_all();
            }
            let leader = self.replicas.iter().position(Replica::is_leader);
            let applied: Vec<u64> = self.replicas.iter().map(Replica::applied).collect();
            if let Some(leader) = leader {
                if round % 50 == 10 && !self.waiting.is_empty() {
                    // A write at the end moves every index past the writes still waiting.
                    self.propose(leader);
                }
                if applied.iter().all(|&a| a == applied[leader]) && self.waiting.is_empty() {
                    return;
                }
            }
            self.replicas.iter_mut().for_each(Replica::tick);
            self.ready_all();
        }
        panic!("seed {}: the replica set did not settle: applied {:?}", self.seed, self.applied);
    }

    fn check_end(&mut self) {
        self.check_logs();
        let ids: Vec<u64> = (1..self.next_id).collect();
        let faces =
            |engine: &Engine| -> Vec<Face> { ids.iter().filter_map(|&id| engine.get_face("g", id).ok()).collect() };
        let first = faces(&self.engines[0]);
        for (at, engine) in self.engines.iter().enumerate().skip(1) {
            let same = faces(engine) == first;
            self.check(same, || format!("replica {} holds other faces than replica 1", at + 1));
        }
        let held: Vec<u64> = first.iter().map(|f| f.id).collect();
        for id in &self.acknowledged {
            self.check(held.contains(id), || format!("acknowledged face {id} is missing"));
        }
        self.check(self.waiting.is_empty(), || format!("{} writes got no answer", self.waiting.len()));
    }
}

fn run(seed: u64, voters: u64, steps: usize) -> Sim {
    let mut sim = Sim::new(seed, voters);
    for step in 1..=steps {
        sim.step();
        if step % 500 == 0 {
            sim.check_logs();
        }
    }
    sim.settle();
    sim.check_end();
    eprintln!(
        "seed {seed}, {voters} replicas, {steps} steps: {} leaders over {} terms, {} writes acknowledged of {}, \
         {} entries committed",
        sim.leaders.len(),
        sim.leaders.keys().last().unwrap_or(&0),
        sim.acknowledged.len(),
        sim.next_id - 1,
        sim.committed.len()
    );
    sim
}

#[test]
fn random_schedules_keep_raft_invariants_with_three_replicas() {
    for seed in 1..=6 {
        let sim = run(seed, 3, 5_000);
        assert!(sim.acknowledged.len() > 20, "seed {seed}: only {} writes acknowledged", sim.acknowledged.len());
        assert!(sim.leaders.len() >= 2, "seed {seed}: one leader only: {:?}", sim.leaders);
    }
}

#[test]
fn random_schedules_keep_raft_invariants_with_five_replicas() {
    for seed in 100..=102 {
        let sim = run(seed, 5, 5_000);
        assert!(sim.acknowledged.len() > 10, "seed {seed}: only {} writes acknowledged", sim.acknowledged.len());
    }
}
