#include "slimops/cpu_isa.h"

#include <atomic>
#include <cstdlib>

namespace slimops {
namespace {

bool cpu_has(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar:
      return true;
#if defined(__x86_64__) || defined(__i386__)
    // GCC's cpu model also checks XCR0, so these are false when the OS does
    // not save the wider registers.
    case CpuIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuIsa::kAvx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("bmi2");
#endif
    default:
      return false;
  }
}

CpuIsa initial_isa() {
  const char* forced = std::getenv("SLIMOPS_CPU_ISA");
  CpuIsa isa;
  // An unknown or unsupported value falls back to detection here; the Python
  // layer reads the same variable and raises a clear error for it.
  if (forced != nullptr && parse_cpu_isa(forced, &isa) && cpu_has(isa)) return isa;
  return detect_cpu_isa();
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

CpuIsa detect_cpu_isa() {
  if (cpu_has(CpuIsa::kAvx512Vnni)) return CpuIsa::kAvx512Vnni;
  if (cpu_has(CpuIsa::kAvx2)) return CpuIsa::kAvx2;
  return CpuIsa::kScalar;
}

CpuIsa active_cpu_isa() { return static_cast<CpuIsa>(active_slot().load(std::memory_order_relaxed)); }

bool set_active_cpu_isa(CpuIsa isa) {
  if (!cpu_has(isa)) return false;
  active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar:
      return "scalar";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512Vnni:
      return "avx512_vnni";
  }
  return "unknown";
}

bool parse_cpu_isa(const std::string& name, CpuIsa* out) {
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512Vnni}) {
    if (name == cpu_isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

}  // namespace slimops
