// The AVX2 + FMA path (the x86 baseline). The bitmask-expand GEMV: for each mask byte m (8 columns), load the
// next 8 stored values at the row's value pointer (unaligned; the padding makes the read safe), move value number
// rank(i) to lane i and zero the clear lanes with table lookups (fp32: two 4-float halves and one in-lane vpshufb;
// bf16 / int8: one vpshufb that also widens; fp16: vpshufb + vcvtph2ps), FMA with x[8b .. 8b+8) of every batch
// row, advance the pointer by popcount(m). 2:4 maps its position byte to a mask byte with 4 set bits. gptq codes
// are unpacked to bytes per row first and a clear lane reads the group's zero point (below); the column-index
// GEMV (high sparsity) is further down. Compiled for AVX2 in a generic build (#pragma GCC target below, no -march): only called after
// __builtin_cpu_supports says the CPU has it. Everything but the entry points has internal linkage, so no
// AVX2-compiled inline function can stand in for a generic one.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,popcnt")

namespace slimpack {
namespace {

inline uint64_t load64(const void* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Per value kind: T the stored element; expand(v, m): the 8 lanes of mask byte m as fp32 (clear lanes 0) from the
// values starting at v; dense(v): 8 consecutive values as fp32; both are the weights / kUnscale (int8: v·2²⁴,
// exact: a vpshufb can place the byte at the top of the lane, but cannot sign-extend it).
template <int K> struct Values;
template <> struct Values<F32> {  // two 4-float halves (the high one at v + low4), one in-lane vpshufb
  using T = float;
  static constexpr float kUnscale = 1.0f;
  static __m256 expand(const T* v, unsigned m) {
    __m256 src = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(v)), _mm_loadu_ps(v + kTables.low4[m]), 1);
    __m256i control = _mm256_load_si256(reinterpret_cast<const __m256i*>(kTables.f32[m]));
    return _mm256_castsi256_ps(_mm256_shuffle_epi8(_mm256_castps_si256(src), control));
  }
  static __m256 dense(const T* v) { return _mm256_loadu_ps(v); }
};
template <> struct Values<BF16> {
  using T = uint16_t;
  static constexpr float kUnscale = 1.0f;
  static __m256 expand(const T* v, unsigned m) {
    __m256i src = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v)));
    return _mm256_castsi256_ps(_mm256_shuffle_epi8(src, _mm256_load_si256(reinterpret_cast<const __m256i*>(kTables.bf16[m]))));
  }
  static __m256 dense(const T* v) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
};
template <> struct Values<F16> {
  using T = uint16_t;
  static constexpr float kUnscale = 1.0f;
  static __m256 expand(const T* v, unsigned m) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(v));
    return _mm256_cvtph_ps(_mm_shuffle_epi8(h, _mm_load_si128(reinterpret_cast<const __m128i*>(kTables.f16[m]))));
  }
  static __m256 dense(const T* v) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v))); }
};
template <> struct Values<I8> {
  using T = int8_t;
  static constexpr float kUnscale = 1.0f / 16777216.0f;  // lanes hold v·2²⁴
  static __m256 expand(const T* v, unsigned m) {
    __m256i src = _mm256_set1_epi64x(int64_t(load64(v)));
    return _mm256_cvtepi32_ps(_mm256_shuffle_epi8(src, _mm256_load_si256(reinterpret_cast<const __m256i*>(kTables.i8[m]))));
  }
  static __m256 dense(const T* v) {
    __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(v)));
    return _mm256_cvtepi32_ps(_mm256_slli_epi32(w, 24));
  }
};

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// NB batch rows (the caller pads x to NB rows, writes the first N); S independent accumulator sets per batch row,
// so that at least 4 FMA chains are in flight (FMA latency 4).
template <int NB>
struct Acc {
  static constexpr int S = NB >= 4 ? 1 : 4 / NB;
  __m256 a[S][NB];
  Acc() {
    for (int s = 0; s < S; ++s)
      for (int n = 0; n < NB; ++n) a[s][n] = _mm256_setzero_ps();
  }
  inline void fma(int s, __m256 w, const float* x, int64_t xs) {
    for (int n = 0; n < NB; ++n) a[s][n] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + n * xs), a[s][n]);
  }
  inline void store(int N, float* y, int64_t ys, float scale) {
    for (int n = 0; n < N; ++n) {
      __m256 t = a[0][n];
      for (int s = 1; s < S; ++s) t = _mm256_add_ps(t, a[s][n]);
      y[n * ys] = hsum(t) * scale;
    }
  }
};

