#include "slimops/thread_pool.h"

#include <dlfcn.h>
#include <pthread.h>
#ifdef __linux__
#include <link.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SLIMOPS_CPU_RELAX() _mm_pause()
#else
#define SLIMOPS_CPU_RELAX() ((void)0)
#endif

namespace slimops {
namespace {

// How long an idle worker spins before sleeping: long enough to catch the next
// call of a layer-by-layer model, short enough not to steal torch's cores.
constexpr auto kSpinTime = std::chrono::microseconds(50);

// One parallel_for call. Workers hold it by shared_ptr, so a worker that wakes
// late only touches this job's counters (already exhausted) and never the
// caller's fn, which is gone once run() returns.
struct Job {
  const std::function<void(int64_t)>* fn;
  int64_t ntasks;
  int max_helpers;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<int> helpers{0};

  void drain() {
    for (;;) {
      const int64_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (t >= ntasks) return;
      (*fn)(t);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

class Pool {
 public:
  void run(int64_t ntasks, int nthreads, const std::function<void(int64_t)>& fn) {
    std::lock_guard<std::mutex> serial(run_mutex_);
    const int helpers = static_cast<int>(std::min<int64_t>(std::max(nthreads, 1), ntasks)) - 1;
    if (helpers <= 0) {
      for (int64_t t = 0; t < ntasks; ++t) fn(t);
      return;
    }
    grow(helpers);
    auto job = std::make_shared<Job>();
    job->fn = &fn;
    job->ntasks = ntasks;
    job->max_helpers = helpers;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    job->drain();
    // Wait for tasks other threads claimed, not for every helper to show up:
    // a helper that is not scheduled yet simply finds no work left.
    while (job->done.load(std::memory_order_acquire) != ntasks) SLIMOPS_CPU_RELAX();
  }

 private:
  void grow(int helpers) {
    while (static_cast<int>(workers_.size()) < helpers) {
      workers_.emplace_back([this, seen = generation_.load()] { worker_loop(seen); });
    }
  }

  void worker_loop(uint64_t seen) {
    for (;;) {
      std::shared_ptr<Job> job = wait_for_job(&seen);
      if (job->helpers.fetch_add(1, std::memory_order_relaxed) < job->max_helpers) job->drain();
    }
  }

  std::shared_ptr<Job> wait_for_job(uint64_t* seen) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
    while (generation_.load(std::memory_order_acquire) == *seen &&
           std::chrono::steady_clock::now() < spin_until) {
      SLIMOPS_CPU_RELAX();
    }
    std::unique_lock<std::mutex> lock(mutex_);
    wake_.wait(lock, [&] { return generation_.load() != *seen; });
    *seen = generation_.load();
    return job_;
  }

  std::mutex run_mutex_;
  std::mutex mutex_;  // guards job_ and the sleep/wake handshake
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::shared_ptr<Job> job_;
  std::vector<std::thread> workers_;
};

// The pool is heap-allocated and never destroyed: workers may still be asleep
// while static destructors run at exit. A forked child has none of the
// parent's threads, so it abandons the old pool and builds a fresh one.
Pool* g_pool = nullptr;
std::mutex g_pool_mutex;

void forget_pool_after_fork() { g_pool = nullptr; }

Pool& pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_pool == nullptr) {
    static const int registered = pthread_atfork(nullptr, nullptr, forget_pool_after_fork);
    (void)registered;
    g_pool = new Pool();
  }
  return *g_pool;
}

// torch's OpenMP runtime, when torch loaded libgomp (its CPU wheels bundle it): GOMP_parallel is the entry point "#pragma omp parallel"
// compiles to. Running on torch's own team means no extra threads at all, and
// its workers, which spin for a while after every torch op, pick the work up
// at once instead of competing with ours for the same cores.
using GompParallel = void (*)(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags);

std::string directory_of(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash == nullptr ? std::string() : std::string(path, slash);
}

// The libgomp loaded from the directory that holds libtorch_cpu: other
// packages (scikit-learn, SciPy) may bundle their own copy, and using one of
// those would be exactly the second runtime this is meant to avoid.
GompParallel find_torch_gomp() {
#ifndef __linux__
  return nullptr;  // dl_iterate_phdr is a Linux (ELF) facility
#else
  std::vector<std::string> loaded;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) -> int {
        if (info->dlpi_name != nullptr && info->dlpi_name[0] != '\0') {
          static_cast<std::vector<std::string>*>(out)->emplace_back(info->dlpi_name);
        }
        return 0;
      },
      &loaded);
  std::string torch_dir;
  for (const auto& path : loaded) {
    if (path.find("libtorch_cpu") != std::string::npos) torch_dir = directory_of(path.c_str());
  }
  if (torch_dir.empty()) return nullptr;
  for (const auto& path : loaded) {
    if (path.find("libgomp") == std::string::npos || directory_of(path.c_str()) != torch_dir) continue;
    void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD);  // only if already loaded
    if (handle == nullptr) continue;
    void* symbol = dlsym(handle, "GOMP_parallel");
    dlclose(handle);  // drops the reference RTLD_NOLOAD took; torch keeps it loaded
    if (symbol != nullptr) return reinterpret_cast<GompParallel>(symbol);
  }
  return nullptr;
