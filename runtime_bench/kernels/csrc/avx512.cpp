// The AVX-512 path (F + BW + VL): the same expand GEMV, 16 columns (two mask bytes) per step: a masked load of
// the next popcount(m16) stored values (the mask suppresses any read past them), converted to fp32, then
// vexpandps puts value number rank(i) in lane i and zeroes the clear lanes. GPTQ values go through the AVX2
// path. Compiled for AVX-512 in a generic build (#pragma GCC target, internal linkage); only called after
// __builtin_cpu_supports says the CPU has it. NOTE: written and compiled on an AVX2-only machine — the tests run
// it wherever `isas()` lists avx512.
#include <immintrin.h>

#include "kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c,bmi,bmi2,popcnt")

namespace slimpack {
namespace {

// Per value kind: the first `count` stored values at v as 16 fp32 lanes (lanes ≥ count are 0).
template <int K> struct Values;
template <> struct Values<F32> {
  using T = float;
  static __m512 load(const T* v, __mmask16 k) { return _mm512_maskz_loadu_ps(k, v); }
};
template <> struct Values<BF16> {
  using T = uint16_t;
  static __m512 load(const T* v, __mmask16 k) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, v)), 16));
  }
};
template <> struct Values<F16> {
  using T = uint16_t;
  static __m512 load(const T* v, __mmask16 k) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, v)); }
};
template <> struct Values<I8> {
  using T = int8_t;
  static __m512 load(const T* v, __mmask16 k) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, v)));
  }
};

inline __mmask16 first(int count) { return __mmask16((1u << count) - 1); }

template <int L>
inline unsigned mask16(const Packed& p, const uint8_t* mrow, int64_t b, bool pair) {
  if (p.layout == DENSE) {
    int64_t left = p.in - 8 * b;
    return left >= 16 ? 0xffffu : (1u << left) - 1;
  }
  unsigned lo = mrow[b], hi = pair ? mrow[b + 1] : 0;
  if (L == TWO_FOUR) lo = kTables.two4[lo], hi = pair ? kTables.two4[hi] : 0;
  return lo | hi << 8;
}

// Rows [r0, r1) with NB batch rows, S accumulator sets (≥ 4 FMA chains in flight).
template <int L, int K, int NB>
void gemv_rows(const Packed& p, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  using V = Values<K>;
  constexpr int S = NB >= 4 ? 1 : 4 / NB;
  const auto* values = static_cast<const typename V::T*>(p.values);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* mrow = L == DENSE ? nullptr : p.mask + r * p.nb;
    const typename V::T* v = values + p.row_start(r);
    __m512 acc[S][NB];
    for (int s = 0; s < S; ++s)
      for (int n = 0; n < NB; ++n) acc[s][n] = _mm512_setzero_ps();
    int slot = 0;
    for (int64_t b = 0; b < p.nb; b += 2) {
      const bool pair = b + 1 < p.nb;
      const unsigned m = mask16<L>(p, mrow, b, pair);
      const int count = __builtin_popcount(m);
      __m512 w = L == DENSE ? V::load(v, __mmask16(m)) : _mm512_maskz_expand_ps(__mmask16(m), V::load(v, first(count)));
      v += count;
      const __mmask16 lanes = pair ? 0xffff : 0x00ff;  // x holds nb·8 floats
      for (int n = 0; n < NB; ++n) acc[slot][n] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(lanes, x + n * xs + 8 * b), acc[slot][n]);
      slot = slot + 1 == S ? 0 : slot + 1;
    }
    const float scale = K == I8 ? p.scales[r] : 1.0f;
    for (int n = 0; n < N; ++n) {
      __m512 t = acc[0][n];
      for (int s = 1; s < S; ++s) t = _mm512_add_ps(t, acc[s][n]);
      y[n * ys + r] = _mm512_reduce_add_ps(t) * scale;
    }
  }
}

template <int L, int K>
void decompress_rows(const Packed& p, float* dst, int64_t ds, int64_t r0, int64_t r1) {
  using V = Values<K>;
  const auto* values = static_cast<const typename V::T*>(p.values);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* mrow = L == DENSE ? nullptr : p.mask + r * p.nb;
    const typename V::T* v = values + p.row_start(r);
    float* row = dst + (r - r0) * ds;
    const __m512 scale = _mm512_set1_ps(K == I8 ? p.scales[r] : 1.0f);
    for (int64_t b = 0; b < p.nb; b += 2) {
      const bool pair = b + 1 < p.nb;
      const unsigned m = mask16<L>(p, mrow, b, pair);
      const int count = __builtin_popcount(m);
      __m512 w = L == DENSE ? V::load(v, __mmask16(m)) : _mm512_maskz_expand_ps(__mmask16(m), V::load(v, first(count)));
      v += count;
      if (K == I8) w = _mm512_mul_ps(w, scale);
      _mm512_mask_storeu_ps(row + 8 * b, pair ? 0xffff : 0x00ff, w);
    }
  }
}

template <int L, int NB>
void gemv_kind(const Packed& p, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  switch (p.kind) {
    case F32: return gemv_rows<L, F32, NB>(p, x, xs, N, y, ys, r0, r1);
    case BF16: return gemv_rows<L, BF16, NB>(p, x, xs, N, y, ys, r0, r1);
    case F16: return gemv_rows<L, F16, NB>(p, x, xs, N, y, ys, r0, r1);
    default: return gemv_rows<L, I8, NB>(p, x, xs, N, y, ys, r0, r1);
  }
}

template <int NB>
void gemv_nb(const Packed& p, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  if (p.layout == DENSE) return gemv_kind<DENSE, NB>(p, x, xs, N, y, ys, r0, r1);
  if (p.layout == TWO_FOUR) return gemv_kind<TWO_FOUR, NB>(p, x, xs, N, y, ys, r0, r1);
  return gemv_kind<BITMASK, NB>(p, x, xs, N, y, ys, r0, r1);
}

template <int L>
void decompress_kind(const Packed& p, float* dst, int64_t ds, int64_t r0, int64_t r1) {
  switch (p.kind) {
    case F32: return decompress_rows<L, F32>(p, dst, ds, r0, r1);
    case BF16: return decompress_rows<L, BF16>(p, dst, ds, r0, r1);
    case F16: return decompress_rows<L, F16>(p, dst, ds, r0, r1);
    default: return decompress_rows<L, I8>(p, dst, ds, r0, r1);
  }
}

}  // namespace

void gemv_avx512(const Packed& p, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  if (p.kind == GPTQ) return gemv_avx2(p, x, xs, N, y, ys, r0, r1);
  if (N <= 1) return gemv_nb<1>(p, x, xs, N, y, ys, r0, r1);
  if (N <= 2) return gemv_nb<2>(p, x, xs, N, y, ys, r0, r1);
  if (N <= 4) return gemv_nb<4>(p, x, xs, N, y, ys, r0, r1);
  return gemv_nb<8>(p, x, xs, N, y, ys, r0, r1);
}

void decompress_avx512(const Packed& p, float* dst, int64_t ds, int64_t r0, int64_t r1) {
  if (p.kind == GPTQ) return decompress_avx2(p, dst, ds, r0, r1);
  if (p.layout == DENSE) return decompress_kind<DENSE>(p, dst, ds, r0, r1);
  if (p.layout == TWO_FOUR) return decompress_kind<TWO_FOUR>(p, dst, ds, r0, r1);
  return decompress_kind<BITMASK>(p, dst, ds, r0, r1);
}

}  // namespace slimpack

#pragma GCC pop_options