template <int L>
inline unsigned mask_of(const uint8_t* mrow, int64_t b) {
  return L == TWO_FOUR ? kTables.two4[mrow[b]] : mrow[b];
}
template <int L>
inline int count_of(unsigned m) {
  return L == TWO_FOUR ? 4 : __builtin_popcount(m);
}

constexpr int kPrefetch = 1024;  // bytes ahead of the value pointer (the hardware prefetcher alone left ~10 % on DRAM)

// Bitmask / 2:4 GEMV rows [r0, r1) for fp32/bf16/fp16/int8 values.
template <int L, int K, int NB>
void gemv_sparse(const Packed& p, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  using V = Values<K>;
  constexpr int U = 4;  // mask bytes per unrolled step
  const auto* values = static_cast<const typename V::T*>(p.values);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* mrow = p.mask + r * p.nb;
    const typename V::T* v = values + p.row_start(r);
    Acc<NB> acc;
    int64_t b = 0;
    for (; b + U <= p.nb; b += U) {
      _mm_prefetch(reinterpret_cast<const char*>(v) + kPrefetch, _MM_HINT_T0);
      for (int u = 0; u < U; ++u) {
        unsigned m = mask_of<L>(mrow, b + u);
        __m256 w = V::expand(v, m);
        v += count_of<L>(m);
        acc.fma(u % Acc<NB>::S, w, x + 8 * (b + u), xs);
      }
    }
    for (; b < p.nb; ++b) {
      unsigned m = mask_of<L>(mrow, b);
      __m256 w = V::expand(v, m);
      v += count_of<L>(m);
      acc.fma(0, w, x + 8 * b, xs);
    }
    acc.store(N, y + r, ys, V::kUnscale * (K == I8 ? p.scales[r] : 1.0f));
  }
}

// Dense rows: 8 consecutive values per step; a last partial chunk goes through the expand (its clear lanes 0).
template <int K, int NB>
void gemv_dense(const Packed& p, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  using V = Values<K>;
  constexpr int U = 4;
  const int64_t full = p.in / 8;
  const unsigned tail = (1u << (p.in % 8)) - 1;
  const auto* values = static_cast<const typename V::T*>(p.values);
  for (int64_t r = r0; r < r1; ++r) {
    const typename V::T* v = values + r * p.in;
    Acc<NB> acc;
    int64_t b = 0;
    for (; b + U <= full; b += U)
      for (int u = 0; u < U; ++u) acc.fma(u % Acc<NB>::S, V::dense(v + 8 * (b + u)), x + 8 * (b + u), xs);
    for (; b < full; ++b) acc.fma(0, V::dense(v + 8 * b), x + 8 * b, xs);
    if (tail) acc.fma(0, V::expand(v + 8 * full, tail), x + 8 * full, xs);
    acc.store(N, y + r, ys, V::kUnscale * (K == I8 ? p.scales[r] : 1.0f));
  }
}

// GPTQ (group_size % 8 == 0, so a mask byte never straddles groups): lane i's code is nibble rank(i) of the 8
// nibbles at the row's nibble pointer k, (q − z)·s per group (exact, as the format's decode), clear lanes zeroed.
inline __m256 gptq_expand(const uint8_t* codes, int64_t k, unsigned m, __m256 z, __m256 s) {
  uint32_t nibbles = uint32_t(load64(codes + (k >> 1)) >> ((k & 1) * 4));
  __m256i shifts = _mm256_load_si256(reinterpret_cast<const __m256i*>(kTables.shift4[m]));
  __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(nibbles)), shifts), _mm256_set1_epi32(15)));
  return _mm256_and_ps(_mm256_mul_ps(_mm256_sub_ps(q, z), s), _mm256_load_ps(reinterpret_cast<const float*>(kTables.lanes[m])));
}

inline void group_of(const Packed& p, int64_t r, int64_t g, __m256& s, __m256& z) {
  s = _mm256_set1_ps(_cvtsh_ss(p.gscales[r * p.groups + g]));
  z = _mm256_set1_ps(float(p.zeros[r * p.groups + g]));
}