#endif
}

std::atomic<ThreadBackend> g_backend{ThreadBackend::kAuto};

GompParallel gomp_parallel() {
  static const GompParallel gomp = find_torch_gomp();
  return gomp;
}

void run_on_gomp(GompParallel gomp, int64_t ntasks, int nthreads, const std::function<void(int64_t)>& fn) {
  Job job;
  job.fn = &fn;
  job.ntasks = ntasks;
  const unsigned team = static_cast<unsigned>(std::min<int64_t>(std::max(nthreads, 1), ntasks));
  gomp([](void* data) { static_cast<Job*>(data)->drain(); }, &job, team, 0);
}

}  // namespace

bool set_thread_backend(ThreadBackend backend) {
  if (backend == ThreadBackend::kOpenMP && gomp_parallel() == nullptr) return false;
  g_backend.store(backend);
  return true;
}

ThreadBackend thread_backend() {
  const ThreadBackend chosen = g_backend.load();
  if (chosen != ThreadBackend::kAuto) return chosen;
  return gomp_parallel() != nullptr ? ThreadBackend::kOpenMP : ThreadBackend::kPool;
}

void parallel_for(int64_t ntasks, int nthreads, const std::function<void(int64_t)>& fn) {
  if (ntasks <= 0) return;
  nthreads = std::min(nthreads, kMaxThreads);
  if (nthreads <= 1 || ntasks == 1) {
    for (int64_t t = 0; t < ntasks; ++t) fn(t);
    return;
  }
  if (thread_backend() == ThreadBackend::kOpenMP) return run_on_gomp(gomp_parallel(), ntasks, nthreads, fn);
  pool().run(ntasks, nthreads, fn);
}

int threads_for(int64_t M, int64_t N, int64_t K, int nthreads) {
  constexpr int64_t kMinParallelMacs = int64_t{1} << 18;
  if (N <= 0 || M * std::max<int64_t>(K, 1) < kMinParallelMacs / N) return 1;  // M * N * K, without overflow
  return std::clamp(nthreads, 1, kMaxThreads);
}

void parallel_for_tiles(int64_t M, int64_t N, int64_t m_block, int64_t n_block, int nthreads,
                        const std::function<void(int64_t, int64_t, int64_t, int64_t)>& fn) {
  const int64_t m_tiles = (M + m_block - 1) / m_block;
  const int64_t n_tiles = (N + n_block - 1) / n_block;
  parallel_for(m_tiles * n_tiles, nthreads, [&](int64_t task) {
    const int64_t m_begin = task / n_tiles * m_block;
    const int64_t n_begin = task % n_tiles * n_block;
    fn(m_begin, std::min(M, m_begin + m_block), n_begin, std::min(N, n_begin + n_block));
  });
}

}  // namespace slimops
