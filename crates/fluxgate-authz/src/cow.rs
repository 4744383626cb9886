//! Copy-on-write containers for the snapshot: cloning one costs a reference per chunk or shard,
//! and changing an element copies only its chunk or shard. A snapshot updated for one changed
//! principal therefore costs what that change touches, not what the directory holds, while a
//! look-up costs one more pointer than a plain vector or hash map.

use std::hash::Hash;
use std::sync::Arc;

use fluxgate_domain::{GroupId, PrincipalId};
use rustc_hash::FxHashMap;

const CHUNK_BITS: u32 = 7;
const CHUNK: usize = 1 << CHUNK_BITS;

/// A vector kept in shared chunks of [`CHUNK`] elements, indexed by `u32`.
#[derive(Debug, Clone)]
pub(crate) struct ChunkVec<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Default for ChunkVec<T> {
    fn default() -> Self {
        ChunkVec {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> ChunkVec<T> {
    pub(crate) fn from_vec(items: Vec<T>) -> ChunkVec<T> {
        let len = items.len();
        let mut chunks = Vec::with_capacity(len.div_ceil(CHUNK));
        let mut items = items.into_iter();
        loop {
            let chunk: Vec<T> = items.by_ref().take(CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push(Arc::new(chunk));
        }
        ChunkVec { chunks, len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn get(&self, i: u32) -> &T {
        &self.chunks[(i >> CHUNK_BITS) as usize][i as usize & (CHUNK - 1)]
    }

    /// The element, its chunk copied first if another snapshot shares it.
    pub(crate) fn get_mut(&mut self, i: u32) -> &mut T {
        &mut Arc::make_mut(&mut self.chunks[(i >> CHUNK_BITS) as usize])[i as usize & (CHUNK - 1)]
    }

    /// Appends an element; its index.
    pub(crate) fn push(&mut self, item: T) -> u32 {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        let last = self.chunks.len() - 1;
        Arc::make_mut(&mut self.chunks[last]).push(item);
        self.len += 1;
        (self.len - 1) as u32
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

/// A key that picks its shard from its own bits (ids are random or time-ordered UUIDs whose
/// last byte is random), so no hash is computed twice.
pub(crate) trait ShardKey: Hash + Eq + Copy {
    fn shard(&self) -> usize;
}

const SHARDS: usize = 64;

#[inline]
fn uuid_shard(bytes: &[u8; 16]) -> usize {
    usize::from(bytes[15]) % SHARDS
}

impl ShardKey for PrincipalId {
    #[inline]
    fn shard(&self) -> usize {
        match self {
            PrincipalId::User(u) => uuid_shard(u.0.as_bytes()),
            PrincipalId::ServiceAccount(s) => uuid_shard(s.0.as_bytes()),
        }
    }
}

impl ShardKey for GroupId {
    #[inline]
    fn shard(&self) -> usize {
        uuid_shard(self.0.as_bytes())
    }
}

/// A map from ids to indices in shared shards.
#[derive(Debug, Clone)]
pub(crate) struct ShardedIx<K> {
    shards: Box<[Arc<FxHashMap<K, u32>>]>,
}

impl<K: ShardKey> ShardedIx<K> {
    pub(crate) fn new(keys: impl Iterator<Item = K>) -> ShardedIx<K> {
        let mut shards: Vec<FxHashMap<K, u32>> = vec![FxHashMap::default(); SHARDS];
        for (i, k) in keys.enumerate() {
            shards[k.shard()].insert(k, i as u32);
        }
        ShardedIx {
            shards: shards.into_iter().map(Arc::new).collect(),
        }
    }

    #[inline]
    pub(crate) fn get(&self, k: &K) -> Option<u32> {
        self.shards[k.shard()].get(k).copied()
    }

    pub(crate) fn contains(&self, k: &K) -> bool {
        self.shards[k.shard()].contains_key(k)
    }

    pub(crate) fn insert(&mut self, k: K, i: u32) {
        Arc::make_mut(&mut self.shards[k.shard()]).insert(k, i);
    }

    pub(crate) fn remove(&mut self, k: &K) -> Option<u32> {
        Arc::make_mut(&mut self.shards[k.shard()]).remove(k)
    }
}

impl<K: ShardKey> Default for ShardedIx<K> {
    fn default() -> Self {
        ShardedIx::new(std::iter::empty())
    }
}
