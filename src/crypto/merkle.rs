//! RFC 6962 / RFC 9162 Merkle trees (SHA-256) over the ledger's append-only log.
//!
//! The log's entries are the tree's leaves and leaf index = entry `seq`. This module owns:
//!
//! * the hashing rules (`leaf_hash`, `node_hash`, `empty_root`), with RFC 6962's
//!   domain separation (0x00 before a leaf, 0x01 before an interior node) so that a leaf
//!   can never be passed off as an interior node or the other way round;
//! * the writer's [`Frontier`], which appends leaves in O(log n), reports which complete
//!   subtrees each append finishes (the only nodes the store ever needs to keep) and
//!   computes the root;
//! * proof generation ([`inclusion_proof`], [`consistency_proof`], [`root_at`]) from those
//!   stored complete subtrees, and the matching RFC 9162 verifiers, which need nothing but
//!   the proof and the tree heads (the offline verifier uses them).
//!
//! Invariants:
//!
//! * Only *complete, aligned* subtrees are stored: `node(level, index)` is the hash of leaves
//!   `[index << level, (index + 1) << level)`. Such a node never changes once the log has
//!   grown past it, so it is valid for every larger tree size.
//! * Every node of the RFC 6962 tree of size `n` covers a range `[start, end)` whose left
//!   child (split at the largest power of two `k < end - start`) is a complete aligned
//!   subtree, so any node's hash is rebuilt from O(log n) stored nodes, and a proof from
//!   O(log² n) of them. Nothing here ever scans leaves.
//! * Bad input (an index beyond the tree, a size beyond what is stored) yields a
//!   [`MerkleError`], never a panic.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// A SHA-256 output: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// RFC 6962 prefix of a hashed leaf.
const LEAF_PREFIX: u8 = 0x00;
/// RFC 6962 prefix of a hashed interior node.
const NODE_PREFIX: u8 = 0x01;

/// The hash of one log entry as a tree leaf, `SHA-256(0x00 || entry)`.
///
/// The 0x00 prefix keeps leaf hashes disjoint from interior node hashes (second-preimage
/// resistance, RFC 6962 §2.1).
#[must_use]
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(entry);
    hasher.finalize().into()
}

/// The hash of an interior node from its two children, `SHA-256(0x01 || left || right)`.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree, `SHA-256("")`, as RFC 6962 defines MTH({}).
#[must_use]
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Why a tree hash or proof could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum MerkleError {
    /// The node store has no such complete subtree: usually the requested tree size is
    /// larger than what has been appended (and stored) so far.
    #[error(
        "Merkle node at level {level}, index {index} is not stored (is the tree that large yet?)"
    )]
    MissingNode {
        /// Height of the subtree (0 = leaf).
        level: u8,
        /// Position of the subtree among those of its level.
        index: u64,
    },
    /// A leaf index or tree size that does not fit the tree it refers to (a leaf index at or
    /// beyond the tree size, or an old tree size larger than the new one).
    #[error("{what} {value} is out of range for a tree of {size} leaves")]
    OutOfRange {
        /// What the value is, e.g. "leaf index" or "old tree size".
        what: &'static str,
        /// The offending value.
        value: u64,
        /// The tree size it was checked against.
        size: u64,
    },
    /// The backing store failed (I/O, corruption, ...).
    #[error("Merkle node store error: {0}")]
    Store(String),
}

/// Stored complete-subtree hashes: `node(level, index)` is the hash of leaves
/// `[index << level, (index + 1) << level)`.
///
/// This is the only thing proof generation needs from storage; the persistent store and
/// [`MemoryNodes`] both implement it. A node that is not (yet) stored must be reported as
/// [`MerkleError::MissingNode`].
pub trait NodeSource {
    /// The hash of the complete subtree of height `level` at position `index`.
    fn node(&self, level: u8, index: u64) -> Result<Hash, MerkleError>;
}

/// In-memory [`NodeSource`], used by tests and by the offline verifier (which rebuilds the
/// tree from an exported log rather than from the server's store).
#[derive(Clone, Debug, Default)]
pub struct MemoryNodes {
    nodes: HashMap<(u8, u64), Hash>,
}

