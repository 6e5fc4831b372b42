// The portable path: plain C++ loops over the set bits of each mask byte, for any CPU (the compiler may
// vectorise what it can; no ISA-specific code). Same contract as the AVX2 path (kernels.h).
#include "kernels.h"

namespace slimpack {
namespace {

// The fp32 weight of stored value number k of row r at column c (int8: without the row scale, applied at the end).
template <int K>
inline float value_at(const Packed& p, int64_t k, int64_t r, int64_t c) {
  if constexpr (K == F32) return static_cast<const float*>(p.values)[k];
  else if constexpr (K == BF16) return bf16_to_float(static_cast<const uint16_t*>(p.values)[k]);
  else if constexpr (K == F16) return half_to_float(static_cast<const uint16_t*>(p.values)[k]);
  else if constexpr (K == I8) return float(static_cast<const int8_t*>(p.values)[k]);
  else {
    uint8_t byte = static_cast<const uint8_t*>(p.values)[k >> 1];
    float q = float((k & 1) ? byte >> 4 : byte & 15);
    int64_t g = r * p.groups + c / p.group_size;
    return (q - float(p.zeros[g])) * half_to_float(p.gscales[g]);
  }
}

inline unsigned mask_byte(const Packed& p, int64_t r, int64_t b) {
  if (p.layout == DENSE) {
    int64_t left = p.in - 8 * b;
    return left >= 8 ? 0xffu : (1u << left) - 1;
  }
  uint8_t m = p.mask[r * p.nb + b];
  return p.layout == TWO_FOUR ? kTables.two4[m] : m;
}

template <int K>
void gemv_rows(const Packed& p, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = p.row_start(r);
    for (int64_t b = 0; b < p.nb; ++b) {
      for (unsigned m = mask_byte(p, r, b); m; m &= m - 1, ++k) {
        int64_t c = 8 * b + __builtin_ctz(m);
        float w = value_at<K>(p, k, r, c);
        for (int n = 0; n < N; ++n) acc[n] += w * x[n * xs + c];
      }
    }
    float scale = K == I8 ? p.scales[r] : 1.0f;
    for (int n = 0; n < N; ++n) y[n * ys + r] = acc[n] * scale;
  }
}

template <int K>
void decompress_rows(const Packed& p, float* dst, int64_t ds, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = dst + (r - r0) * ds;
    for (int64_t c = 0; c < 8 * p.nb; ++c) row[c] = 0.0f;
    float scale = K == I8 ? p.scales[r] : 1.0f;
    int64_t k = p.row_start(r);
    for (int64_t b = 0; b < p.nb; ++b)
      for (unsigned m = mask_byte(p, r, b); m; m &= m - 1, ++k) {
        int64_t c = 8 * b + __builtin_ctz(m);
        row[c] = value_at<K>(p, k, r, c) * scale;
      }
  }
}

template <int K>
void gemv_index_rows(const Packed& p, const float* x, int NB, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t k = p.offsets[r]; k < p.offsets[r + 1]; ++k) {
      const float w = value_at<K>(p, k, r, 0);
      const float* xc = x + int64_t(p.index[k]) * NB;
      for (int n = 0; n < N; ++n) acc[n] += w * xc[n];
    }
    float scale = K == I8 ? p.scales[r] : 1.0f;
    for (int n = 0; n < N; ++n) y[n * ys + r] = acc[n] * scale;
  }
}

}  // namespace

int64_t nonzeros_portable(const float* row, int64_t c0, int64_t n, int32_t* cols, float* vals) {
  int64_t k = 0;
  for (int64_t c = c0; c < c0 + n; ++c)
    if (!(row[c] == 0.0f)) cols[k] = int32_t(c), vals[k++] = row[c];
  return k;
}

void panel_portable(const int32_t* cols, const float* vals, const int64_t* seg, int64_t stride, int64_t rows,
                    const float* xp, int V, float* acc) {
  const int64_t w = 8 * V;
  for (int64_t i = 0; i < rows; ++i, acc += w)
    for (int64_t k = seg[i * stride]; k < seg[i * stride + 1]; ++k) {
      const float* x = xp + int64_t(cols[k]) * w;
      for (int64_t j = 0; j < w; ++j) acc[j] += vals[k] * x[j];
    }
}

void gemv_index_portable(const Packed& p, const float* x, int NB, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  switch (p.kind) {
    case F32: return gemv_index_rows<F32>(p, x, NB, N, y, ys, r0, r1);
    case BF16: return gemv_index_rows<BF16>(p, x, NB, N, y, ys, r0, r1);
    case F16: return gemv_index_rows<F16>(p, x, NB, N, y, ys, r0, r1);
    default: return gemv_index_rows<I8>(p, x, NB, N, y, ys, r0, r1);
  }
}

void gemv_portable(const Packed& p, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1) {
  switch (p.kind) {
    case F32: return gemv_rows<F32>(p, x, xs, N, y, ys, r0, r1);
    case BF16: return gemv_rows<BF16>(p, x, xs, N, y, ys, r0, r1);
    case F16: return gemv_rows<F16>(p, x, xs, N, y, ys, r0, r1);
    case I8: return gemv_rows<I8>(p, x, xs, N, y, ys, r0, r1);
    default: return gemv_rows<GPTQ>(p, x, xs, N, y, ys, r0, r1);
  }
}

void decompress_portable(const Packed& p, float* dst, int64_t ds, int64_t r0, int64_t r1) {
  switch (p.kind) {
    case F32: return decompress_rows<F32>(p, dst, ds, r0, r1);
    case BF16: return decompress_rows<BF16>(p, dst, ds, r0, r1);
    case F16: return decompress_rows<F16>(p, dst, ds, r0, r1);
    case I8: return decompress_rows<I8>(p, dst, ds, r0, r1);
    default: return decompress_rows<GPTQ>(p, dst, ds, r0, r1);
  }
}

}  // namespace slimpack