// The gptq GEMV. With ℓ_c = q_c where column c is stored and ℓ_c = z_g where it is not,
//   Σ_c (q_c − z_g)·s_g·x_c = Σ_g s_g·(Σ_{c in g} ℓ_c·x_c − z_g·Σ_{c in g} x_c),
// so each lane needs no zero-point arithmetic: per mask byte, one vpbroadcastq of the next 8 codes (unpacked to a
// byte each), a vpblendd that puts z_g in bytes 8–15 of both 128-bit halves, one vpshufb (table gz: lane i's top
// byte ← code rank(i) when set, byte 8 (z_g) when clear), one convert (ℓ·2²⁴) and one FMA per batch row — the int8
// path's work plus the blend. Σ_{c in g} x_c is summed lane-wise once per call, for all rows. Each row's nibbles
// are unpacked one row ahead into the other of two buffers (16 bytes → 32 codes: AND, shift, interleave), so the
// GEMV never loads bytes that are still in the store queue (a load spanning two pending stores waits for them).
template <int L>
void gptq_unpack(const Packed& p, int64_t r, uint8_t* unpacked) {  // row r's codes, a byte each, from its first
  const auto* codes = static_cast<const uint8_t*>(p.values);       // byte's low nibble
  const int64_t k0 = p.row_start(r), nnz = L == TWO_FOUR ? p.in / 2 : p.offsets[r + 1] - k0;
  const __m128i low = _mm_set1_epi8(15);
  for (int64_t i = 0; i < (k0 & 1) + nnz; i += 32) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + (k0 >> 1) + i / 2));
    const __m128i lo = _mm_and_si128(v, low), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(unpacked + i), _mm_unpacklo_epi8(lo, hi));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(unpacked + i + 16), _mm_unpackhi_epi8(lo, hi));
  }
}

inline __m256 gptq_lanes(const uint8_t* v, unsigned m, __m256i zb) {  // ℓ·2²⁴ of mask byte m's 8 columns
  const __m256i src = _mm256_blend_epi32(_mm256_set1_epi64x(int64_t(load64(v))), zb, 0xCC);
  return _mm256_cvtepi32_ps(_mm256_shuffle_epi8(src, _mm256_load_si256(reinterpret_cast<const __m256i*>(kTables.gz[m]))));
}

template <int L, int NB>
void gemv_gptq(const Packed& p, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  const int64_t per_group = p.group_size / 8;  // mask bytes per group
  std::vector<float> xsum(size_t(p.groups) * NB * 8);  // lane-wise Σ x over each group's columns
  for (int64_t g = 0; g < p.groups; ++g)
    for (int n = 0; n < NB; ++n) {
      __m256 t = _mm256_setzero_ps();
      for (int64_t b = g * per_group; b < std::min<int64_t>(p.nb, (g + 1) * per_group); ++b)
        t = _mm256_add_ps(t, _mm256_loadu_ps(x + n * xs + 8 * b));
      _mm256_storeu_ps(xsum.data() + (g * NB + n) * 8, t);
    }
  const size_t row_bytes = size_t(p.nb) * 8 + 64;
  std::vector<uint8_t> unpacked(2 * row_bytes);  // two rows
  if (r0 < r1) gptq_unpack<L>(p, r0, unpacked.data());
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* v = unpacked.data() + ((r - r0) & 1) * row_bytes + (p.row_start(r) & 1);
    if (r + 1 < r1) gptq_unpack<L>(p, r + 1, unpacked.data() + ((r + 1 - r0) & 1) * row_bytes);
    const uint8_t* mrow = p.mask + r * p.nb;
    __m256 out[NB];
    for (int n = 0; n < NB; ++n) out[n] = _mm256_setzero_ps();
    // A row with no stored weight is exactly 0 (the folded zero-point terms would leave rounding noise).
    for (int64_t g = 0; g < p.groups && (L == TWO_FOUR || p.offsets[r + 1] > p.offsets[r]); ++g) {
      const uint8_t zero = p.zeros[r * p.groups + g];
      const __m256i zb = _mm256_set1_epi8(char(zero));
      Acc<NB> acc;
      const int64_t b1 = std::min<int64_t>(p.nb, (g + 1) * per_group);
      int64_t b = g * per_group;
      for (; b + 4 <= b1; b += 4)
        for (int u = 0; u < 4; ++u) {  // unrolled: u % S is a constant, so the accumulators stay in registers
          const unsigned m = mask_of<L>(mrow, b + u);
          const __m256 w = gptq_lanes(v, m, zb);
          v += count_of<L>(m);
          acc.fma(u % Acc<NB>::S, w, x + 8 * (b + u), xs);
        }
      for (; b < b1; ++b) {
        const unsigned m = mask_of<L>(mrow, b);
        const __m256 w = gptq_lanes(v, m, zb);
        v += count_of<L>(m);
        acc.fma(0, w, x + 8 * b, xs);
      }
      const __m256 s = _mm256_set1_ps(_cvtsh_ss(p.gscales[r * p.groups + g]) / 16777216.0f);
      const __m256 zf = _mm256_set1_ps(float(zero) * 16777216.0f);
      for (int n = 0; n < NB; ++n) {
        __m256 t = acc.a[0][n];
        for (int a = 1; a < Acc<NB>::S; ++a) t = _mm256_add_ps(t, acc.a[a][n]);
        out[n] = _mm256_fmadd_ps(s, _mm256_fnmadd_ps(zf, _mm256_loadu_ps(xsum.data() + (g * NB + n) * 8), t), out[n]);
      }
    }
    for (int n = 0; n < N; ++n) y[n * ys + r] = hsum(out[n]);
  }
}

