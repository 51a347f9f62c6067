// A small persistent thread pool for the CPU kernels.
//
// Why not OpenMP: torch ships its own libgomp; linking a second OpenMP runtime
// gives two sets of spinning threads fighting for the same cores. The caller
// passes torch.get_num_threads(), so slimops never runs more threads than torch
// would, and idle workers sleep after a short spin instead of burning a core.
#pragma once

#include <cstdint>
#include <functional>

namespace slimops {

// Runs fn(task) for every task in [0, ntasks) on at most nthreads threads, the
// calling thread included, and returns when all tasks are done. Tasks are
// handed out dynamically, so uneven tasks balance. Calls are serialized.
void parallel_for(int64_t ntasks, int nthreads, const std::function<void(int64_t)>& fn);

}  // namespace slimops
