// The Python entry points of slimpack's sparse kernels (pybind11, torch extension):
//   linear(x fp32 [N, in], mask, offsets, index, values, scales, zeros, layout, kind, in, group_size, isa,
//          prefill: 0 auto | 1 spmm | 2 gemm) → y fp32 [N, out]
//     N ≤ 8 (decode): a GEMV that reads the packed bytes once for all N rows; chunks of output rows taken in
//     turn by torch's threads. With a column index (high sparsity, see column_index) it reads the column of each
//     nonzero from the index instead of expanding mask bytes.
//     N > 8 (prefill), a density of at most kSpmmDensity (or no columns: the SpMM writes the zeros): the SpMM, which multiplies the nonzeros only (x transposed
//     into panels of 64 batch rows, each weight row's nonzeros listed once, K-tiles that keep a panel's slice in
//     L1); denser: a GEMM of 16 decompressed weight rows at a time, packed for slimpack's 6 × 16 micro-kernel
//     (x packed once into strips of 6 batch rows); on the portable path, tiles of decompressed rows multiplied by
//     torch's BLAS. All in chunks of output rows taken in turn by the threads.
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
#include <memory>
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
  NonzerosFn nonzeros;
  PanelFn panel;
  Pack16Fn pack16;  // null (portable): the dense prefill multiplies decompressed tiles with torch's BLAS
  Gemm16Fn gemm16;
};

Path path_of(const std::string& isa) {
  static const std::string best = isas().front();  // the CPU's features do not change
  const std::string& use = isa == "auto" ? best : isa;
  TORCH_CHECK(use == "portable" || use == "avx2" || use == "avx512", "unknown isa '", isa, "' (auto, avx512, avx2, portable)");
  TORCH_CHECK(cpu_has(use), "this CPU cannot run the ", use, " path (it runs: ", c10::Join(", ", isas()), ")");
  if (use == "avx512") return {gemv_avx512, decompress_avx512, gemv_index_avx2, nonzeros_avx2, panel_avx2, pack16_avx2, gemm16_avx2};
  if (use == "avx2") return {gemv_avx2, decompress_avx2, gemv_index_avx2, nonzeros_avx2, panel_avx2, pack16_avx2, gemm16_avx2};
  return {gemv_portable, decompress_portable, gemv_index_portable, nonzeros_portable, panel_portable, nullptr, nullptr};
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
// With `worker` per taking thread: `worker()` makes its state (its scratch buffers) once, and fn(state, r0, r1)
// runs each chunk that thread takes.
template <class W, class F>
void parallel_chunks_with(int64_t total, int64_t chunk, const W& worker, const F& fn) {
  const int64_t chunks = (total + chunk - 1) / chunk;
  if (chunks <= 1 || at::get_num_threads() == 1 || at::in_parallel_region()) {
    auto state = worker();
    for (int64_t c = 0; c < chunks; ++c) fn(state, c * chunk, std::min(total, (c + 1) * chunk));
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(chunks, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    auto state = worker();
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) fn(state, c * chunk, std::min(total, (c + 1) * chunk));
  });
}