template <int L>
void decompress_gptq(const Packed& p, float* dst, int64_t ds, int64_t r0, int64_t r1) {
  const auto* codes = static_cast<const uint8_t*>(p.values);
  const int64_t per_group = p.group_size / 8;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* mrow = p.mask + r * p.nb;
    float* row = dst + (r - r0) * ds;
    int64_t k = p.row_start(r);
    for (int64_t g = 0; g < p.groups; ++g) {
      __m256 s, z;
      group_of(p, r, g, s, z);
      const int64_t end = std::min<int64_t>(p.nb, (g + 1) * per_group);
      for (int64_t b = g * per_group; b < end; ++b) {
        unsigned m = mask_of<L>(mrow, b);
        _mm256_storeu_ps(row + 8 * b, gptq_expand(codes, k, m, z, s));
        k += count_of<L>(m);
      }
    }
  }
}

template <int NB>
void gemv_nb(const Packed& p, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  if (p.layout == DENSE) {
    switch (p.kind) {
      case F32: return gemv_dense<F32, NB>(p, x, xs, N, y, ys, r0, r1);
      case BF16: return gemv_dense<BF16, NB>(p, x, xs, N, y, ys, r0, r1);
      case F16: return gemv_dense<F16, NB>(p, x, xs, N, y, ys, r0, r1);
      default: return gemv_dense<I8, NB>(p, x, xs, N, y, ys, r0, r1);
    }
  }
  const bool two4 = p.layout == TWO_FOUR;
  switch (p.kind) {
    case F32: return two4 ? gemv_sparse<TWO_FOUR, F32, NB>(p, x, xs, N, y, ys, r0, r1) : gemv_sparse<BITMASK, F32, NB>(p, x, xs, N, y, ys, r0, r1);
    case BF16: return two4 ? gemv_sparse<TWO_FOUR, BF16, NB>(p, x, xs, N, y, ys, r0, r1) : gemv_sparse<BITMASK, BF16, NB>(p, x, xs, N, y, ys, r0, r1);
    case F16: return two4 ? gemv_sparse<TWO_FOUR, F16, NB>(p, x, xs, N, y, ys, r0, r1) : gemv_sparse<BITMASK, F16, NB>(p, x, xs, N, y, ys, r0, r1);
    case I8: return two4 ? gemv_sparse<TWO_FOUR, I8, NB>(p, x, xs, N, y, ys, r0, r1) : gemv_sparse<BITMASK, I8, NB>(p, x, xs, N, y, ys, r0, r1);
    default: return two4 ? gemv_gptq<TWO_FOUR, NB>(p, x, xs, N, y, ys, r0, r1) : gemv_gptq<BITMASK, NB>(p, x, xs, N, y, ys, r0, r1);
  }
}

