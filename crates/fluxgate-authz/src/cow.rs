//! Copy-on-write containers for the snapshot: cloning one costs a reference per chunk or shard,
//! and changing an element copies only its chunk or shard. A snapshot updated for one changed
//! principal therefore costs what that change touches, not what the directory holds, while a
//! look-up costs one more (cache-warm) pointer than a plain vector or hash map.

use std::hash::Hash;
use std::sync::Arc;

use fluxgate_domain::{GroupId, PrincipalId};
use rustc_hash::FxHashMap;

const CHUNK_BITS: u32 = 7;
const CHUNK: usize = 1 << CHUNK_BITS;

/// A vector kept in shared chunks of [`CHUNK`] elements, indexed by `u32`. A chunk is an
/// `Arc<[T]>`: its elements sit right behind the reference count, one step from the chunk list.
#[derive(Debug, Clone)]
pub(crate) struct ChunkVec<T> {
    chunks: Vec<Arc<[T]>>,
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
        while items.len() > 0 {
            chunks.push(items.by_ref().take(CHUNK).collect::<Arc<[T]>>());
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

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Appends an element; its index. The last chunk is copied with it (it is shared with the
    /// snapshot this one was derived from anyway).
    pub(crate) fn push(&mut self, item: T) -> u32 {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::from([item]));
        } else if let Some(last) = self.chunks.last_mut() {
            let mut v = last.to_vec();
            v.push(item);
            *last = Arc::from(v);
        }
        self.len += 1;
        (self.len - 1) as u32
    }
}

/// A key that picks its shard from its own bits (ids are random or time-ordered UUIDs whose
/// last byte is random), so no hash is computed twice.
pub(crate) trait ShardKey: Hash + Eq + Copy {
    fn shard(&self) -> usize;
}

/// Enough shards that, with 100,000 principals, a changed one copies about 400 others.
const SHARDS: usize = 256;

#[inline]
fn uuid_shard(bytes: &[u8; 16]) -> usize {
    usize::from(bytes[15]) & (SHARDS - 1)
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

/// A hash map kept in shared shards, picked by the key's own bits.
#[derive(Debug, Clone)]
pub(crate) struct ShardedMap<K, V> {
    shards: [Arc<FxHashMap<K, V>>; SHARDS],
}

impl<K: ShardKey, V: Clone> ShardedMap<K, V> {
    pub(crate) fn new(entries: impl ExactSizeIterator<Item = (K, V)>) -> ShardedMap<K, V> {
        let per_shard = entries.len() / SHARDS + entries.len() / (SHARDS * 4);
        let mut shards: [FxHashMap<K, V>; SHARDS] = std::array::from_fn(|_| {
            FxHashMap::with_capacity_and_hasher(per_shard, Default::default())
        });
        for (k, v) in entries {
            shards[k.shard()].insert(k, v);
        }
        ShardedMap {
            shards: shards.map(Arc::new),
        }
    }

    #[inline]
    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.shards[k.shard()].get(k)
    }

    pub(crate) fn contains(&self, k: &K) -> bool {
        self.shards[k.shard()].contains_key(k)
    }

    /// The value, its shard copied first if another snapshot shares it.
    pub(crate) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let shard = &mut self.shards[k.shard()];
        if !shard.contains_key(k) {
            return None;
        }
        Arc::make_mut(shard).get_mut(k)
    }

    pub(crate) fn insert(&mut self, k: K, v: V) {
        Arc::make_mut(&mut self.shards[k.shard()]).insert(k, v);
    }

    pub(crate) fn remove(&mut self, k: &K) -> Option<V> {
        let shard = &mut self.shards[k.shard()];
        if !shard.contains_key(k) {
            return None;
        }
        Arc::make_mut(shard).remove(k)
    }
}

impl<K: ShardKey, V: Clone> Default for ShardedMap<K, V> {
    fn default() -> Self {
        ShardedMap::new(std::iter::empty())
    }
}
