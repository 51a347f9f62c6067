// The only pybind11 file. Entry points take raw pointers (as integers), sizes
// and strides; the Python layer has already validated shapes, dtypes and
// devices, and every kernel re-checks sizes and returns a Status.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "slimops/cpu_isa.h"
#include "slimops/csr_linear.h"
#include "slimops/sparse_linear.h"
#include "slimops/dwsep_conv2d.h"
#include "slimops/int8_linear.h"
#include "slimops/status.h"
#include "slimops/thread_pool.h"
#include "slimops/w4a16_linear.h"
#include "slimops/w4a8_linear.h"
#include "slimops/w8a16_linear.h"
#ifdef SLIMOPS_WITH_CUDA
#include "slimops/cuda_kernels.h"
#endif

namespace py = pybind11;

namespace slimops {
namespace {

template <typename T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// A corrupted index array: raised as slimops._C.CorruptIndexError, both a
// ValueError (a bad argument) and an IndexError (an index out of range).
struct CorruptIndex : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

void raise_if_failed(Status s, const char* op) {
  if (s == Status::kBadRowPtr || s == Status::kBadColumnIndex || s == Status::kBadPosition) {
    throw CorruptIndex(std::string("slimops.") + op + ": " + status_message(s));
  }
  if (s != Status::kOk) throw std::invalid_argument(std::string("slimops.") + op + ": " + status_message(s));
}

void set_cpu_isa(const std::string& name) {
  CpuIsa isa;
  if (!parse_cpu_isa(name, &isa)) {
    throw std::invalid_argument("unknown CPU ISA '" + name + "'; expected scalar, avx2 or avx512_vnni");
  }
  if (!set_active_cpu_isa(isa)) throw std::invalid_argument("this CPU does not support the " + name + " path");
}

void set_thread_backend_by_name(const std::string& name) {
  ThreadBackend backend;
  if (name == "auto") {
    backend = ThreadBackend::kAuto;
  } else if (name == "openmp") {
    backend = ThreadBackend::kOpenMP;
  } else if (name == "pool") {
    backend = ThreadBackend::kPool;
  } else {
    throw std::invalid_argument("unknown thread backend '" + name + "'; expected auto, openmp or pool");
  }
  if (!slimops::set_thread_backend(backend)) {
    throw std::invalid_argument("no OpenMP runtime (libgomp) is loaded in this process");
  }
}

bool cpu_supports(const std::string& name) {
  CpuIsa isa;
  return parse_cpu_isa(name, &isa) && static_cast<int>(isa) <= static_cast<int>(detect_cpu_isa());
}

}  // namespace
}  // namespace slimops