template <int L, int K>
void decompress_sparse(const Packed& p, float* dst, int64_t ds, int64_t r0, int64_t r1) {
  using V = Values<K>;
  const auto* values = static_cast<const typename V::T*>(p.values);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* mrow = p.mask + r * p.nb;
    const typename V::T* v = values + p.row_start(r);
    float* row = dst + (r - r0) * ds;
    __m256 scale = _mm256_set1_ps(V::kUnscale * (K == I8 ? p.scales[r] : 1.0f));
    for (int64_t b = 0; b < p.nb; ++b) {
      unsigned m = mask_of<L>(mrow, b);
      __m256 w = V::expand(v, m);
      v += count_of<L>(m);
      _mm256_storeu_ps(row + 8 * b, K == I8 ? _mm256_mul_ps(w, scale) : w);
    }
  }
}

template <int K>
void decompress_dense(const Packed& p, float* dst, int64_t ds, int64_t r0, int64_t r1) {
  using V = Values<K>;
  const int64_t full = p.in / 8;
  const unsigned tail = (1u << (p.in % 8)) - 1;
  const auto* values = static_cast<const typename V::T*>(p.values);
  for (int64_t r = r0; r < r1; ++r) {
    const typename V::T* v = values + r * p.in;
    float* row = dst + (r - r0) * ds;
    __m256 scale = _mm256_set1_ps(V::kUnscale * (K == I8 ? p.scales[r] : 1.0f));
    for (int64_t b = 0; b < full; ++b) {
      __m256 w = V::dense(v + 8 * b);
      _mm256_storeu_ps(row + 8 * b, K == I8 ? _mm256_mul_ps(w, scale) : w);
    }
    if (tail) {
      __m256 w = V::expand(v + 8 * full, tail);
      _mm256_storeu_ps(row + 8 * full, K == I8 ? _mm256_mul_ps(w, scale) : w);
    }
  }
}

// Column-index GEMV (high sparsity). One batch row: per block of nonzeros, x at their columns copied into a
// buffer (scalar loads: cheaper than vgatherdps here), then a vector dot with the values. 4 or 8 batch rows: x
// transposed, so one load holds x(·, c) of every batch row; each nonzero is one broadcast and one FMA (4
// accumulators in turn: FMA latency).
template <int K>
void gemv_index1(const Packed& p, const float* x, float* y, int64_t r0, int64_t r1) {
  using V = Values<K>;
  constexpr int64_t kBlock = 256;  // nonzeros per block: x at their columns copied to xs, then one vector dot
  alignas(32) float xs[kBlock + 8];
  const auto* values = static_cast<const typename V::T*>(p.values);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t k0 = p.offsets[r], n = p.offsets[r + 1] - k0;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += kBlock) {
      const int64_t m = std::min(kBlock, n - i);
      const uint16_t* id = p.index + k0 + i;
      for (int64_t j = 0; j < m; j += 4) {  // 4 columns per load; those past the row are columns too (or padding 0)
        const uint64_t c = load64(id + j);
        xs[j] = x[c & 0xffff], xs[j + 1] = x[(c >> 16) & 0xffff], xs[j + 2] = x[(c >> 32) & 0xffff], xs[j + 3] = x[c >> 48];
      }
      _mm256_storeu_ps(xs + m, _mm256_setzero_ps());  // the values read past the row meet zeros
      const typename V::T* v = values + k0 + i;
      int64_t j = 0;
      for (; j + 8 < m; j += 16) {
        a0 = _mm256_fmadd_ps(V::dense(v + j), _mm256_load_ps(xs + j), a0);
        a1 = _mm256_fmadd_ps(V::dense(v + j + 8), _mm256_load_ps(xs + j + 8), a1);
      }
      if (j < m) a0 = _mm256_fmadd_ps(V::dense(v + j), _mm256_load_ps(xs + j), a0);
    }
    y[r] = hsum(_mm256_add_ps(a0, a1)) * V::kUnscale * (K == I8 ? p.scales[r] : 1.0f);
  }
}

template <int K>
inline float scalar_value(const typename Values<K>::T* v, int64_t k) {
  if constexpr (K == F32) return v[k];
  else if constexpr (K == BF16) return bf16_to_float(v[k]);
  else if constexpr (K == F16) return _cvtsh_ss(v[k]);
  else return float(v[k]);
}

