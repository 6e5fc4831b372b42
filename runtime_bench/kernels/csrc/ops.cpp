// The Python entry points of slimpack's sparse kernels (pybind11, torch extension):
//   linear(x fp32 [N, in], mask, offsets, index, values, scales, zeros, layout, kind, in, group_size, isa)
//       → y fp32 [N, out]
//     N ≤ 8 (decode): a GEMV that reads the packed bytes once for all N rows; chunks of output rows taken in
//     turn by torch's threads. With a column index (high sparsity, see column_index) it reads the column of each
//     nonzero from the index instead of expanding mask bytes.
//     N > 8 (prefill): a tile of 32–256 output rows (1–4 MiB) decompressed to fp32 into the taking thread's
//     buffer, then multiplied by a dense GEMM (at::mm_out into y[:, tile], single-threaded inside the region).
//   decompress(...) → fp32 [out, in];  validate(...) → "" or what is wrong;  isas() → the ISA paths this CPU runs;
//   column_index(mask, offsets, in) → int16 [nnz + 16]: the column of every nonzero (uint16 bits).
// The tensors (see kernels.h): mask uint8 [out, nb] (bitmask mask, 2:4 positions; empty for dense), offsets
// int64 [out + 1] (bitmask; else empty), values 1-D (+ padding), scales fp32 [out] (int8) or fp16 [out, G]
// (gptq), zeros uint8 [out, G] (gptq). The Python wrapper checks dtypes and shapes and calls validate() once per
// weight; the cheap checks here guard every call against memory errors.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "kernels.h"

