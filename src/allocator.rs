//! The allocator settings of every executable that runs the processor: the `dqetl` binary and
//! the benchmarks, so that the benchmarks measure what ships. Each executable declares the
//! allocator and exports these settings itself, as tikv-jemallocator documents:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
//!
//! #[unsafe(export_name = "_rjem_malloc_conf")]
//! static MALLOC_CONF: dqetl::allocator::MallocConf = dqetl::allocator::MALLOC_CONF;
//! ```
//!
//! jemalloc rather than glibc's malloc: the processor allocates and frees column buffers from
//! several threads on every batch; glibc's per-thread arenas fragment under that and keep the
//! memory, jemalloc is faster and gives pages back.

/// jemalloc's options (read once at start-up, as its `malloc_conf`): freed pages go back to the
/// OS after 100 ms instead of 10 s, from a background thread, so the resident set follows what
/// a batch really holds rather than the last seconds of rewrites; and one arena, since a batch's
/// buffers are freed on other threads than the ones that built them and several arenas each
/// kept their own free pages (peak heap ~20 MiB lower at a 100k-row commit, throughput alike).
pub const MALLOC_CONF: MallocConf = MallocConf(
    c"background_thread:true,narenas:1,dirty_decay_ms:100,muzzy_decay_ms:0"
        .as_ptr()
        .cast(),
);

/// A C string pointer jemalloc reads as `malloc_conf`.
#[repr(transparent)]
pub struct MallocConf(*const u8);

// SAFETY: a pointer to a static, immutable C string.
unsafe impl Sync for MallocConf {}
