//! The one worker pool every CPU-heavy node job (segment scans, index
//! builds) runs on: one thread per core, shared by all concurrent requests so
//! they queue for the cores instead of each starting its own threads.

use std::num::NonZeroUsize;
use std::sync::OnceLock;

/// The process-wide pool, built on first use with one thread per core.
/// Process-wide rather than per engine: index builds (`index::parallel`)
/// have no engine at hand, and several nodes in one test process should
/// share the cores too.
pub fn workers() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mishards-scan-{i}"))
            .build();
        match built {
            Ok(pool) => pool,
            Err(e) => {
                // Threads could not be spawned: a one-thread pool is the
                // last resort (if even that fails, nothing else would run).
                tracing::warn!(error = %e, "cannot build the scan pool; trying one thread");
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .unwrap_or_else(|e| panic!("cannot start any scan thread: {e}"))
            }
        }
    })
}

/// Number of threads of [`workers`].
pub fn width() -> usize {
    workers().current_num_threads()
}