namespace slimpack {
namespace {

constexpr int64_t kPadBytes = 32;

bool cpu_has(const std::string& isa) {
  __builtin_cpu_init();
  if (isa == "portable") return true;
  if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
                            __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
  if (isa == "avx512") return cpu_has("avx2") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                              __builtin_cpu_supports("avx512vl");
  return false;
}

std::vector<std::string> isas() {
  std::vector<std::string> out;
  for (const char* isa : {"avx512", "avx2", "portable"})
    if (cpu_has(isa)) out.emplace_back(isa);
  return out;
}

struct Path {
  GemvFn gemv;
  DecompressFn decompress;
  IndexGemvFn index_gemv;
};

Path path_of(const std::string& isa) {
  static const std::string best = isas().front();  // the CPU's features do not change
  const std::string& use = isa == "auto" ? best : isa;
  TORCH_CHECK(use == "portable" || use == "avx2" || use == "avx512", "unknown isa '", isa, "' (auto, avx512, avx2, portable)");
  TORCH_CHECK(cpu_has(use), "this CPU cannot run the ", use, " path (it runs: ", c10::Join(", ", isas()), ")");
  if (use == "avx512") return {gemv_avx512, decompress_avx512, gemv_index_avx2};
  if (use == "avx2") return {gemv_avx2, decompress_avx2, gemv_index_avx2};
  return {gemv_portable, decompress_portable, gemv_index_portable};
}

int64_t element_size(int kind) { return kind == F32 ? 4 : kind == BF16 || kind == F16 ? 2 : 1; }

// The packed weight over the tensors, after the O(1) checks that keep every access in bounds given validate().
Packed packed_of(const at::Tensor& mask, const at::Tensor& offsets, const at::Tensor& index, const at::Tensor& values,
                 const at::Tensor& scales, const at::Tensor& zeros, int64_t layout, int64_t kind, int64_t in, int64_t group_size) {
  TORCH_CHECK(layout >= BITMASK && layout <= DENSE && kind >= F32 && kind <= GPTQ, "bad layout or values kind");
  TORCH_CHECK(in >= 0 && !(layout == DENSE && kind == GPTQ), "bad in_features or dense gptq");
  static const at::ScalarType dtypes[] = {at::kFloat, at::kBFloat16, at::kHalf, at::kChar, at::kByte};
  TORCH_CHECK(values.dim() == 1 && values.is_contiguous() && values.scalar_type() == dtypes[kind], "values: 1-D contiguous ",
              dtypes[kind], " expected, got ", values.scalar_type(), " ", values.sizes());
  Packed p;
  p.layout = int(layout), p.kind = int(kind), p.in = in, p.nb = (in + 7) / 8;
  p.values = values.data_ptr();
  const int64_t pad = kPadBytes / element_size(int(kind));
  if (layout == DENSE) {
    TORCH_CHECK(in > 0 && values.numel() >= pad && (values.numel() - pad) % in == 0, "dense values: out·in + padding expected");
    p.out = (values.numel() - pad) / in;
  } else {
    TORCH_CHECK(mask.dim() == 2 && mask.is_contiguous() && mask.scalar_type() == at::kByte, "mask: 2-D contiguous uint8 expected");
    p.out = mask.size(0), p.mask = mask.data_ptr<uint8_t>();
    if (layout == TWO_FOUR) {
      TORCH_CHECK(in % 8 == 0 && mask.size(1) == in / 8, "2:4 positions: [out, in/8] with in % 8 == 0 expected");
      const int64_t need = kind == GPTQ ? (p.out * in / 2 + 1) / 2 + pad : p.out * in / 2 + pad;
      TORCH_CHECK(values.numel() >= need, "values too short for the 2:4 layout");
    } else {
      TORCH_CHECK(mask.size(1) == p.nb, "mask: [out, ceil(in/8)] expected");
      TORCH_CHECK(offsets.dim() == 1 && offsets.is_contiguous() && offsets.scalar_type() == at::kLong && offsets.numel() == p.out + 1,
                  "row_offsets: int64 [out + 1] expected");
      p.offsets = offsets.data_ptr<int64_t>();
      if (index.defined() && index.numel()) {
        TORCH_CHECK(kind != GPTQ && index.dim() == 1 && index.is_contiguous() && index.scalar_type() == at::kShort &&
                        index.numel() == p.offsets[p.out] + kIndexPad && in <= 65536,
                    "column index: int16 [nnz + ", kIndexPad, "] of a non-gptq weight with in <= 65536 expected");
        p.index = reinterpret_cast<const uint16_t*>(index.data_ptr<int16_t>());
      }
    }
  }
  if (kind == I8) {
    TORCH_CHECK(scales.dim() == 1 && scales.is_contiguous() && scales.scalar_type() == at::kFloat && scales.numel() == p.out,
                "int8 scales: fp32 [out] expected");
    p.scales = scales.data_ptr<float>();
  }
  if (kind == GPTQ) {
    TORCH_CHECK(group_size > 0, "gptq needs group_size > 0");
    p.group_size = group_size, p.groups = (in + group_size - 1) / group_size;
    TORCH_CHECK(scales.dim() == 2 && scales.is_contiguous() && scales.scalar_type() == at::kHalf && scales.size(0) == p.out &&
                    scales.size(1) == p.groups, "gptq scales: fp16 [out, groups] expected");
    TORCH_CHECK(zeros.dim() == 2 && zeros.is_contiguous() && zeros.scalar_type() == at::kByte && zeros.size(0) == p.out &&
                    zeros.size(1) == p.groups, "gptq zeros: uint8 [out, groups] expected");
    p.gscales = reinterpret_cast<const uint16_t*>(scales.data_ptr<at::Half>());
    p.zeros = zeros.data_ptr<uint8_t>();
  }
  return p;
}

// "" when the mask, offsets and values agree (what the kernels rely on), else what does not.
std::string validate(const at::Tensor& mask, const at::Tensor& offsets, const at::Tensor& values, const at::Tensor& scales,
                     const at::Tensor& zeros, int64_t layout, int64_t kind, int64_t in, int64_t group_size) {
  Packed p = packed_of(mask, offsets, at::Tensor(), values, scales, zeros, layout, kind, in, group_size);
  if (layout == DENSE) return "";
  std::atomic<int64_t> bad_row{-1};
  at::parallel_for(0, p.out, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* m = p.mask + r * p.nb;
      bool ok = true;
      if (layout == BITMASK) {
        int64_t count = 0;
        for (int64_t b = 0; b < p.nb; ++b) count += __builtin_popcount(m[b]);
        ok = p.offsets[r + 1] - p.offsets[r] == count && (in % 8 == 0 || (m[p.nb - 1] >> (in % 8)) == 0);
      } else {
        for (int64_t b = 0; b < p.nb && ok; ++b) ok = (m[b] & 3) < ((m[b] >> 2) & 3) && ((m[b] >> 4) & 3) < (m[b] >> 6);
      }
      if (!ok) {
        int64_t none = -1;
        bad_row.compare_exchange_strong(none, r);
      }
    }
  });
  if (bad_row >= 0)
    return layout == BITMASK ? "row_offsets do not count the mask's set bits (row " + std::to_string(bad_row.load()) + ")"
                             : "2:4 positions not ascending within a group (row " + std::to_string(bad_row.load()) + ")";
  if (layout == BITMASK) {
    if (p.offsets[0] != 0) return "row_offsets do not start at 0";
    const int64_t nnz = p.offsets[p.out];
    const int64_t need = (kind == GPTQ ? (nnz + 1) / 2 : nnz) + kPadBytes / element_size(int(kind));
    if (values.numel() < need)
      return "values hold " + std::to_string(values.numel()) + " elements, the mask needs " + std::to_string(need) + " with padding";
  }
  return "";
}