template <class F>
void parallel_chunks(int64_t total, int64_t chunk, const F& fn) {
  parallel_chunks_with(total, chunk, [] { return 0; }, [&](int, int64_t r0, int64_t r1) { fn(r0, r1); });
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

// The SpMM prefill: the density (nonzeros / weights) up to which a prefill multiplies the nonzeros only instead of
// the GEMM of decompressed rows. Measured (scripts/kernel_bench.py --values bf16, N = 128, 2 threads, AVX2 EPYC),
// SpMM / GEMM ms for 4096 × 11008 at 10 / 30 / 50 / 70 / 90 % sparsity: 120 / 71, 95 / 72, 70 / 73, 46 / 71,
// 28 / 69 (docs/results/kernels.md). Output rows per chunk; columns per K-tile (a 64-row panel's slice of x: 32 KiB, so that it stays near
// L1 while every row of the chunk reads it: from L2 the FMAs run at about half the rate).
constexpr double kSpmmDensity = 0.55;
constexpr int64_t kSpmmRows = 64, kSpmmTile = 128, kPanelRows = 64;

double density(const Packed& p) {
  if (p.layout == DENSE || p.out == 0 || p.in == 0) return 1.0;
  return p.layout == TWO_FOUR ? 0.5 : double(p.offsets[p.out]) / double(p.out * p.in);
}

// y = x Wᵀ from W's nonzeros (stored zeros are skipped: where x holds inf or NaN, 0·x is 0 here, NaN in the GEMM):
// x transposed into panels of ≤ 64 batch rows (kernels.h); per chunk of kSpmmRows
// output rows, each row decompressed and its nonzeros listed (split at K-tiles of kSpmmTile columns), then per
// panel and K-tile, every row's nonzeros in that tile multiplied with the panel's slice (32 KiB, reused by all rows).
at::Tensor spmm(const Path& path, const Packed& p, const at::Tensor& x) {
  const int64_t N = x.size(0), width = p.nb * 8, tiles = (width + kSpmmTile - 1) / kSpmmTile;
  struct Panel {
    int64_t n0, rows;  // batch rows n0 .. n0 + rows
    int V;             // 8·V ≥ rows lanes
  };
  std::vector<Panel> panels;
  for (int64_t n0 = 0; n0 < N; n0 += kPanelRows) {
    const int64_t rows = std::min(kPanelRows, N - n0);
    panels.push_back({n0, rows, int((rows + 7) / 8)});
  }
  const Panel& last = panels.back();
  at::Tensor xt = at::zeros({(last.n0 + 8 * last.V) * width}, x.options());
  for (const Panel& q : panels)
    xt.narrow(0, q.n0 * width, width * 8 * q.V).view({width, 8 * q.V}).narrow(0, 0, p.in).narrow(1, 0, q.rows).copy_(
        x.narrow(0, q.n0, q.rows).t());
  at::Tensor y = at::empty({N, p.out}, x.options());
  const float* xd = xt.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  struct Scratch {
    std::unique_ptr<float[]> row, vals, acc;
    std::unique_ptr<int32_t[]> cols;
    std::vector<int64_t> seg;
  };
  auto worker = [&] {
    const int64_t room = kSpmmRows * width + 8;
    return Scratch{std::unique_ptr<float[]>(new float[width]), std::unique_ptr<float[]>(new float[room]),
                   std::unique_ptr<float[]>(new float[kSpmmRows * kPanelRows]), std::unique_ptr<int32_t[]>(new int32_t[room]),
                   std::vector<int64_t>(kSpmmRows * (tiles + 1))};
  };
  parallel_chunks_with(p.out, kSpmmRows, worker, [&](Scratch& s, int64_t r0, int64_t r1) {
    const int64_t rows = r1 - r0;
    int64_t k = 0;
    for (int64_t i = 0; i < rows; ++i) {
      path.decompress(p, s.row.get(), width, r0 + i, r0 + i + 1);
      for (int64_t t = 0; t < tiles; ++t) {
        s.seg[i * (tiles + 1) + t] = k;
        k += path.nonzeros(s.row.get(), t * kSpmmTile, std::min(kSpmmTile, width - t * kSpmmTile), s.cols.get() + k, s.vals.get() + k);
      }
      s.seg[i * (tiles + 1) + tiles] = k;
    }
    for (const Panel& q : panels) {
      const int64_t w = 8 * q.V;
      std::fill(s.acc.get(), s.acc.get() + rows * w, 0.0f);
      for (int64_t t = 0; t < tiles; ++t)
        path.panel(s.cols.get(), s.vals.get(), s.seg.data() + t, tiles + 1, rows, xd + q.n0 * width, q.V, s.acc.get());
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < q.rows; ++j) yd[(q.n0 + j) * p.out + r0 + i] = s.acc[i * w + j];
    }
  });
  return y;
}

// 64-byte aligned scratch (the micro-kernel's aligned loads).
struct Aligned {
  struct Free {
    void operator()(float* f) const { std::free(f); }
  };
  static std::unique_ptr<float[], Free> floats(int64_t n) {
    const size_t bytes = (size_t(std::max<int64_t>(n, 1)) * 4 + 63) / 64 * 64;
    auto* f = static_cast<float*>(std::aligned_alloc(64, bytes));
    TORCH_CHECK(f, "out of memory: ", bytes, " bytes of kernel scratch");
    return std::unique_ptr<float[], Free>(f);
  }
};