impl MemoryNodes {
    /// An empty store: every lookup is [`MerkleError::MissingNode`] until nodes are inserted.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores the hash of complete subtree `(level, index)`, typically one of the nodes
    /// returned by [`Frontier::push`]. Re-inserting a node replaces it.
    pub fn insert(&mut self, level: u8, index: u64, hash: Hash) {
        self.nodes.insert((level, index), hash);
    }
}

impl NodeSource for MemoryNodes {
    fn node(&self, level: u8, index: u64) -> Result<Hash, MerkleError> {
        self.nodes
            .get(&(level, index))
            .copied()
            .ok_or(MerkleError::MissingNode { level, index })
    }
}

/// The right frontier of the tree (a "compact range" starting at leaf 0): the roots of the
/// maximal complete subtrees that partition leaves `[0, size)`, one per set bit of `size`.
///
/// It lets the writer append leaves, learn which complete subtree nodes became complete (so
/// it can store them) and compute the root, all in O(log n) time and space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    /// Number of leaves appended so far.
    size: u64,
    /// Roots of the complete subtrees, leftmost (largest, highest set bit of `size`) first;
    /// always exactly `size.count_ones()` entries.
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves in the tree this frontier describes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns every node completed by it, starting with
    /// `(0, index, leaf)` and going up, so the caller can store them all.
    ///
    /// A tree of `u64::MAX` leaves cannot grow; appending to it changes nothing and
    /// returns no nodes (unreachable in practice, but it must not panic or wrap).
    pub fn push(&mut self, leaf: Hash) -> Vec<(u8, u64, Hash)> {
        let index = self.size;
        let Some(new_size) = index.checked_add(1) else {
            return Vec::new();
        };
        // Appending leaf `index` merges one frontier subtree per trailing one bit of `index`
        // (binary carry), each merge completing the node one level up.
        let merges = index.trailing_ones();
        let mut completed = Vec::with_capacity(merges as usize + 1);
        let mut hash = leaf;
        completed.push((0, index, hash));
        for level in 1..=merges {
            // The frontier holds one hash per set bit of `size`, so there is a left sibling
            // for each carry; `let else` keeps this panic-free even so.
            let Some(left) = self.hashes.pop() else {
                break;
            };
            hash = node_hash(&left, &hash);
            // `merges <= 63` here because `index < u64::MAX`, so both casts and the shift are exact.
            completed.push((level as u8, index >> level, hash));
        }
        self.hashes.push(hash);
        self.size = new_size;
        completed
    }

    /// The tree root (RFC 6962 MTH of all leaves so far); [`empty_root`] at size 0.
    ///
    /// Folds the frontier from the right: the RFC tree of a non-power-of-two size is its
    /// largest complete subtree joined with the tree of the remaining leaves.
    #[must_use]
    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        let Some(&last) = iter.next() else {
            return empty_root();
        };
        iter.fold(last, |acc, left| node_hash(left, &acc))
    }

    /// Rebuilds the frontier of a tree of `size` leaves from stored nodes (one read per set
    /// bit of `size`, so O(log n)), e.g. when the writer restarts.
    pub fn from_source(src: &dyn NodeSource, size: u64) -> Result<Self, MerkleError> {
        let mut hashes = Vec::with_capacity(size.count_ones() as usize);
        let mut start: u64 = 0;
        for level in (0..64u8).rev() {
            if (size >> level) & 1 == 1 {
                hashes.push(src.node(level, start >> level)?);
                // `start + 2^level <= size`, so this cannot overflow.
                start += 1u64 << level;
            }
        }
        Ok(Self { size, hashes })
    }
}

/// The root of the tree of the first `size` leaves, from stored nodes in O(log n) reads;
/// lets the server sign or re-check a checkpoint for any past size.
pub fn root_at(src: &dyn NodeSource, size: u64) -> Result<Hash, MerkleError> {
    Ok(Frontier::from_source(src, size)?.root())
}