// fn(r0, r1) over [0, total) in chunks of `chunk`, taken in turn by torch's threads (an atomic counter: a thread
// that starts late or runs slower takes fewer); in order on this thread when one chunk or one thread.
template <class F>
void parallel_chunks(int64_t total, int64_t chunk, const F& fn) {
  const int64_t chunks = (total + chunk - 1) / chunk;
  if (chunks <= 1 || at::get_num_threads() == 1 || at::in_parallel_region()) {
    for (int64_t c = 0; c < chunks; ++c) fn(c * chunk, std::min(total, (c + 1) * chunk));
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(chunks, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) fn(c * chunk, std::min(total, (c + 1) * chunk));
  });
}

int64_t gemv_chunk(const Packed& p) {  // rows per chunk: ~128 K columns (one chunk: the whole of a small weight);
  const int64_t rows = std::max<int64_t>(1, (int64_t(1) << 17) / std::max<int64_t>(1, p.nb * 8));
  return p.kind == GPTQ ? std::max<int64_t>(rows, 64) : rows;  // gptq: ≥ 64, each chunk sums x per group once
}

// The column of every nonzero of a validated bitmask, row after row: int16 (read as uint16) [nnz + kIndexPad].
at::Tensor column_index(const at::Tensor& mask, const at::Tensor& offsets, int64_t in) {
  Packed p = packed_of(mask, offsets, at::Tensor(), at::zeros({0}, at::kFloat), at::Tensor(), at::Tensor(), BITMASK, F32, in, 0);
  TORCH_CHECK(in <= 65536, "a column index holds columns < 65536");
  at::Tensor index = at::zeros({p.offsets[p.out] + kIndexPad}, at::kShort);
  auto* out = reinterpret_cast<uint16_t*>(index.data_ptr<int16_t>());
  at::parallel_for(0, p.out, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t k = p.offsets[r];
      const uint8_t* m = p.mask + r * p.nb;
      for (int64_t b = 0; b < p.nb; ++b)
        for (unsigned bits = m[b]; bits; bits &= bits - 1) out[k++] = uint16_t(8 * b + __builtin_ctz(bits));
    }
  });
  return index;
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& offsets, const at::Tensor& index,
                  const at::Tensor& values, const at::Tensor& scales, const at::Tensor& zeros, int64_t layout, int64_t kind,
                  int64_t in, int64_t group_size, const std::string& isa) {
  const Path path = path_of(isa);
  Packed p = packed_of(mask, offsets, index, values, scales, zeros, layout, kind, in, group_size);
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.size(1) == in, "x: fp32 [N, ", in, "] expected, got ",
              x.scalar_type(), " ", x.sizes());
  const int64_t N = x.size(0), width = p.nb * 8;
  at::Tensor y = at::empty({N, p.out}, x.options());
  if (N == 0 || p.out == 0) return y;
  if (N <= 8 && p.index) {  // column-index GEMV: x as it is (one row) or transposed to [in, NB]
    const int NB = N == 1 ? 1 : N <= 4 ? 4 : 8;
    at::Tensor xp = x.contiguous();
    if (NB > 1) {
      xp = at::zeros({in, NB}, x.options());
      xp.narrow(1, 0, N).copy_(x.t());
    }
    const float* xd = xp.data_ptr<float>();
    float* yd = y.data_ptr<float>();
    parallel_chunks(p.out, gemv_chunk(p), [&](int64_t r0, int64_t r1) { path.index_gemv(p, xd, NB, int(N), yd, p.out, r0, r1); });
    return y;
  }
  if (N <= 8) {
    const int NB = N <= 1 ? 1 : N <= 2 ? 2 : N <= 4 ? 4 : 8;  // the kernels' batch blocks
    at::Tensor xp = x.contiguous();
    if (NB != N || width != in) {
      xp = at::zeros({NB, width}, x.options());
      xp.narrow(0, 0, N).narrow(1, 0, in).copy_(x);
    }
    const float* xd = xp.data_ptr<float>();
    float* yd = y.data_ptr<float>();
    parallel_chunks(p.out, gemv_chunk(p), [&](int64_t r0, int64_t r1) { path.gemv(p, xd, width, int(N), yd, p.out, r0, r1); });
    return y;
  }
  // Prefill: y[:, r0:r1] = x · W[r0:r1]ᵀ per tile of rows, the tile decompressed into a per-thread buffer.
  at::Tensor xp = x;
  if (width != in) {
    xp = at::zeros({N, width}, x.options());
    xp.narrow(1, 0, in).copy_(x);
  }
  const int64_t tile = std::clamp<int64_t>((int64_t(1) << 20) / width / 16 * 16, 32, 256);  // 1–4 MiB buffers: L2/L3
  const bool inference = c10::InferenceMode::is_enabled();  // thread-local: torch's workers do not inherit it
  parallel_chunks(p.out, tile, [&](int64_t r0, int64_t r1) {
    c10::InferenceMode guard(inference);  // y may be an inference tensor (the engines run in inference mode)
    at::Tensor buf = at::empty({r1 - r0, width}, x.options());
    path.decompress(p, buf.data_ptr<float>(), width, r0, r1);
    at::Tensor out = y.narrow(1, r0, r1 - r0);
    at::mm_out(out, xp, buf.t());
  });
  return y;
}

at::Tensor decompress(const at::Tensor& mask, const at::Tensor& offsets, const at::Tensor& index, const at::Tensor& values,
                      const at::Tensor& scales, const at::Tensor& zeros, int64_t layout, int64_t kind, int64_t in,
                      int64_t group_size, const std::string& isa) {
  const Path path = path_of(isa);
  Packed p = packed_of(mask, offsets, index, values, scales, zeros, layout, kind, in, group_size);
  const int64_t width = p.nb * 8;
  at::Tensor w = at::empty({p.out, width}, at::kFloat);
  float* wd = w.data_ptr<float>();
  parallel_chunks(p.out, gemv_chunk(p), [&](int64_t r0, int64_t r1) { path.decompress(p, wd + r0 * width, width, r0, r1); });
  return width == in ? w : w.narrow(1, 0, in).contiguous();
}

}  // namespace
}  // namespace slimpack

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "slimpack's CPU sparse kernels (runtime_bench/kernels)";
  m.def("isas", &slimpack::isas, "the ISA paths this CPU can run, best first");
  m.def("validate", &slimpack::validate);
  m.def("linear", &slimpack::linear);
  m.def("decompress", &slimpack::decompress);
  m.def("column_index", &slimpack::column_index);
}