// x(·, c) of 4 or 8 batch rows as one vector.
template <int NB> struct Lanes;
template <> struct Lanes<8> {
  using Vec = __m256;
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec fma(float w, const float* x, Vec acc) { return _mm256_fmadd_ps(_mm256_set1_ps(w), _mm256_loadu_ps(x), acc); }
  static void store(float* out, Vec a, Vec b, Vec c, Vec d) { _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d))); }
};
template <> struct Lanes<4> {
  using Vec = __m128;
  static Vec zero() { return _mm_setzero_ps(); }
  static Vec fma(float w, const float* x, Vec acc) { return _mm_fmadd_ps(_mm_set1_ps(w), _mm_loadu_ps(x), acc); }
  static void store(float* out, Vec a, Vec b, Vec c, Vec d) { _mm_storeu_ps(out, _mm_add_ps(_mm_add_ps(a, b), _mm_add_ps(c, d))); }
};

template <int K, int NB>
void gemv_index_t(const Packed& p, const float* xt, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  using X = Lanes<NB>;
  const auto* values = static_cast<const typename Values<K>::T*>(p.values);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t k1 = p.offsets[r + 1];
    typename X::Vec a0 = X::zero(), a1 = X::zero(), a2 = X::zero(), a3 = X::zero();
    int64_t k = p.offsets[r];
    for (; k + 4 <= k1; k += 4) {
      a0 = X::fma(scalar_value<K>(values, k), xt + int64_t(p.index[k]) * NB, a0);
      a1 = X::fma(scalar_value<K>(values, k + 1), xt + int64_t(p.index[k + 1]) * NB, a1);
      a2 = X::fma(scalar_value<K>(values, k + 2), xt + int64_t(p.index[k + 2]) * NB, a2);
      a3 = X::fma(scalar_value<K>(values, k + 3), xt + int64_t(p.index[k + 3]) * NB, a3);
    }
    for (; k < k1; ++k) a0 = X::fma(scalar_value<K>(values, k), xt + int64_t(p.index[k]) * NB, a0);
    float out[8] = {};
    X::store(out, a0, a1, a2, a3);
    const float scale = K == I8 ? p.scales[r] : 1.0f;
    for (int n = 0; n < N; ++n) y[n * ys + r] = out[n] * scale;
  }
}

template <int K>
void gemv_index_kind(const Packed& p, const float* x, int NB, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  if (NB == 1) return gemv_index1<K>(p, x, y + 0, r0, r1);
  if (NB == 4) return gemv_index_t<K, 4>(p, x, N, y, ys, r0, r1);
  return gemv_index_t<K, 8>(p, x, N, y, ys, r0, r1);
}

// The SpMM panel (kernels.h): V accumulators of 8 batch rows each, held in registers (the loops are unrolled: an
// array indexed in a loop that is not would live on the stack); per nonzero one broadcast and V FMAs that read x
// at its column (with V = 8: 8 FMA chains in flight, FMA latency 4 at 2 per cycle).
template <int V>
void panel_v(const int32_t* cols, const float* vals, const int64_t* seg, int64_t stride, int64_t rows, const float* xp,
             float* acc) {
  for (int64_t i = 0; i < rows; ++i, acc += 8 * V) {
    const int64_t k0 = seg[i * stride], k1 = seg[i * stride + 1];
    if (k0 == k1) continue;
    __m256 a[V];
    _Pragma("GCC unroll 8") for (int v = 0; v < V; ++v) a[v] = _mm256_loadu_ps(acc + 8 * v);
    for (int64_t k = k0; k < k1; ++k) {
      const float* x = xp + int64_t(cols[k]) * (8 * V);
      const __m256 w = _mm256_broadcast_ss(vals + k);
      _Pragma("GCC unroll 8") for (int v = 0; v < V; ++v) a[v] = _mm256_fmadd_ps(w, _mm256_load_ps(x + 8 * v), a[v]);
    }
    _Pragma("GCC unroll 8") for (int v = 0; v < V; ++v) _mm256_storeu_ps(acc + 8 * v, a[v]);
  }
}

