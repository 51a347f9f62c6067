// Run-time choice of the CPU code path. Each kernel family ships one
// implementation per ISA level, compiled with per-file target flags, and the
// dispatcher picks the best one the running CPU and OS support.
#pragma once

#include <string>

namespace slimops {

enum class CpuIsa { kScalar = 0, kAvx2 = 1, kAvx512Vnni = 2 };

// Best ISA this machine supports (AVX2 needs FMA too; AVX-512 VNNI needs F, BW, VL and BMI2).
CpuIsa detect_cpu_isa();
// The ISA kernels use now: SLIMOPS_CPU_ISA at load time, else detect_cpu_isa().
CpuIsa active_cpu_isa();
// Forces a path; returns false (and changes nothing) if the CPU lacks it.
bool set_active_cpu_isa(CpuIsa isa);

const char* cpu_isa_name(CpuIsa isa);
// Parses "scalar", "avx2" or "avx512_vnni"; returns false on anything else.
bool parse_cpu_isa(const std::string& name, CpuIsa* out);

}  // namespace slimops
