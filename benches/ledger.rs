//! Micro-benchmarks of the hot paths: verification, entry sealing, durable appends through
//! the writer, Merkle proofs at a million leaves and replay of a 100,000-entry log.
//!
//! Run: `cargo bench --bench ledger` (figures are quoted in README.md "Performance").

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use keyledger::access;
use keyledger::crypto::merkle::{self, Frontier, MemoryNodes};
use keyledger::crypto::note::NoteSigner;
use keyledger::crypto::seal;
use keyledger::crypto::secret::{PlainSecret, SecretKind};
use keyledger::domain::events::ApiKeyCreated;
use keyledger::domain::{
    Actor, Clock, Command, Entry, EventData, KeyName, Role, Stream, SystemClock,
};
use keyledger::ledger::Ledger;
use keyledger::store::{MemoryStore, SledStore, Store};
use uuid::Uuid;

fn signer() -> NoteSigner {
    NoteSigner::new("bench.keyledger/log", SigningKey::from_bytes(&[7u8; 32])).expect("signer")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn create_command(name: &str) -> (Command, PlainSecret) {
    let secret = PlainSecret::generate(SecretKind::ApiKey).expect("rng");
    let command = Command::CreateApiKey {
        key_id: Uuid::now_v7(),
        name: KeyName::parse(name).expect("name"),
        role: Role::Basic,
        expires_at: None,
        secret_sha256: secret.sha256(),
        display: secret.display(),
    };
    (command, secret)
}

/// A ledger over `store`, initialised, with `keys` API keys; returns one secret.
fn populated(rt: &tokio::runtime::Runtime, store: Arc<dyn Store>, keys: usize) -> (Ledger, String) {
    let signer = signer();
    let origin = signer.name().to_string();
    let public_key = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        signer.public_key(),
    );
    let ledger = Ledger::open(store, signer, Arc::new(SystemClock)).expect("open");
    rt.block_on(async {
        ledger
            .execute(Command::Initialize { origin, public_key }, Actor::system())
            .await
            .expect("genesis");
        let mut secret = String::new();
        let mut pending = Vec::new();
        for i in 0..keys {
            let (command, s) = create_command(&format!("key-{i}"));
            if i == 0 {
                secret = s.expose().to_string();
            }
            let ledger = ledger.clone();
            pending.push(tokio::spawn(async move {
                ledger.execute(command, Actor::system()).await
            }));
            if pending.len() == 1024 {
                for p in pending.drain(..) {
                    p.await.expect("join").expect("create");
                }
            }
        }
        for p in pending {
            p.await.expect("join").expect("create");
        }
        (ledger, secret)
    })
}

fn verification(c: &mut Criterion) {
    let rt = runtime();
    let (ledger, secret) = populated(&rt, Arc::new(MemoryStore::new()), 10_000);
    let unknown = PlainSecret::generate(SecretKind::ApiKey).expect("rng");
    let mut malformed = secret.clone();
    malformed.replace_range(10..11, if &secret[10..11] == "a" { "b" } else { "a" });
    let now = SystemClock.now();
    let mut group = c.benchmark_group("verify");
    group.bench_function("valid key (10k keys)", |b| {
        b.iter(|| {
            ledger.read(|s| black_box(access::authenticate(s, black_box(&secret), now).is_ok()))
        })
    });
    group.bench_function("unknown key", |b| {
        b.iter(|| {
            ledger.read(|s| {
                black_box(access::authenticate(s, black_box(unknown.expose()), now).is_err())
            })
        })
    });
    group.bench_function("malformed key (checksum reject)", |b| {
        b.iter(|| {
            ledger.read(|s| black_box(access::authenticate(s, black_box(&malformed), now).is_err()))
        })
    });
    group.finish();
}