/// RFC 9162 §2.1.3.1 inclusion proof (audit path) of leaf `index` in the tree of `size`
/// leaves, from stored nodes: the sibling hashes from the leaf up to the root.
///
/// Errors with [`MerkleError::OutOfRange`] if `index >= size`, and with
/// [`MerkleError::MissingNode`] if `size` exceeds what the store holds.
pub fn inclusion_proof(
    src: &dyn NodeSource,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    if index >= size {
        return Err(MerkleError::OutOfRange {
            what: "leaf index",
            value: index,
            size,
        });
    }
    // The path of the last leaf reads nothing at or beyond it, so check explicitly that the
    // store really holds a tree of `size` leaves rather than prove against a phantom one.
    if index == size - 1 {
        src.node(0, index)?;
    }
    // Walk down from the root, recording the sibling of the branch holding `index`;
    // the RFC lists siblings bottom-up, hence the reversal.
    let mut proof = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let mid = lo + split_point(hi - lo);
        if index < mid {
            proof.push(range_hash(src, mid, hi)?);
            hi = mid;
        } else {
            proof.push(range_hash(src, lo, mid)?);
            lo = mid;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// RFC 9162 §2.1.4.1 consistency proof between tree sizes `from <= to`: the hashes that
/// show the tree of `from` leaves is a prefix of the tree of `to` leaves.
///
/// `from == 0` or `from == to` gives an empty proof (nothing to prove). Errors with
/// [`MerkleError::OutOfRange`] if `from > to`, and with [`MerkleError::MissingNode`] if `to`
/// exceeds what the store holds.
pub fn consistency_proof(
    src: &dyn NodeSource,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, MerkleError> {
    if from > to {
        return Err(MerkleError::OutOfRange {
            what: "old tree size",
            value: from,
            size: to,
        });
    }
    if from == 0 || from == to {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[lo:hi], whole_old_tree), unrolled top-down; the RFC lists the deepest
    // part first, hence the reversal.
    let mut proof = Vec::new();
    let (mut lo, mut hi) = (0u64, to);
    let mut whole_old_tree = true;
    loop {
        if from == hi {
            // The old tree ends exactly at this node. If it *is* the old tree the verifier
            // already has its root; otherwise the node's hash is needed.
            if !whole_old_tree {
                proof.push(range_hash(src, lo, hi)?);
            }
            break;
        }
        // Here lo < from < hi, so hi - lo >= 2 and the split is well defined.
        let mid = lo + split_point(hi - lo);
        if from <= mid {
            proof.push(range_hash(src, mid, hi)?);
            hi = mid;
        } else {
            proof.push(range_hash(src, lo, mid)?);
            lo = mid;
            whole_old_tree = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// RFC 9162 §2.1.3.2 verification that `leaf` is leaf `index` of the tree of `size` leaves
/// whose root is `root`. Needs no store, so clients and the offline verifier can use it.
#[must_use]
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false; // proof longer than the path to the root
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                // Right-most node of its level with no right sibling: skip the levels
                // where it is simply promoted.
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// RFC 9162 §2.1.4.2 verification that the tree of `from` leaves with root `from_root` is a
/// prefix of the tree of `to` leaves with root `to_root`. Needs no store.
///
/// As [`consistency_proof`] produces them, `from == to` needs an empty proof and equal roots,
/// and `from == 0` an empty proof with `from_root` equal to [`empty_root`].
#[must_use]
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> bool {
    if from > to {
        return false;
    }
    if from == to {
        return proof.is_empty() && from_root == to_root;
    }
    if from == 0 {
        return proof.is_empty() && *from_root == empty_root();
    }
    // Step 1: if the old tree is a complete subtree its root starts the path (the prover
    // left it out because the verifier has it).
    let (first, rest) = if from.is_power_of_two() {
        (*from_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return false,
        }
    };
    let mut fnode = from - 1;
    let mut snode = to - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = first;
    let mut sr = first;
    for c in rest {
        if snode == 0 {
            return false; // proof longer than the path to the root
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && fr == *from_root && sr == *to_root
}

/// The largest power of two strictly smaller than `n`, the RFC 6962 split point `k`.
/// Callers pass `n >= 2`; for smaller `n` it returns 1 rather than panicking.
fn split_point(n: u64) -> u64 {
    if n < 2 {
        return 1;
    }
    // n - 1 >= 1, so leading_zeros() <= 63.
    1u64 << (63 - (n - 1).leading_zeros())
}

/// RFC 6962 MTH of leaves `[start, end)` from stored complete subtrees.
///
/// For the ranges of RFC tree nodes (all callers here) the left part of every split is a
/// complete aligned subtree, so this reads one node per set bit of the length: O(log n).
/// Other ranges still hash correctly, only less cheaply. An empty range is MTH({}).
fn range_hash(src: &dyn NodeSource, start: u64, end: u64) -> Result<Hash, MerkleError> {
    let len = end.saturating_sub(start);
    if len == 0 {
        return Ok(empty_root());
    }
    if len.is_power_of_two() && start % len == 0 {
        // trailing_zeros() of a u64 power of two is at most 63, so it fits a u8.
        let level = len.trailing_zeros() as u8;
        return src.node(level, start >> level);
    }
    let mid = start + split_point(len);
    let left = range_hash(src, start, mid)?;
    let right = range_hash(src, mid, end)?;
    Ok(node_hash(&left, &right))
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use std::cell::Cell;

    use super::*;

    // ----- Naive reference implementation, straight from RFC 6962 §2.1 -----

    /// Largest power of two strictly less than `n` (n >= 2), by counting up.
    fn ref_k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]) over leaf hashes.
    fn ref_mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = ref_k(n);
                node_hash(&ref_mth(&leaves[..k]), &ref_mth(&leaves[k..]))
            }
        }
    }

    /// PATH(m, D[n]).
    fn ref_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = ref_k(n);
        if m < k {
            let mut p = ref_path(m, &leaves[..k]);
            p.push(ref_mth(&leaves[k..]));
            p
        } else {
            let mut p = ref_path(m - k, &leaves[k..]);
            p.push(ref_mth(&leaves[..k]));
            p
        }
    }

    /// SUBPROOF(m, D[n], b).
    fn ref_subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if b { Vec::new() } else { vec![ref_mth(leaves)] };
        }
        let k = ref_k(n);
        if m <= k {
            let mut p = ref_subproof(m, &leaves[..k], b);
            p.push(ref_mth(&leaves[k..]));
            p
        } else {
            let mut p = ref_subproof(m - k, &leaves[k..], false);
            p.push(ref_mth(&leaves[..k]));
            p
        }
    }

    /// PROOF(m, D[n]).
    fn ref_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        ref_subproof(m, leaves, true)
    }

    // ----- Helpers -----

    const MAX: usize = 70;

    fn test_leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    }

    /// A store holding exactly the nodes complete after appending `leaves`, so any read
    /// beyond the tree fails.
    fn store_of(leaves: &[Hash]) -> (MemoryNodes, Frontier) {
        let mut store = MemoryNodes::new();
        let mut frontier = Frontier::new();
        for leaf in leaves {
            for (level, index, hash) in frontier.push(*leaf) {
                store.insert(level, index, hash);
            }
        }
        (store, frontier)
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        assert!(s.len() % 2 == 0, "odd-length hex {s:?}");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn tamper(h: &Hash) -> Hash {
        let mut t = *h;
        t[7] ^= 0x40;
        t
    }

    /// Counts reads and answers every node with a synthetic hash, to measure proof cost on
    /// huge trees without building them.
    struct CountingSource {
        reads: Cell<u64>,
    }

    impl NodeSource for CountingSource {
        fn node(&self, level: u8, index: u64) -> Result<Hash, MerkleError> {
            self.reads.set(self.reads.get() + 1);
            let mut bytes = vec![level];
            bytes.extend_from_slice(&index.to_be_bytes());
            Ok(leaf_hash(&bytes))
        }
    }

    // ----- Tests -----

    #[test]
    fn hash_primitives() {
        assert_eq!(
            empty_root(),
            <[u8; 32]>::try_from(hex_decode(
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            ))
            .unwrap()
        );
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
        // Domain separation: a leaf whose bytes equal an interior node's preimage body
        // does not hash to that node.
        let mut body = a.to_vec();
        body.extend_from_slice(&b);
        assert_ne!(leaf_hash(&body), node_hash(&a, &b));
    }

    #[test]
    fn rfc6962_vectors() {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/merkle_rfc6962.json")).unwrap();
        let leaves: Vec<Hash> = json["leaves_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| leaf_hash(&hex_decode(v.as_str().unwrap())))
            .collect();
        assert_eq!(leaves.len(), 8);
        let roots = json["roots_hex_by_size"].as_object().unwrap();
        assert_eq!(roots.len(), 9);

        let mut frontier = Frontier::new();
        let mut store = MemoryNodes::new();
        for size in 0..=8usize {
            if size > 0 {
                for (level, index, hash) in frontier.push(leaves[size - 1]) {
                    store.insert(level, index, hash);
                }
            }
            let want = hex_decode(roots[&size.to_string()].as_str().unwrap());
            assert_eq!(frontier.size(), size as u64);
            assert_eq!(
                frontier.root().to_vec(),
                want,
                "Frontier::root, size {size}"
            );
            assert_eq!(
                root_at(&store, size as u64).unwrap().to_vec(),
                want,
                "root_at, size {size}"
            );
            assert_eq!(
                ref_mth(&leaves[..size]).to_vec(),
                want,
                "reference, size {size}"
            );
        }
    }

    #[test]
    fn push_reports_completed_nodes() {
        let leaves = test_leaves(MAX);
        let mut frontier = Frontier::new();
        for (i, leaf) in leaves.iter().enumerate() {
            let completed = frontier.push(*leaf);
            assert_eq!(completed.len(), (i as u64).trailing_ones() as usize + 1);
            assert_eq!(completed[0], (0, i as u64, *leaf));
            for (level, index, hash) in completed {
                let lo = (index << level) as usize;
                let hi = ((index + 1) << level) as usize;
                assert_eq!(hi, i + 1, "completed node must end at the new leaf");
                assert_eq!(hash, ref_mth(&leaves[lo..hi]), "node ({level}, {index})");
            }
            assert_eq!(frontier.root(), ref_mth(&leaves[..=i]));
        }
    }

    #[test]
    fn frontier_from_source_matches_pushes() {
        let leaves = test_leaves(MAX);
        let (full_store, _) = store_of(&leaves);
        let mut frontier = Frontier::new();
        for size in 0..=MAX {
            if size > 0 {
                frontier.push(leaves[size - 1]);
            }
            // From a store holding more than needed, and from one holding exactly `size`.
            let rebuilt = Frontier::from_source(&full_store, size as u64).unwrap();
            assert_eq!(rebuilt, frontier, "size {size}");
            assert_eq!(rebuilt.root(), ref_mth(&leaves[..size]));
            let (exact, _) = store_of(&leaves[..size]);
            let mut rebuilt = Frontier::from_source(&exact, size as u64).unwrap();
            assert_eq!(rebuilt, frontier, "size {size}");
            // A rebuilt frontier keeps appending correctly.
            if size < MAX {
                rebuilt.push(leaves[size]);
                assert_eq!(rebuilt.root(), ref_mth(&leaves[..=size]));
            }
        }
    }

    #[test]
    fn inclusion_proofs_match_reference_and_verify() {
        let leaves = test_leaves(MAX + 1);
        let roots: Vec<Hash> = (0..=MAX + 1).map(|n| ref_mth(&leaves[..n])).collect();
        for n in 1..=MAX {
            let (store, frontier) = store_of(&leaves[..n]);
            let root = frontier.root();
            assert_eq!(root, roots[n]);
            let size = n as u64;
            for i in 0..n {
                let index = i as u64;
                let proof = inclusion_proof(&store, index, size).unwrap();
                assert_eq!(proof, ref_path(i, &leaves[..n]), "PATH({i}, D[{n}])");
                assert!(verify_inclusion(&leaves[i], index, size, &proof, &root));

                // Tampered proof hash.
                for j in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[j] = tamper(&bad[j]);
                    assert!(!verify_inclusion(&leaves[i], index, size, &bad, &root));
                }
                // Truncated or extended proof.
                if let Some((_, shorter)) = proof.split_last() {
                    assert!(!verify_inclusion(&leaves[i], index, size, shorter, &root));
                }
                let mut longer = proof.clone();
                longer.push(root);
                assert!(!verify_inclusion(&leaves[i], index, size, &longer, &root));
                // Wrong leaf or wrong root.
                assert!(!verify_inclusion(
                    &tamper(&leaves[i]),
                    index,
                    size,
                    &proof,
                    &root
                ));
                assert!(!verify_inclusion(
                    &leaves[i],
                    index,
                    size,
                    &proof,
                    &tamper(&root)
                ));
                // Wrong index, or another leaf claimed with this proof.
                for j in (0..n).filter(|&j| j != i) {
                    assert!(!verify_inclusion(&leaves[i], j as u64, size, &proof, &root));
                    assert!(!verify_inclusion(&leaves[j], j as u64, size, &proof, &root));
                }
                assert!(!verify_inclusion(&leaves[i], size, size, &proof, &root));
                // Wrong size, checked against that size's real root.
                for m in (1..=MAX + 1).filter(|&m| m != n) {
                    assert!(
                        !verify_inclusion(&leaves[i], index, m as u64, &proof, &roots[m]),
                        "PATH({i}, D[{n}]) accepted for size {m}"
                    );
                }
                assert!(!verify_inclusion(&leaves[i], index, 0, &proof, &root));
            }
        }
    }

    #[test]
    fn consistency_proofs_match_reference_and_verify() {
        let leaves = test_leaves(MAX + 1);
        let roots: Vec<Hash> = (0..=MAX + 1).map(|n| ref_mth(&leaves[..n])).collect();
        for n in 1..=MAX {
            let (store, _) = store_of(&leaves[..n]);
            let to = n as u64;
            for m in 1..=n {
                let from = m as u64;
                let proof = consistency_proof(&store, from, to).unwrap();
                let want = if m == n {
                    Vec::new()
                } else {
                    ref_proof(m, &leaves[..n])
                };
                assert_eq!(proof, want, "PROOF({m}, D[{n}])");
                assert!(verify_consistency(from, to, &roots[m], &roots[n], &proof));

                // Wrong roots.
                assert!(!verify_consistency(
                    from,
                    to,
                    &tamper(&roots[m]),
                    &roots[n],
                    &proof
                ));
                assert!(!verify_consistency(
                    from,
                    to,
                    &roots[m],
                    &tamper(&roots[n]),
                    &proof
                ));
                if m == n {
                    continue;
                }
                // Tampered proof hash.
                for j in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[j] = tamper(&bad[j]);
                    assert!(!verify_consistency(from, to, &roots[m], &roots[n], &bad));
                }
                // Truncated, extended or empty proof.
                if let Some((_, shorter)) = proof.split_last() {
                    assert!(!verify_consistency(from, to, &roots[m], &roots[n], shorter));
                }
                let mut longer = proof.clone();
                longer.push(roots[n]);
                assert!(!verify_consistency(from, to, &roots[m], &roots[n], &longer));
                assert!(!verify_consistency(from, to, &roots[m], &roots[n], &[]));
                // Swapped sizes and roots.
                assert!(!verify_consistency(to, from, &roots[n], &roots[m], &proof));
                // Wrong sizes, checked against those sizes' real roots.
                for m2 in (1..=n).filter(|&m2| m2 != m) {
                    assert!(
                        !verify_consistency(m2 as u64, to, &roots[m2], &roots[n], &proof),
                        "PROOF({m}, D[{n}]) accepted for old size {m2}"
                    );
                }
                for n2 in (m..=MAX + 1).filter(|&n2| n2 != n) {
                    assert!(
                        !verify_consistency(from, n2 as u64, &roots[m], &roots[n2], &proof),
                        "PROOF({m}, D[{n}]) accepted for new size {n2}"
                    );
                }
            }
        }
    }

    #[test]
    fn trivial_consistency_cases() {
        let leaves = test_leaves(5);
        let (store, frontier) = store_of(&leaves);
        let root = frontier.root();
        assert!(consistency_proof(&store, 0, 5).unwrap().is_empty());
        assert!(consistency_proof(&store, 5, 5).unwrap().is_empty());
        assert!(consistency_proof(&store, 0, 0).unwrap().is_empty());
        assert!(verify_consistency(0, 5, &empty_root(), &root, &[]));
        assert!(!verify_consistency(0, 5, &root, &root, &[]));
        assert!(!verify_consistency(0, 5, &empty_root(), &root, &[root]));
        assert!(verify_consistency(5, 5, &root, &root, &[]));
        assert!(!verify_consistency(5, 5, &root, &tamper(&root), &[]));
        assert!(!verify_consistency(5, 5, &root, &root, &[root]));
        assert!(!verify_consistency(6, 5, &root, &root, &[]));
    }

    #[test]
    fn errors_not_panics() {
        let leaves = test_leaves(5);
        let (store, _) = store_of(&leaves);

        assert!(matches!(
            inclusion_proof(&store, 5, 5),
            Err(MerkleError::OutOfRange {
                value: 5,
                size: 5,
                ..
            })
        ));
        assert!(matches!(
            inclusion_proof(&store, 0, 0),
            Err(MerkleError::OutOfRange { .. })
        ));
        assert!(matches!(
            inclusion_proof(&store, u64::MAX, u64::MAX),
            Err(MerkleError::OutOfRange { .. })
        ));
        assert!(matches!(
            consistency_proof(&store, 4, 3),
            Err(MerkleError::OutOfRange {
                value: 4,
                size: 3,
                ..
            })
        ));

        // Sizes beyond what is stored.
        assert!(matches!(
            inclusion_proof(&store, 0, 8),
            Err(MerkleError::MissingNode { .. })
        ));
        assert!(matches!(
            inclusion_proof(&store, 5, 6),
            Err(MerkleError::MissingNode { level: 0, index: 5 })
        ));
        assert!(matches!(
            inclusion_proof(&store, 4, 6),
            Err(MerkleError::MissingNode { level: 0, index: 5 })
        ));
        assert!(matches!(
            consistency_proof(&store, 3, 9),
            Err(MerkleError::MissingNode { .. })
        ));
        assert!(matches!(
            root_at(&store, 6),
            Err(MerkleError::MissingNode { .. })
        ));
        assert!(matches!(
            root_at(&store, u64::MAX),
            Err(MerkleError::MissingNode { .. })
        ));
        assert!(matches!(
            Frontier::from_source(&MemoryNodes::new(), 1),
            Err(MerkleError::MissingNode { level: 0, index: 0 })
        ));
        assert_eq!(root_at(&MemoryNodes::new(), 0).unwrap(), empty_root());

        // Messages are meaningful.
        let msg = inclusion_proof(&store, 7, 5).unwrap_err().to_string();
        assert!(msg.contains("leaf index 7") && msg.contains('5'), "{msg}");
        let msg = MerkleError::MissingNode { level: 2, index: 9 }.to_string();
        assert!(msg.contains("level 2") && msg.contains("index 9"), "{msg}");

        // Verifiers reject garbage without panicking.
        let h = leaves[0];
        assert!(!verify_inclusion(&h, 0, 0, &[], &h));
        assert!(!verify_inclusion(&h, u64::MAX, u64::MAX, &[h; 70], &h));
        assert!(!verify_inclusion(&h, 0, u64::MAX, &[h; 70], &h));
        assert!(!verify_consistency(
            u64::MAX - 1,
            u64::MAX,
            &h,
            &h,
            &[h; 70]
        ));
        assert!(!verify_consistency(1, u64::MAX, &h, &h, &[h; 70]));
    }

    #[test]
    fn proofs_read_at_most_log_squared_nodes() {
        let sizes = [
            (1u64 << 40) + 12_345,
            (1u64 << 63) - 1,
            u64::MAX,
            (1u64 << 62) + (1u64 << 31) + 7,
        ];
        for size in sizes {
            let bound = 64 * 64;
            for index in [0, 1, size / 3, size / 2, size - 2, size - 1] {
                let src = CountingSource {
                    reads: Cell::new(0),
                };
                let proof = inclusion_proof(&src, index, size).unwrap();
                assert!(proof.len() <= 64);
                assert!(src.reads.get() <= bound, "{} reads", src.reads.get());
            }
            for from in [1, 2, 3, size / 3, size / 2 + 1, size - 1] {
                let src = CountingSource {
                    reads: Cell::new(0),
                };
                let proof = consistency_proof(&src, from, size).unwrap();
                assert!(proof.len() <= 2 * 64);
                assert!(src.reads.get() <= bound, "{} reads", src.reads.get());
            }
            let src = CountingSource {
                reads: Cell::new(0),
            };
            root_at(&src, size).unwrap();
            assert_eq!(src.reads.get(), u64::from(size.count_ones()));
        }
    }

    #[test]
    fn full_tree_push_does_not_panic() {
        // A frontier at the maximum size (built directly, as no real log gets there).
        let src = CountingSource {
            reads: Cell::new(0),
        };
        let mut frontier = Frontier::from_source(&src, u64::MAX).unwrap();
        let before = frontier.clone();
        assert!(frontier.push(leaf_hash(b"x")).is_empty());
        assert_eq!(frontier, before);
        let mut almost = Frontier::from_source(&src, u64::MAX - 1).unwrap();
        assert_eq!(almost.push(leaf_hash(b"x")).len(), 1);
        assert_eq!(almost.size(), u64::MAX);
    }
}