// The 6 × 16 GEMM micro-kernel (BLIS's shape for AVX2: 12 accumulators, per k two loads of b, six broadcasts of x,
// twelve FMAs): MR batch rows of one x strip against the 16 weight rows of b, over kc columns.
template <int MR>
void micro6x16(const float* x, const float* b, int64_t kc, float* y, int64_t ys, int rows, bool accumulate) {
  __m256 c[MR][2];
  _Pragma("GCC unroll 6") for (int i = 0; i < MR; ++i) c[i][0] = c[i][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k, x += kMR, b += 16) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    _Pragma("GCC unroll 6") for (int i = 0; i < MR; ++i) {
      const __m256 a = _mm256_broadcast_ss(x + i);
      c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
    }
  }
  _Pragma("GCC unroll 6") for (int i = 0; i < MR; ++i) {
    float* out = y + i * ys;
    if (rows == 16) {
      if (accumulate) c[i][0] = _mm256_add_ps(c[i][0], _mm256_loadu_ps(out)), c[i][1] = _mm256_add_ps(c[i][1], _mm256_loadu_ps(out + 8));
      _mm256_storeu_ps(out, c[i][0]);
      _mm256_storeu_ps(out + 8, c[i][1]);
    } else {
      alignas(32) float t[16];
      _mm256_store_ps(t, c[i][0]);
      _mm256_store_ps(t + 8, c[i][1]);
      for (int j = 0; j < rows; ++j) out[j] = accumulate ? out[j] + t[j] : t[j];
    }
  }
}

inline void transpose8(const float* src, int64_t ds, float* dst, int64_t dd) {  // dst[k·dd + j] = src[j·ds + k], 8 × 8
  __m256 r[8], t[8];
  for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * ds);
  for (int j = 0; j < 8; j += 2) t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]), t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  for (int j = 0; j < 8; j += 4) {
    r[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44), r[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xEE);
    r[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44), r[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * dd, _mm256_permute2f128_ps(r[j], r[j + 4], 0x20));
    _mm256_storeu_ps(dst + (j + 4) * dd, _mm256_permute2f128_ps(r[j], r[j + 4], 0x31));
  }
}

}  // namespace

void pack16_avx2(const float* src, int64_t ds, int rows, int64_t width, float* b) {
  if (rows < 16) {  // the last rows of a weight: zero past them
    for (int64_t k = 0; k < width; ++k)
      for (int j = 0; j < 16; ++j) b[k * 16 + j] = j < rows ? src[j * ds + k] : 0.0f;
    return;
  }
  int64_t k = 0;
  for (; k + 8 <= width; k += 8) {
    transpose8(src + k, ds, b + k * 16, 16);
    transpose8(src + 8 * ds + k, ds, b + k * 16 + 8, 16);
  }
  for (; k < width; ++k)
    for (int j = 0; j < 16; ++j) b[k * 16 + j] = src[j * ds + k];
}

void gemm16_avx2(const float* xs, int64_t N, int64_t width, const float* b, int64_t k0, int64_t kc, float* y,
                 int64_t ys, int64_t r0, int rows, bool accumulate) {
  for (int64_t n0 = 0; n0 < N; n0 += kMR) {
    const float* x = xs + (n0 * width + k0 * kMR);
    float* out = y + n0 * ys + r0;
    switch (std::min<int64_t>(kMR, N - n0)) {
      case 1: micro6x16<1>(x, b + k0 * 16, kc, out, ys, rows, accumulate); break;
      case 2: micro6x16<2>(x, b + k0 * 16, kc, out, ys, rows, accumulate); break;
      case 3: micro6x16<3>(x, b + k0 * 16, kc, out, ys, rows, accumulate); break;
      case 4: micro6x16<4>(x, b + k0 * 16, kc, out, ys, rows, accumulate); break;
      case 5: micro6x16<5>(x, b + k0 * 16, kc, out, ys, rows, accumulate); break;
      default: micro6x16<6>(x, b + k0 * 16, kc, out, ys, rows, accumulate);
    }
  }
}