fn sealing(c: &mut Criterion) {
    let signer = signer();
    let secret = PlainSecret::generate(SecretKind::ApiKey).expect("rng");
    let key_id = Uuid::now_v7();
    let entry = Entry {
        seq: 12345,
        id: Uuid::now_v7(),
        stream: Stream::ApiKey(key_id),
        version: 1,
        at: SystemClock.now(),
        actor: Actor::system(),
        signer: String::new(),
        data: EventData::ApiKeyCreated(ApiKeyCreated {
            key_id,
            name: "chat-frontend".into(),
            role: Role::Basic,
            display: secret.display(),
            secret_sha256: secret.sha256(),
            expires_at: None,
        }),
        sig: String::new(),
    };
    let (_, bytes) = seal::seal(entry.clone(), &signer).expect("seal");
    let key = ed25519_dalek::VerifyingKey::from_bytes(&signer.public_key()).expect("key");
    let mut group = c.benchmark_group("entry");
    group.bench_function("seal (JCS + Ed25519 sign)", |b| {
        b.iter(|| black_box(seal::seal(black_box(entry.clone()), &signer).expect("seal")))
    });
    group.bench_function("open (parse + JCS check + verify_strict)", |b| {
        b.iter(|| black_box(seal::open(black_box(&bytes), &key).expect("open")))
    });
    group.bench_function("leaf hash", |b| {
        b.iter(|| black_box(merkle::leaf_hash(black_box(&bytes))))
    });
    group.finish();
}

fn durable_appends(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("log")).expect("sled"));
    let (ledger, _) = populated(&rt, store, 0);
    let mut group = c.benchmark_group("durable append (sled + fsync)");
    group.sample_size(20);
    let mut counter = 0u64;
    for batch in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("{batch} concurrent creates"), |b| {
            b.iter_batched(
                || {
                    (0..batch)
                        .map(|_| {
                            counter += 1;
                            create_command(&format!("bench-{counter}")).0
                        })
                        .collect::<Vec<_>>()
                },
                |commands| {
                    rt.block_on(async {
                        let handles: Vec<_> = commands
                            .into_iter()
                            .map(|command| {
                                let ledger = ledger.clone();
                                tokio::spawn(async move {
                                    ledger.execute(command, Actor::system()).await
                                })
                            })
                            .collect();
                        for h in handles {
                            h.await.expect("join").expect("append");
                        }
                    })
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn merkle_at_a_million(c: &mut Criterion) {
    const N: u64 = 1 << 20;
    let mut nodes = MemoryNodes::new();
    let mut frontier = Frontier::new();
    for i in 0..N {
        for (level, index, hash) in frontier.push(merkle::leaf_hash(&i.to_be_bytes())) {
            nodes.insert(level, index, hash);
        }
    }
    let mut group = c.benchmark_group("merkle (1,048,576 leaves)");
    group.bench_function("root from stored nodes", |b| {
        b.iter(|| black_box(merkle::root_at(&nodes, black_box(N - 3)).expect("root")))
    });
    let mut index = 0u64;
    group.bench_function("inclusion proof", |b| {
        b.iter(|| {
            index = (index + 7919) % N;
            black_box(merkle::inclusion_proof(&nodes, index, N).expect("proof"))
        })
    });
    group.bench_function("consistency proof", |b| {
        b.iter(|| {
            index = (index + 7919) % N;
            black_box(merkle::consistency_proof(&nodes, index.max(1), N).expect("proof"))
        })
    });
    group.bench_function("append one leaf", |b| {
        b.iter_batched(
            || frontier.clone(),
            |mut f| black_box(f.push([1u8; 32])),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    let rt = runtime();
    let source = Arc::new(MemoryStore::new());
    let (ledger, _) = populated(&rt, source.clone(), 100_000 - 2);
    drop(ledger);
    let mut group = c.benchmark_group("start-up");
    group.sample_size(10);
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("replay and check 100,000 entries (in memory)", |b| {
        b.iter(|| {
            let ledger =
                Ledger::open(source.clone(), signer(), Arc::new(SystemClock)).expect("open");
            black_box(ledger.checkpoint().checkpoint.size)
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    verification,
    sealing,
    durable_appends,
    merkle_at_a_million,
    replay
);
criterion_main!(benches);
