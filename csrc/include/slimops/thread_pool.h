// Threads for the CPU kernels.
//
// slimops does not link an OpenMP runtime: torch ships its own libgomp, and a
// second runtime gives two sets of spinning threads fighting for the same
// cores. Instead parallel_for runs on torch's libgomp team when the process
// has one loaded (found at run time), and otherwise on a small persistent pool
// whose idle workers sleep after a short spin. Either way the caller passes
// torch.get_num_threads(), so slimops never runs more threads than torch.
// Concurrent calls are safe; the pool runs them one after another.
#pragma once

#include <cstdint>
#include <functional>

namespace slimops {

// Runs fn(task) for every task in [0, ntasks) on at most nthreads threads, the
// calling thread included, and returns when all tasks are done. Tasks are
// handed out dynamically, so uneven tasks balance. Safe to call from several
// threads at once.
void parallel_for(int64_t ntasks, int nthreads, const std::function<void(int64_t)>& fn);

// Requests for more threads than this are capped.
constexpr int kMaxThreads = 1024;

// Threads worth using for an M x N output with K-long dot products: one below
// 2^18 multiply-adds (waking others costs more than it saves), else nthreads
// capped to [1, kMaxThreads].
int threads_for(int64_t M, int64_t N, int64_t K, int nthreads);

// Runs fn(m_begin, m_end, n_begin, n_end) for every m_block x n_block tile of
// an M x N output (edge tiles clipped), handed out like parallel_for.
void parallel_for_tiles(int64_t M, int64_t N, int64_t m_block, int64_t n_block, int nthreads,
                        const std::function<void(int64_t, int64_t, int64_t, int64_t)>& fn);

enum class ThreadBackend { kAuto = 0, kOpenMP = 1, kPool = 2 };

// kAuto (the default) uses torch's libgomp if loaded, else the pool. Forcing
// kOpenMP fails (returns false) when no libgomp is loaded.
bool set_thread_backend(ThreadBackend backend);
// The backend parallel_for uses now (never kAuto).
ThreadBackend thread_backend();

}  // namespace slimops
