// slimpack's CPU sparse kernels: shared definitions (the packed weight, the lookup tables, the per-ISA entry points).
//
// A packed linear W [out, in] (export/sparse_format.py, version 1) multiplies x [N, in] into y [N, out]:
//   layout BITMASK: mask uint8 [out, nb = ceil(in/8)] (bit j of byte b = column 8b+j), row r's nonzeros are
//                   values[offsets[r] .. offsets[r+1]) in column order;
//   layout TWO_FOUR: positions uint8 [out, in/8] (two 2-bit within-group indices per group of 4), row r's values
//                   are values[r·in/2 .. (r+1)·in/2);
//   layout DENSE:   no mask, row r is values[r·in .. (r+1)·in).
// Values: F32 | BF16 | F16 (the weights), I8 (w = v·scales[r]), GPTQ (4-bit codes, a nibble stream, low nibble
// first; w = (q − zeros[r, c/gs])·scales[r, c/gs], c the stored column). The values tensor ends with 32 bytes of
// padding, so whole-vector loads past a row's last nonzero stay inside it.
#pragma once
#include <cstdint>
#include <cstring>

namespace slimpack {

enum Layout : int { BITMASK = 0, TWO_FOUR = 1, DENSE = 2 };
enum Kind : int { F32 = 0, BF16 = 1, F16 = 2, I8 = 3, GPTQ = 4 };

struct Packed {
  int layout = BITMASK, kind = F32;
  int64_t out = 0, in = 0, nb = 0;  // nb: mask/position bytes per row (dense: ceil(in/8), the x chunks)
  const uint8_t* mask = nullptr;    // bitmask: the mask; 2:4: the positions
  const int64_t* offsets = nullptr; // bitmask: row offsets [out + 1]
  const uint16_t* index = nullptr;  // bitmask, optional: the column of every nonzero [nnz + kIndexPad]
  const void* values = nullptr;
  const float* scales = nullptr;    // I8: [out]
  const uint16_t* gscales = nullptr;  // GPTQ: fp16 bits [out, groups]
  const uint8_t* zeros = nullptr;   // GPTQ: [out, groups]
  int64_t group_size = 0, groups = 0;