PYBIND11_MODULE(_C, m) {
  using namespace slimops;
  m.doc() = "slimops native kernels (torch-free; called from slimops.backends)";

  m.def("cpu_isa", [] { return std::string(cpu_isa_name(active_cpu_isa())); },
        "The CPU code path the kernels use now.");
  m.def("detected_cpu_isa", [] { return std::string(cpu_isa_name(detect_cpu_isa())); },
        "The best CPU code path this machine supports.");
  m.def("cpu_supports", &cpu_supports, py::arg("isa"));
  m.def("set_cpu_isa", &set_cpu_isa, py::arg("isa"), "Force a CPU code path: scalar, avx2 or avx512_vnni.");

  m.def("thread_backend", [] { return std::string(thread_backend() == ThreadBackend::kOpenMP ? "openmp" : "pool"); },
        "Where the CPU kernels run their threads: torch's OpenMP team or slimops' own pool.");
  m.def("set_thread_backend", &set_thread_backend_by_name, py::arg("backend"), "auto, openmp or pool.");

  m.def(
      "quantize_per_token_cpu",
      [](uintptr_t x, int64_t rows, int64_t cols, int64_t x_row_stride, uintptr_t q, uintptr_t scale, int nthreads) {
        raise_if_failed(quantize_per_token_cpu(ptr<const float>(x), rows, cols, x_row_stride, ptr<int8_t>(q),
                                               ptr<float>(scale), nthreads),
                        "quantize_per_token");
      },
      py::arg("x"), py::arg("rows"), py::arg("cols"), py::arg("x_row_stride"), py::arg("q"), py::arg("scale"),
      py::arg("nthreads"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "int8_linear_cpu",
      [](uintptr_t x, int64_t M, int64_t K, int64_t x_row_stride, float static_x_scale, uintptr_t w, int64_t N,
         uintptr_t w_scale, uintptr_t bias, uintptr_t y, int nthreads) {
        raise_if_failed(int8_linear_cpu(ptr<const float>(x), M, K, x_row_stride, static_x_scale, ptr<const int8_t>(w),
                                        N, ptr<const float>(w_scale), ptr<const float>(bias), ptr<float>(y), nthreads),
                        "int8_linear");
      },
      py::arg("x"), py::arg("M"), py::arg("K"), py::arg("x_row_stride"), py::arg("static_x_scale"), py::arg("w"),
      py::arg("N"), py::arg("w_scale"), py::arg("bias"), py::arg("y"), py::arg("nthreads"),
      py::call_guard<py::gil_scoped_release>());

  m.attr("int8_linear_max_k") = kInt8LinearMaxK;

  m.def(
      "w4a8_linear_cpu",
      [](uintptr_t x, int64_t M, int64_t K, int64_t x_row_stride, uintptr_t w, int64_t N, uintptr_t w_scale,
         uintptr_t w_zero, int64_t group_size, uintptr_t bias, uintptr_t y, int nthreads) {
        raise_if_failed(w4a8_linear_cpu(ptr<const float>(x), M, K, x_row_stride, ptr<const uint8_t>(w), N,
                                        ptr<const float>(w_scale), ptr<const int32_t>(w_zero), group_size,
                                        ptr<const float>(bias), ptr<float>(y), nthreads),
                        "w4a8_linear");
      },
      py::arg("x"), py::arg("M"), py::arg("K"), py::arg("x_row_stride"), py::arg("w"), py::arg("N"),
      py::arg("w_scale"), py::arg("w_zero"), py::arg("group_size"), py::arg("bias"), py::arg("y"),
      py::arg("nthreads"), py::call_guard<py::gil_scoped_release>());

  m.attr("w4a8_linear_max_k") = kW4A8LinearMaxK;

  m.def(
      "w4a16_linear_cpu",
      [](uintptr_t x, int64_t M, int64_t K, int64_t x_row_stride, uintptr_t w, int64_t N, uintptr_t w_scale,
         uintptr_t w_zero, int64_t group_size, uintptr_t bias, uintptr_t y, int nthreads) {
        raise_if_failed(w4a16_linear_cpu(ptr<const float>(x), M, K, x_row_stride, ptr<const uint8_t>(w), N,
                                         ptr<const float>(w_scale), ptr<const int32_t>(w_zero), group_size,
                                         ptr<const float>(bias), ptr<float>(y), nthreads),
                        "w4a16_linear");
      },
      py::arg("x"), py::arg("M"), py::arg("K"), py::arg("x_row_stride"), py::arg("w"), py::arg("N"),
      py::arg("w_scale"), py::arg("w_zero"), py::arg("group_size"), py::arg("bias"), py::arg("y"),
      py::arg("nthreads"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "w4a16_dequantize_bf16_cpu",
      [](uintptr_t w, int64_t N, int64_t K, uintptr_t w_scale, uintptr_t w_zero, int64_t group_size, uintptr_t out,
         int nthreads) {
        raise_if_failed(w4a16_dequantize_bf16_cpu(ptr<const uint8_t>(w), N, K, ptr<const float>(w_scale),
                                                  ptr<const int32_t>(w_zero), group_size, ptr<uint16_t>(out), nthreads),
                        "w4a16_linear");
      },
      py::arg("w"), py::arg("N"), py::arg("K"), py::arg("w_scale"), py::arg("w_zero"), py::arg("group_size"),
      py::arg("out"), py::arg("nthreads"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "w8a16_linear_cpu",
      [](uintptr_t x, int64_t M, int64_t K, int64_t x_row_stride, uintptr_t w, int64_t N, uintptr_t w_scale,
         uintptr_t bias, uintptr_t y, int nthreads) {
        raise_if_failed(w8a16_linear_cpu(ptr<const float>(x), M, K, x_row_stride, ptr<const int8_t>(w), N,
                                         ptr<const float>(w_scale), ptr<const float>(bias), ptr<float>(y), nthreads),
                        "w8a16_linear");
      },
      py::arg("x"), py::arg("M"), py::arg("K"), py::arg("x_row_stride"), py::arg("w"), py::arg("N"),
      py::arg("w_scale"), py::arg("bias"), py::arg("y"), py::arg("nthreads"), py::call_guard<py::gil_scoped_release>());

  m.attr("w8a16_linear_lanes") = kW8A16Lanes;

  py::register_exception<CorruptIndex>(m, "CorruptIndexError",
                                       py::make_tuple(py::handle(PyExc_ValueError), py::handle(PyExc_IndexError)));
  m.def(
      "csr_linear_cpu",
      [](uintptr_t x, int64_t M, int64_t K, int64_t x_row_stride, uintptr_t row_ptr, int row_ptr_bytes,
         uintptr_t col_idx, int col_idx_bytes, int64_t nnz, uintptr_t values, int value_type, uintptr_t scale,
         int64_t N, uintptr_t bias, uintptr_t y, int nthreads) {
        raise_if_failed(csr_linear_cpu(ptr<const float>(x), M, K, x_row_stride, ptr<const void>(row_ptr),
                                       row_ptr_bytes, ptr<const void>(col_idx), col_idx_bytes, nnz,
                                       ptr<const void>(values), value_type, ptr<const float>(scale), N,
                                       ptr<const float>(bias), ptr<float>(y), nthreads),
                        "csr_linear");
      },
      py::arg("x"), py::arg("M"), py::arg("K"), py::arg("x_row_stride"), py::arg("row_ptr"), py::arg("row_ptr_bytes"),
      py::arg("col_idx"), py::arg("col_idx_bytes"), py::arg("nnz"), py::arg("values"), py::arg("value_type"),
      py::arg("scale"), py::arg("N"), py::arg("bias"), py::arg("y"), py::arg("nthreads"),
      py::call_guard<py::gil_scoped_release>(),
      "CSR linear; value_type 0 float32, 1 int8 (with a scale), 2 float16, 3 bfloat16; index widths in bytes "
      "(row_ptr 4/8, col_idx 2/4).");
  m.attr("csr_linear_lanes") = kCsrLanes;
  m.def(
      "bsr_linear_cpu",
      [](uintptr_t x, int64_t M, int64_t K, int64_t x_row_stride, uintptr_t block_row_ptr, int row_ptr_bytes,
         uintptr_t block_col_idx, int col_idx_bytes, int64_t blocks, uintptr_t values, int value_type,
         uintptr_t scale, int64_t N, int64_t bn, int64_t bk, uintptr_t bias, uintptr_t y, int nthreads) {
        raise_if_failed(bsr_linear_cpu(ptr<const float>(x), M, K, x_row_stride, ptr<const void>(block_row_ptr),
                                       row_ptr_bytes, ptr<const void>(block_col_idx), col_idx_bytes, blocks,
                                       ptr<const void>(values), value_type, ptr<const float>(scale), N, bn, bk,
                                       ptr<const float>(bias), ptr<float>(y), nthreads),
                        "bsr_linear");
      },
      py::arg("x"), py::arg("M"), py::arg("K"), py::arg("x_row_stride"), py::arg("block_row_ptr"),
      py::arg("row_ptr_bytes"), py::arg("block_col_idx"), py::arg("col_idx_bytes"), py::arg("blocks"),
      py::arg("values"), py::arg("value_type"), py::arg("scale"), py::arg("N"), py::arg("bn"), py::arg("bk"),
      py::arg("bias"), py::arg("y"), py::arg("nthreads"), py::call_guard<py::gil_scoped_release>(),
      "BSR linear with values [blocks, bn, bk]; value_type as csr_linear_cpu; index widths in bytes "
      "(row_ptr 4/8, col_idx 2/4).");
  m.def(
      "nm_linear_cpu",
      [](uintptr_t x, int64_t M, int64_t K, int64_t x_row_stride, uintptr_t values, int value_type, uintptr_t scale,
         uintptr_t indices, int64_t N, int n, int m_, uintptr_t bias, uintptr_t y, int nthreads) {
        raise_if_failed(nm_linear_cpu(ptr<const float>(x), M, K, x_row_stride, ptr<const void>(values), value_type,
                                      ptr<const float>(scale), ptr<const uint8_t>(indices), N, n, m_,
                                      ptr<const float>(bias), ptr<float>(y), nthreads),
                        "nm_linear");
      },
      py::arg("x"), py::arg("M"), py::arg("K"), py::arg("x_row_stride"), py::arg("values"), py::arg("value_type"),
      py::arg("scale"), py::arg("indices"), py::arg("N"), py::arg("n"), py::arg("m"), py::arg("bias"), py::arg("y"),
      py::arg("nthreads"), py::call_guard<py::gil_scoped_release>(),
      "N:M linear with values [N, K/m*n] (value_type as csr_linear_cpu) and packed position fields.");

  m.def("dwsep_packed_floats", &dwsep_packed_floats, py::arg("C"), py::arg("O"), py::arg("taps"),
        "Length in floats of dwsep_conv2d's packed weights, or -1 when a size is out of range.");
  m.def(
      "dwsep_pack_weights_cpu",
      [](uintptr_t dw_w, uintptr_t dw_b, uintptr_t pw_w, uintptr_t pw_b, int64_t C, int64_t O, int64_t taps,
         uintptr_t packed, int nthreads) {
        raise_if_failed(dwsep_pack_weights(ptr<const float>(dw_w), ptr<const float>(dw_b), ptr<const float>(pw_w),
                                           ptr<const float>(pw_b), C, O, taps, ptr<float>(packed), nthreads),
                        "dwsep_conv2d");
      },
      py::arg("dw_w"), py::arg("dw_b"), py::arg("pw_w"), py::arg("pw_b"), py::arg("C"), py::arg("O"),
      py::arg("taps"), py::arg("packed"), py::arg("nthreads"), py::call_guard<py::gil_scoped_release>(),
      "dwsep_conv2d's weights in the kernel's layout (dwsep_packed_floats(C, O, taps) floats at packed).");
  m.def(
      "dwsep_conv2d_cpu",
      [](uintptr_t x, uintptr_t dw_w, uintptr_t dw_b, uintptr_t pw_w, uintptr_t pw_b, uintptr_t packed,
         int64_t packed_floats, uintptr_t y, int64_t B, int64_t H, int64_t W, int64_t C, int64_t O, int64_t Ho,
         int64_t Wo, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_top,
         int64_t pad_left, int64_t dilation_h, int64_t dilation_w, int act1, int act2, bool residual,
         int nthreads) {
        if (act1 < 0 || act1 > 4 || act2 < 0 || act2 > 4) throw std::invalid_argument("slimops.dwsep_conv2d: unknown activation code");
        const DwsepShape s{B, H, W, C, O, Ho, Wo, KH, KW, stride_h, stride_w, pad_top, pad_left, dilation_h,
                           dilation_w, static_cast<Activation>(act1), static_cast<Activation>(act2), residual};
        const Status st =
            packed != 0 ? dwsep_conv2d_cpu_packed(ptr<const float>(x), ptr<const float>(packed), packed_floats, s,
                                                  ptr<float>(y), nthreads)
                        : dwsep_conv2d_cpu(ptr<const float>(x), ptr<const float>(dw_w), ptr<const float>(dw_b),
                                           ptr<const float>(pw_w), ptr<const float>(pw_b), s, ptr<float>(y), nthreads);
        raise_if_failed(st, "dwsep_conv2d");
      },
      py::arg("x"), py::arg("dw_w"), py::arg("dw_b"), py::arg("pw_w"), py::arg("pw_b"), py::arg("packed"),
      py::arg("packed_floats"), py::arg("y"), py::arg("B"), py::arg("H"), py::arg("W"), py::arg("C"),
      py::arg("O"), py::arg("Ho"), py::arg("Wo"), py::arg("KH"), py::arg("KW"), py::arg("stride_h"),
      py::arg("stride_w"), py::arg("pad_top"), py::arg("pad_left"), py::arg("dilation_h"), py::arg("dilation_w"),
      py::arg("act1"), py::arg("act2"), py::arg("residual"), py::arg("nthreads"),
      py::call_guard<py::gil_scoped_release>(),
      "dwsep_conv2d on NHWC float32 x, with packed weights (dwsep_pack_weights_cpu; packed_floats long) or, when "
      "packed is 0, the weights themselves.");

#ifdef SLIMOPS_WITH_CUDA
  m.attr("has_cuda") = true;
  m.def(
      "quantize_per_token_cuda",
      [](uintptr_t x, int x_dtype, int64_t rows, int64_t cols, int64_t x_row_stride, uintptr_t q, uintptr_t scale,
         uintptr_t stream) {
        const int err = slimops_quantize_per_token_cuda(ptr<const void>(x), x_dtype, rows, cols, x_row_stride,
                                                        ptr<int8_t>(q), ptr<float>(scale), ptr<void>(stream));
        if (err != 0) throw std::runtime_error("slimops.quantize_per_token (CUDA) failed with code " + std::to_string(err));
      },
      py::arg("x"), py::arg("x_dtype"), py::arg("rows"), py::arg("cols"), py::arg("x_row_stride"), py::arg("q"),
      py::arg("scale"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
#else
  m.attr("has_cuda") = false;
#endif
}