int64_t nonzeros_avx2(const float* row, int64_t c0, int64_t n, int32_t* cols, float* vals) {
  int64_t k = 0;
  __m256i c = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(int32_t(c0)));
  const __m256i eight = _mm256_set1_epi32(8);
  for (int64_t i = 0; i < n; i += 8, c = _mm256_add_epi32(c, eight)) {
    const __m256 v = _mm256_loadu_ps(row + c0 + i);
    const unsigned m = unsigned(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NEQ_UQ)));
    const __m256i order = _mm256_load_si256(reinterpret_cast<const __m256i*>(kTables.compress[m]));
    _mm256_storeu_ps(vals + k, _mm256_permutevar8x32_ps(v, order));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(cols + k), _mm256_permutevar8x32_epi32(c, order));
    k += __builtin_popcount(m);
  }
  return k;
}

void panel_avx2(const int32_t* cols, const float* vals, const int64_t* seg, int64_t stride, int64_t rows, const float* xp,
                int V, float* acc) {
  switch (V) {
    case 1: return panel_v<1>(cols, vals, seg, stride, rows, xp, acc);
    case 2: return panel_v<2>(cols, vals, seg, stride, rows, xp, acc);
    case 3: return panel_v<3>(cols, vals, seg, stride, rows, xp, acc);
    case 4: return panel_v<4>(cols, vals, seg, stride, rows, xp, acc);
    case 5: return panel_v<5>(cols, vals, seg, stride, rows, xp, acc);
    case 6: return panel_v<6>(cols, vals, seg, stride, rows, xp, acc);
    case 7: return panel_v<7>(cols, vals, seg, stride, rows, xp, acc);
    default: return panel_v<8>(cols, vals, seg, stride, rows, xp, acc);
  }
}

void gemv_index_avx2(const Packed& p, const float* x, int NB, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  switch (p.kind) {
    case F32: return gemv_index_kind<F32>(p, x, NB, N, y, ys, r0, r1);
    case BF16: return gemv_index_kind<BF16>(p, x, NB, N, y, ys, r0, r1);
    case F16: return gemv_index_kind<F16>(p, x, NB, N, y, ys, r0, r1);
    default: return gemv_index_kind<I8>(p, x, NB, N, y, ys, r0, r1);
  }
}

void gemv_avx2(const Packed& p, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  if (p.kind == GPTQ && p.group_size % 8) return gemv_portable(p, x, xs, N, y, ys, r0, r1);
  if (N <= 1) return gemv_nb<1>(p, x, xs, N, y, ys, r0, r1);
  if (N <= 2) return gemv_nb<2>(p, x, xs, N, y, ys, r0, r1);
  if (N <= 4) return gemv_nb<4>(p, x, xs, N, y, ys, r0, r1);
  return gemv_nb<8>(p, x, xs, N, y, ys, r0, r1);
}

void decompress_avx2(const Packed& p, float* dst, int64_t ds, int64_t r0, int64_t r1) {
  const bool two4 = p.layout == TWO_FOUR;
  if (p.layout == DENSE) {
    switch (p.kind) {
      case F32: return decompress_dense<F32>(p, dst, ds, r0, r1);
      case BF16: return decompress_dense<BF16>(p, dst, ds, r0, r1);
      case F16: return decompress_dense<F16>(p, dst, ds, r0, r1);
      default: return decompress_dense<I8>(p, dst, ds, r0, r1);
    }
  }
  switch (p.kind) {
    case F32: return two4 ? decompress_sparse<TWO_FOUR, F32>(p, dst, ds, r0, r1) : decompress_sparse<BITMASK, F32>(p, dst, ds, r0, r1);
    case BF16: return two4 ? decompress_sparse<TWO_FOUR, BF16>(p, dst, ds, r0, r1) : decompress_sparse<BITMASK, BF16>(p, dst, ds, r0, r1);
    case F16: return two4 ? decompress_sparse<TWO_FOUR, F16>(p, dst, ds, r0, r1) : decompress_sparse<BITMASK, F16>(p, dst, ds, r0, r1);
    case I8: return two4 ? decompress_sparse<TWO_FOUR, I8>(p, dst, ds, r0, r1) : decompress_sparse<BITMASK, I8>(p, dst, ds, r0, r1);
    default:
      if (p.group_size % 8) return decompress_portable(p, dst, ds, r0, r1);
      return two4 ? decompress_gptq<TWO_FOUR>(p, dst, ds, r0, r1) : decompress_gptq<BITMASK>(p, dst, ds, r0, r1);
  }
}

}  // namespace slimpack

#pragma GCC pop_options