constexpr int64_t kGemmKc = 2048;  // columns per pass: 16 packed weight rows (128 KiB, L2) against one x strip (48 KiB)

// The dense prefill: y = x Wᵀ by 16 weight rows at a time, each decompressed, packed (kernels.h: pack16) and
// multiplied by the 6 × 16 micro-kernel against every x strip (x packed once, shared by the threads).
at::Tensor gemm(const Path& path, const Packed& p, const at::Tensor& x) {
  const int64_t N = x.size(0), width = p.nb * 8, strips = (N + kMR - 1) / kMR;
  at::Tensor xs = at::zeros({strips * kMR, width}, x.options());  // strip s: [width, kMR] at row s·kMR
  for (int64_t s = 0; s < strips; ++s) {
    const int64_t rows = std::min<int64_t>(kMR, N - s * kMR);
    xs.narrow(0, s * kMR, kMR).view({width, kMR}).narrow(0, 0, p.in).narrow(1, 0, rows).copy_(x.narrow(0, s * kMR, rows).t());
  }
  at::Tensor y = at::empty({N, p.out}, x.options());
  const float* xd = xs.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  struct Scratch {
    std::unique_ptr<float[], Aligned::Free> rows, b;
  };
  auto worker = [&] { return Scratch{Aligned::floats(16 * width), Aligned::floats(16 * width)}; };
  parallel_chunks_with(p.out, 16, worker, [&](Scratch& s, int64_t r0, int64_t r1) {
    const int rows = int(r1 - r0);
    path.decompress(p, s.rows.get(), width, r0, r1);
    path.pack16(s.rows.get(), width, rows, width, s.b.get());
    for (int64_t k0 = 0; k0 < width; k0 += kGemmKc)
      path.gemm16(xd, N, width, s.b.get(), k0, std::min(kGemmKc, width - k0), yd, p.out, r0, rows, k0 > 0);
  });
  return y;
}

// The dense prefill of the portable path (no micro-kernel of its own): y[:, r0:r1] = x · W[r0:r1]ᵀ per tile of
// 32–256 rows (1–4 MiB), decompressed into the taking thread's buffer and multiplied by torch's BLAS (at::mm).
at::Tensor gemm_tiles(const Path& path, const Packed& p, const at::Tensor& x) {
  const int64_t N = x.size(0), width = p.nb * 8;
  at::Tensor xp = x;
  if (width != p.in) {
    xp = at::zeros({N, width}, x.options());
    xp.narrow(1, 0, p.in).copy_(x);
  }
  at::Tensor y = at::empty({N, p.out}, x.options());
  const int64_t tile = std::clamp<int64_t>((int64_t(1) << 20) / width / 16 * 16, 32, 256);
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

at::Tensor linear(const at::Tensor& x, const at::Tensor& mask, const at::Tensor& offsets, const at::Tensor& index,
                  const at::Tensor& values, const at::Tensor& scales, const at::Tensor& zeros, int64_t layout, int64_t kind,
                  int64_t in, int64_t group_size, const std::string& isa, int64_t prefill) {
  const Path path = path_of(isa);
  Packed p = packed_of(mask, offsets, index, values, scales, zeros, layout, kind, in, group_size);
  TORCH_CHECK(prefill >= 0 && prefill <= 2, "prefill: 0 (auto), 1 (spmm) or 2 (gemm) expected");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.size(1) == in, "x: fp32 [N, ", in, "] expected, got ",
              x.scalar_type(), " ", x.sizes());
  const int64_t N = x.size(0), width = p.nb * 8;
  if (N > 8 && p.out > 0) {
    // The portable path's SpMM (plain C++) lost to torch's BLAS at every density measured (4096 × 11008 at N = 128:
    // 608 / 377 / 180 ms against 193 / 177 / 169 at 50 / 70 / 90 % sparsity), so there `auto` takes the tiles.
    const bool sparse = prefill == 1 || (prefill == 0 && path.gemm16 && density(p) <= kSpmmDensity) || p.in == 0;
    return sparse ? spmm(path, p, x.contiguous()) : path.gemm16 ? gemm(path, p, x) : gemm_tiles(path, p, x);
  }
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
  m.attr("spmm_density") = slimpack::kSpmmDensity;  // a prefill takes the SpMM up to this density (tests reach both)
}