  int64_t row_start(int64_t r) const {  // index of row r's first value (GPTQ: its first nibble)
    return layout == BITMASK ? offsets[r] : layout == TWO_FOUR ? r * (in / 2) : r * in;
  }
};

constexpr int64_t kIndexPad = 16;  // entries after the last column index (vector loads)

// y[n·ys + r] = Σ_c W[r, c]·x[n·xs + c] for n < N, r in [r0, r1). x rows hold nb·8 floats, zero past `in`.
// rows ≥ N up to the kernel's batch block read x rows that exist (the caller pads x to NB rows).
using GemvFn = void (*)(const Packed&, const float* x, int64_t xs, int N, float* y, int64_t ys, int64_t r0, int64_t r1);
// dst[(r − r0)·ds + c] = W[r, c] for r in [r0, r1), c < nb·8 (zero past `in`).
using DecompressFn = void (*)(const Packed&, float* dst, int64_t ds, int64_t r0, int64_t r1);

// The column-index GEMV (high sparsity, bitmask with `index`): y[n·ys + r] = Σ_k v[k]·x(n, index[k]) over row r's
// nonzeros k, where x(n, c) = x[c] for NB = 1 (one batch row) and xt[c·NB + n] for NB = 4 or 8 (x transposed,
// padded to NB batch rows; the caller writes the first N outputs).
using IndexGemvFn = void (*)(const Packed&, const float* x, int NB, int N, float* y, int64_t ys, int64_t r0, int64_t r1);

void gemv_portable(const Packed&, const float*, int64_t, int, float*, int64_t, int64_t, int64_t);
void decompress_portable(const Packed&, float*, int64_t, int64_t, int64_t);
void gemv_avx2(const Packed&, const float*, int64_t, int, float*, int64_t, int64_t, int64_t);
void decompress_avx2(const Packed&, float*, int64_t, int64_t, int64_t);
void gemv_avx512(const Packed&, const float*, int64_t, int, float*, int64_t, int64_t, int64_t);
void decompress_avx512(const Packed&, float*, int64_t, int64_t, int64_t);
void gemv_index_portable(const Packed&, const float*, int, int, float*, int64_t, int64_t, int64_t);
void gemv_index_avx2(const Packed&, const float*, int, int, float*, int64_t, int64_t, int64_t);

// The sparse × dense prefill (SpMM, ops.cpp drives it): each row decompressed, its nonzeros listed, then multiplied
// with panels of x transposed: a panel of w = 8·V batch rows (V ≤ 8) holds x[n0 + j, c] at xp[c·w + j].
//   nonzeros(row, c0, n, cols, vals) → count: the nonzero entries of row[c0 .. c0+n) (n % 8 == 0; NaN counts as
//     nonzero), their columns in cols and values in vals, in column order (each array: room for count + 8);
//   panel(cols, vals, seg, stride, rows, xp, V, acc): for each row i < rows, its entries k in
//     [seg[i·stride], seg[i·stride + 1]): acc[i·8V + j] += Σ_k vals[k]·xp[cols[k]·8V + j] for j < 8V.
using NonzerosFn = int64_t (*)(const float* row, int64_t c0, int64_t n, int32_t* cols, float* vals);
using PanelFn = void (*)(const int32_t* cols, const float* vals, const int64_t* seg, int64_t stride, int64_t rows,
                         const float* xp, int V, float* acc);
// The dense prefill GEMM of decompressed rows (ops.cpp drives it; the portable path has none and multiplies
// decompressed tiles with torch's BLAS instead), on packed operands: x in strips of kMR batch
// rows, strip s holding x[s·kMR + i, k] at xs[(s·width + k)·kMR + i] (zero past N); 16 weight rows r0 .. r0+16 as
// b[k·16 + j] = W[r0 + j, k].
//   pack16(src, ds, rows, width, b): b[k·16 + j] = src[j·ds + k] for j < rows, 0 for rows ≤ j < 16;
//   gemm16(xs, N, width, b, k0, kc, y, ys, r0, rows, accumulate): for every batch row n < N and j < rows,
//     y[n·ys + r0 + j] (+)= Σ_{k0 ≤ k < k0+kc} x[n, k]·b[k·16 + j] (accumulate: add to y instead of storing).
constexpr int kMR = 6;
using Pack16Fn = void (*)(const float* src, int64_t ds, int rows, int64_t width, float* b);
using Gemm16Fn = void (*)(const float* xs, int64_t N, int64_t width, const float* b, int64_t k0, int64_t kc, float* y,
                          int64_t ys, int64_t r0, int rows, bool accumulate);
void pack16_avx2(const float*, int64_t, int, int64_t, float*);
void gemm16_avx2(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*, int64_t, int64_t, int, bool);
int64_t nonzeros_portable(const float*, int64_t, int64_t, int32_t*, float*);
void panel_portable(const int32_t*, const float*, const int64_t*, int64_t, int64_t, const float*, int, float*);
int64_t nonzeros_avx2(const float*, int64_t, int64_t, int32_t*, float*);
void panel_avx2(const int32_t*, const float*, const int64_t*, int64_t, int64_t, const float*, int, float*);

// The byte tables, built at compile time. For a mask byte m and lane i (column 8b+i):
//   rank(m, i)  = the number of set bits of m below i (the value's index among the byte's nonzeros);
//   f32[m]      = vpshufb control over two 4-float halves, the low one loaded at the row's value pointer and the high
//                 one at pointer + low4[m]: lane i < 4 ← float rank, lane i ≥ 4 ← float rank − low4[m];
//   low4[m]     = popcount(m & 15);
//   shift4[m][i] = 4·rank (the nibble of lane i among the 8 at the row's nibble pointer);
//   lanes[m][i] = all ones where bit i is set (an AND zeroes the clear lanes);
//   bf16[m]     = vpshufb control: lane i's bytes 2,3 ← bf16 number rank (bytes 2r, 2r+1), bytes 0,1 ← 0;
//   f16[m]      = vpshufb control (16 bytes): 16-bit lane i ← fp16 number rank;
//   i8[m]       = vpshufb control: lane i's byte 3 ← int8 number rank, bytes 0-2 ← 0 (int32 = v·2²⁴);
//   gz[m]       = as i8, but a clear lane's byte 3 ← byte 8 (gptq: the group's zero point, blended in there);
//   lane clear: every control byte 0x80 (vpshufb writes 0);
//   two4[p]     = the mask byte of a 2:4 position byte p (4 bits set when each pair is ascending);
//   compress[m] = vpermps control: lane k ← the lane of m's k-th set bit (lanes ≥ popcount(m): 0).
struct Tables {
  alignas(64) uint8_t f32[256][32];
  alignas(64) uint8_t low4[256];
  alignas(64) int32_t shift4[256][8];
  alignas(64) int32_t lanes[256][8];
  alignas(64) uint8_t bf16[256][32];
  alignas(64) uint8_t i8[256][32];
  alignas(64) uint8_t gz[256][32];
  alignas(64) uint8_t f16[256][16];
  alignas(64) uint8_t two4[256];
  alignas(64) int32_t compress[256][8];
  constexpr Tables() : f32(), low4(), shift4(), lanes(), bf16(), i8(), gz(), f16(), two4(), compress() {
    for (int m = 0; m < 256; ++m) {
      int rank = 0;
      low4[m] = uint8_t((m & 1) + ((m >> 1) & 1) + ((m >> 2) & 1) + ((m >> 3) & 1));
      for (int i = 0; i < 8; ++i) {
        bool set = (m >> i) & 1;
        shift4[m][i] = set ? 4 * rank : 0;
        lanes[m][i] = set ? -1 : 0;
        const int half_rank = i < 4 ? rank : rank - low4[m];
        for (int j = 0; j < 4; ++j) f32[m][4 * i + j] = set ? uint8_t(4 * half_rank + j) : 0x80;
        for (int j = 0; j < 4; ++j) bf16[m][4 * i + j] = set && j >= 2 ? uint8_t(2 * rank + j - 2) : 0x80;
        for (int j = 0; j < 4; ++j) i8[m][4 * i + j] = set && j == 3 ? uint8_t(rank) : 0x80;
        for (int j = 0; j < 4; ++j) gz[m][4 * i + j] = j == 3 ? uint8_t(set ? rank : 8) : 0x80;
        for (int j = 0; j < 2; ++j) f16[m][2 * i + j] = set ? uint8_t(2 * rank + j) : 0x80;
        if (set) compress[m][rank] = i;
        rank += set;
      }
      two4[m] = uint8_t((1 << (m & 3)) | (1 << ((m >> 2) & 3)) | (16 << ((m >> 4) & 3)) | (16 << ((m >> 6) & 3)));
    }
  }
};
inline constexpr Tables kTables{};

inline float half_to_float(uint16_t h) {  // IEEE fp16 → fp32, exact (subnormals, inf, nan)
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 31, man = h & 1023, bits;
  if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
  else if (exp) bits = sign | ((exp + 112) << 23) | (man << 13);
  else if (!man) bits = sign;
  else {  // subnormal: normalise
    int e = 113;
    while (!(man & 1024)) man <<= 1, --e;
    bits = sign | (uint32_t(e) << 23) | ((man & 1023) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float bf16_to_float(uint16_t b) {
  uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace slimpack
