// Kernels with per-function target attributes; one copy per SIMD level, picked at run time.
#include "ckernels.h"
#include <string.h>
#include <stdlib.h>
#include <math.h>

#include "ck_common.h"

// ---------------------------------------------------------------- scalar helpers


static inline uint16_t float_to_half_sw(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // overflow after rounding
    if (absx < 0x38800000u) {                                    // subnormal or zero in half
        if (absx < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e;  // 14 + (113 - e) ... places the value as a half subnormal
        uint32_t r = m >> (shift - 10 + 0);
        (void)r;
        // exact round-to-nearest-even via float arithmetic
        float v;
        memcpy(&v, &absx, 4);
        float scaled = v * 16777216.0f;  // 2^24: half subnormal unit is 2^-24
        uint32_t q = (uint32_t)scaled;
        float rem = scaled - (float)q;
        if (rem > 0.5f || (rem == 0.5f && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t e = ((absx >> 23) - 127 + 15);
    uint32_t m = absx & 0x7fffff;
    uint32_t h = (e << 10) | (m >> 13);
    uint32_t rest = m & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// ---------------------------------------------------------------- generic versions

static void f16_to_f32_generic(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = h2f(src[i]);
}

// Dot product in 8 interleaved partial sums (lane j takes elements i ≡ j mod 8), reduced in hsum256's order
// (j + j+4, then (0+1) + (2+3)), then the k mod 8 tail in order: the portable mat-vecs and GEMM share it, so a
// token's outputs have the same bits whichever of them computes it. LOAD converts one weight to float.
#define CK_DOT8_GENERIC(NAME, TW, LOAD)                                                                        \
    static inline float NAME(const TW *w, const float *x, size_t k) {                                          \
        float p[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                                 \
        size_t i = 0;                                                                                          \
        for (; i + 8 <= k; i += 8)                                                                             \
            for (int j = 0; j < 8; j++) p[j] += LOAD(w[i + j]) * x[i + j];                                     \
        float acc = ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));                        \
        for (; i < k; i++) acc += LOAD(w[i]) * x[i];                                                           \
        return acc;                                                                                            \
    }
#define CK_ID_GENERIC(v) (v)
CK_DOT8_GENERIC(dot8_f32_generic, float, CK_ID_GENERIC)
CK_DOT8_GENERIC(dot8_f16_generic, uint16_t, h2f)
CK_DOT8_GENERIC(dot8_bf16_generic, uint16_t, bf16_to_float)

static float dot_f32_generic(const float *a, const float *b, size_t n) { return dot8_f32_generic(a, b, n); }

static void matvec_f16_generic(const uint16_t *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) y[r] = dot8_f16_generic(w + r * k, x, k);
}

static void matvec_f32_generic(const float *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) y[r] = dot8_f32_generic(w + r * k, x, k);
}

static void matvec_bf16_generic(const uint16_t *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) y[r] = dot8_bf16_generic(w + r * k, x, k);
}

// Portable prefill GEMM: each output is dot8_f32_generic of its row and token (the mat-vec's bits, whatever T).
// f16 rows are converted once per row into a small buffer (exact), then read by every token from L1.
static void gemm_f32_generic(const float *w, size_t ldw, const float *x, size_t ldx, float *out, size_t ldo, size_t T,
                             size_t k, size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++)
        for (size_t t = 0; t < T; t++) out[t * ldo + r] = dot8_f32_generic(w + r * ldw, x + t * ldx, k);
}

static void gemm_f16_generic(const uint16_t *w, const float *x, size_t ldx, float *out, size_t ldo, size_t T,
                             size_t k, size_t r0, size_t r1) {
    float stackRow[4096];
    float *row = k <= 4096 ? stackRow : malloc(k * sizeof(float));
    if (!row) {  // no memory for the row: convert on the fly (the same values, so the same bits)
        for (size_t r = r0; r < r1; r++)
            for (size_t t = 0; t < T; t++) out[t * ldo + r] = dot8_f16_generic(w + r * k, x + t * ldx, k);
        return;
    }
    for (size_t r = r0; r < r1; r++) {
        f16_to_f32_generic(w + r * k, row, k);
        for (size_t t = 0; t < T; t++) out[t * ldo + r] = dot8_f32_generic(row, x + t * ldx, k);
    }
    if (row != stackRow) free(row);
}

static void axpy_f32_generic(float a, const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

#ifdef CK_X86
// ---------------------------------------------------------------- AVX2 + F16C + FMA

TGT_AVX2 static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    __m128 sh = _mm_movehdup_ps(lo);
    __m128 s = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, s);
    s = _mm_add_ss(s, sh);
    return _mm_cvtss_f32(s);
}

TGT_AVX2 static void f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = h2f(src[i]);
}

TGT_AVX2 static void f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = float_to_half_sw(src[i]);
}

TGT_AVX2 static float dot_f32_avx2(const float *a, const float *b, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float acc = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) acc += a[i] * b[i];
    return acc;
}

// Four rows per pass, one 8-wide accumulator each (then a scalar tail): on the AVX2 path this beat the one-row
// loop (27-30 vs 20-23 GB/s on 7B f16 rows, 2 threads, in a slow-memory sitting).
#define CK_ROWS4_256(NAME, T, LOAD, SCALAR)                                                                        \
    TGT_AVX2 static inline float NAME##_row(const T *row, const float *x, size_t k) {                            \
        __m256 s = _mm256_setzero_ps();                                                                           \
        size_t i = 0;                                                                                             \
        for (; i + 8 <= k; i += 8) s = _mm256_fmadd_ps(LOAD(row + i), _mm256_loadu_ps(x + i), s);                \
        float acc = hsum256(s);                                                                                   \
        for (; i < k; i++) acc = fmaf(SCALAR(row[i]), x[i], acc);                                                          \
        return acc;                                                                                               \
    }                                                                                                             \
    TGT_AVX2 static void NAME(const T *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {             \
        size_t r = r0;                                                                                            \
        for (; r + 4 <= r1; r += 4) {                                                                             \
            const T *a = w + r * k, *b = a + k, *c = b + k, *d = c + k;                                           \
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps(); \
            size_t i = 0;                                                                                         \
            for (; i + 8 <= k; i += 8) {                                                                          \
                __m256 xv = _mm256_loadu_ps(x + i);                                                               \
                s0 = _mm256_fmadd_ps(LOAD(a + i), xv, s0);                                                        \
                s1 = _mm256_fmadd_ps(LOAD(b + i), xv, s1);                                                        \
                s2 = _mm256_fmadd_ps(LOAD(c + i), xv, s2);                                                        \
                s3 = _mm256_fmadd_ps(LOAD(d + i), xv, s3);                                                        \
            }                                                                                                     \
            float y0 = hsum256(s0), y1 = hsum256(s1), y2 = hsum256(s2), y3 = hsum256(s3);                         \
            for (size_t j = i; j < k; j++) {                                                                      \
                y0 = fmaf(SCALAR(a[j]), x[j], y0); y1 = fmaf(SCALAR(b[j]), x[j], y1);                             \
                y2 = fmaf(SCALAR(c[j]), x[j], y2); y3 = fmaf(SCALAR(d[j]), x[j], y3);                             \
            }                                                                                                     \
            y[r] = y0; y[r + 1] = y1; y[r + 2] = y2; y[r + 3] = y3;                                               \
        }                                                                                                         \
        for (; r < r1; r++) y[r] = NAME##_row(w + r * k, x, k);                                                   \
    }

#define CK_LOAD_F16_256(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define CK_LOAD_BF16_256(p) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
#define CK_LOAD_F32_256(p) _mm256_loadu_ps(p)
#define CK_ID256(v) (v)
CK_ROWS4_256(matvec_f16_avx2, uint16_t, CK_LOAD_F16_256, h2f)
CK_ROWS4_256(matvec_bf16_avx2, uint16_t, CK_LOAD_BF16_256, bf16_to_float)
CK_ROWS4_256(matvec_f32_avx2, float, CK_LOAD_F32_256, CK_ID256)

// Full unrolling keeps the accumulator arrays in registers (otherwise clang zeroed a 1.5 KB stack copy per call).
#define CK_UNROLL _Pragma("clang loop unroll(full)")

// ---------------------------------------------------------------- prefill GEMM (AVX2)
// out[t][r] = dot(W[r], x[t]) for blocks of 4 weight rows (or 1) and up to 3 tokens: each output is one 8-wide
// FMA chain along k, reduced by hsum256, then the k % 8 tail by scalar fmaf — the arithmetic of the mat-vecs
// above, so a token's outputs have the same bits whether it goes through the mat-vec (T <= 16) or this GEMM, and
// whatever the other tokens of the call. Each weight vector is loaded (and converted) once for all tokens of the
// block.
#define CK_GEMM_UK_256(NAME, TW, LOAD, SCALAR, R, NT)                                                          \
    TGT_AVX2 static void NAME##_##R##x##NT(const TW *w, size_t ldw, const float *x, size_t ldx, size_t k,      \
                                           float *c, size_t ldc) {                                             \
        __m256 a[NT][R];                                                                                       \
        CK_UNROLL for (int t = 0; t < NT; t++)                                                                 \
            CK_UNROLL for (int r = 0; r < R; r++) a[t][r] = _mm256_setzero_ps();                               \
        size_t i = 0;                                                                                          \
        for (; i + 8 <= k; i += 8) {                                                                           \
            __m256 xv[NT];                                                                                     \
            CK_UNROLL for (int t = 0; t < NT; t++) xv[t] = _mm256_loadu_ps(x + t * ldx + i);                   \
            CK_UNROLL for (int r = 0; r < R; r++) {                                                            \
                __m256 v = LOAD(w + r * ldw + i);                                                              \
                CK_UNROLL for (int t = 0; t < NT; t++) a[t][r] = _mm256_fmadd_ps(v, xv[t], a[t][r]);           \
            }                                                                                                  \
        }                                                                                                      \
        CK_UNROLL for (int t = 0; t < NT; t++)                                                                 \
            CK_UNROLL for (int r = 0; r < R; r++) {                                                            \
                float y = hsum256(a[t][r]);                                                                    \
                for (size_t j = i; j < k; j++) y = fmaf(SCALAR(w[r * ldw + j]), x[t * ldx + j], y);            \
                c[t * ldc + r] = y;                                                                            \
            }                                                                                                  \
    }
// NTMAX tokens per pass: 3 for f32 rows (12 accumulators, 3 token vectors, 1 weight: the 16 registers); 2 for f16,
// whose conversion needs a register more (at 3, clang spilled an accumulator in the loop: 7.3 tokens/s on a 7B
// f16 prefill of 64 tokens against 12.7 at 2 and OpenBLAS's 9.8, AVX2 path of a Zen 4).
#define CK_GEMM_FAMILY_256(NAME, TW, LOAD, SCALAR, NTMAX)                                                      \
    CK_GEMM_UK_256(NAME, TW, LOAD, SCALAR, 4, 1) CK_GEMM_UK_256(NAME, TW, LOAD, SCALAR, 4, 2)                  \
    CK_GEMM_UK_256(NAME, TW, LOAD, SCALAR, 4, 3) CK_GEMM_UK_256(NAME, TW, LOAD, SCALAR, 1, 1)                  \
    CK_GEMM_UK_256(NAME, TW, LOAD, SCALAR, 1, 2) CK_GEMM_UK_256(NAME, TW, LOAD, SCALAR, 1, 3)                  \
    typedef void (*NAME##_fn)(const TW *, size_t, const float *, size_t, size_t, float *, size_t);            \
    static const NAME##_fn NAME##_4[4] = {0, NAME##_4x1, NAME##_4x2, NAME##_4x3};                              \
    static const NAME##_fn NAME##_1[4] = {0, NAME##_1x1, NAME##_1x2, NAME##_1x3};                              \
    /* Panels of up to 32 rows (about 256 KB) stay in L2 while every token passes over them. */              \
    static void NAME(const TW *w, size_t ldw, const float *x, size_t ldx, float *out, size_t ldo, size_t T,   \
                     size_t k, size_t r0, size_t r1) {                                                         \
        size_t pr = ((256u << 10) / (k * sizeof(TW) + 1)) & ~(size_t)3;                                        \
        pr = pr < 4 ? 4 : pr > 32 ? 32 : pr;                                                                   \
        for (size_t p0 = r0; p0 < r1; p0 += pr) {                                                              \
            size_t p1 = p0 + pr < r1 ? p0 + pr : r1;                                                           \
            for (size_t t = 0; t < T; t += NTMAX) {                                                            \
                size_t nt = T - t < NTMAX ? T - t : NTMAX;                                                     \
                size_t r = p0;                                                                                 \
                for (; r + 4 <= p1; r += 4) NAME##_4[nt](w + r * ldw, ldw, x + t * ldx, ldx, k, out + t * ldo + r, ldo); \
                for (; r < p1; r++) NAME##_1[nt](w + r * ldw, ldw, x + t * ldx, ldx, k, out + t * ldo + r, ldo); \
            }                                                                                                  \
        }                                                                                                      \
    }
CK_GEMM_FAMILY_256(gemm_f16_avx2, uint16_t, CK_LOAD_F16_256, h2f, 2)
CK_GEMM_FAMILY_256(gemm_f32_avx2, float, CK_LOAD_F32_256, CK_ID256, 3)

TGT_AVX2 static void axpy_f32_avx2(float a, const float *x, float *y, size_t n) {
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

// ---------------------------------------------------------------- AVX-512

TGT_AVX512 static float dot_f32_avx512(const float *a, const float *b, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    float acc = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    for (; i < n; i++) acc += a[i] * b[i];
    return acc;
}



// One row at a time with four accumulators over 64-wide steps (then 16-wide steps into the first, and a scalar
// tail): on Zen 4 this streams 7B f16 rows at the measured read bandwidth (47.6 of 48 GB/s, 2 threads), where
// four rows of one accumulator each reached 38.5 and the old one-row ymm loop 75%. A row's value depends only on
// the row, never on which rows share a call: the wide-input path below gives every row the same accumulators, the
// same order of additions and the same tail (`NAME##_finish`) as the one-row loop.
// Wide inputs (x beyond ~24 KB of floats, e.g. 7B's down projection, K = 11008: 44 KB against a 32 KB L1) take six
// rows per pass, so each x line comes from L2 once per six rows instead of once per row: in a C harness over the 7B
// f16 file's pages (2 threads, 12 GB per pass) K = 11008 streamed at 24-25 GB/s one row at a time, whatever the
// machine's bandwidth mode, and at 35 (low mode, = a plain read) / 42-44 GB/s (high mode, read 51-53) six at a time
// (four: 34 / 40, three: 35 / 35). At K = 4096 the one-row loop stays (x fits in L1).
#define CK_ROWS_WIDE_K 6144
#define CK_ROWS_512(NAME, T, LOAD, SCALAR)                                                                         \
    TGT_AVX512 static inline __attribute__((always_inline)) float NAME##_finish(const T *row, const float *x,     \
            size_t i, size_t k, __m512 s0, __m512 s1, __m512 s2, __m512 s3) {                                     \
        for (; i + 16 <= k; i += 16) s0 = _mm512_fmadd_ps(LOAD(row + i), _mm512_loadu_ps(x + i), s0);           \
        float acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));           \
        for (; i < k; i++) acc = fmaf(SCALAR(row[i]), x[i], acc);                                                 \
        return acc;                                                                                               \
    }                                                                                                             \
    TGT_AVX512 static void NAME(const T *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {           \
        size_t r = r0;                                                                                            \
        if (k >= CK_ROWS_WIDE_K) {                                                                                \
            for (; r + 6 <= r1; r += 6) {                                                                         \
                const T *a = w + r * k;                                                                           \
                __m512 s[6][4];                                                                                   \
                CK_UNROLL for (int q = 0; q < 6; q++)                                                             \
                    CK_UNROLL for (int u = 0; u < 4; u++) s[q][u] = _mm512_setzero_ps();                          \
                size_t i = 0;                                                                                     \
                for (; i + 64 <= k; i += 64) {                                                                    \
                    CK_UNROLL for (int u = 0; u < 4; u++) {                                                       \
                        __m512 xv = _mm512_loadu_ps(x + i + 16 * u);                                              \
                        CK_UNROLL for (int q = 0; q < 6; q++)                                                     \
                            s[q][u] = _mm512_fmadd_ps(LOAD(a + q * k + i + 16 * u), xv, s[q][u]);                 \
                    }                                                                                             \
                }                                                                                                 \
                for (int q = 0; q < 6; q++) y[r + q] = NAME##_finish(a + q * k, x, i, k, s[q][0], s[q][1], s[q][2], s[q][3]); \
            }                                                                                                     \
        }                                                                                                         \
        for (; r < r1; r++) {                                                                                     \
            const T *row = w + r * k;                                                                             \
            __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps(); \
            size_t i = 0;                                                                                         \
            for (; i + 64 <= k; i += 64) {                                                                        \
                s0 = _mm512_fmadd_ps(LOAD(row + i), _mm512_loadu_ps(x + i), s0);                                  \
                s1 = _mm512_fmadd_ps(LOAD(row + i + 16), _mm512_loadu_ps(x + i + 16), s1);                        \
                s2 = _mm512_fmadd_ps(LOAD(row + i + 32), _mm512_loadu_ps(x + i + 32), s2);                        \
                s3 = _mm512_fmadd_ps(LOAD(row + i + 48), _mm512_loadu_ps(x + i + 48), s3);                        \
            }                                                                                                     \
            y[r] = NAME##_finish(row, x, i, k, s0, s1, s2, s3);                                                   \
        }                                                                                                         \
    }

#define CK_LOAD_F16_512(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define CK_LOAD_BF16_512(p) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(p))), 16))
#define CK_LOAD_F32_512(p) _mm512_loadu_ps(p)
#define CK_ID(v) (v)
CK_ROWS_512(matvec_f16_avx512, uint16_t, CK_LOAD_F16_512, h2f)
CK_ROWS_512(matvec_bf16_avx512, uint16_t, CK_LOAD_BF16_512, bf16_to_float)
CK_ROWS_512(matvec_f32_avx512, float, CK_LOAD_F32_512, CK_ID)

// Lane j of the result = _mm512_reduce_add_ps(sp[j]), bit for bit: one transposing tree that pairs lanes as the
// intrinsic does (v_j + v_j+8, then + 4, + 2, + 1; the attention scores and the f32/f16 GEMMs built on it were
// checked byte for byte against the per-vector reductions in a C harness), ~3 shuffles and 1 add per vector
// instead of 7 narrow dependent steps each.
TGT_AVX512 static inline __attribute__((always_inline)) __m512 hsum16_avx512(const __m512 sp[16]) {
    __m512 t[8], u[4], w[2];
    for (int i = 0; i < 8; i++)
        t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(sp[i], sp[i + 8], 0x44), _mm512_shuffle_f32x4(sp[i], sp[i + 8], 0xEE));
    for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[i], t[i + 4], 0x88), _mm512_shuffle_f32x4(t[i], t[i + 4], 0xDD));
    for (int i = 0; i < 2; i++)
        w[i] = _mm512_castpd_ps(_mm512_castps_pd(_mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(u[i]), _mm512_castps_pd(u[i + 2]))),
            _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(u[i]), _mm512_castps_pd(u[i + 2]))))));
    __m512 r = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xDD));
    // Lane 4L + m holds position [0, 8, 4, 12][L] + [0, 2, 1, 3][m].
    __m512i idx = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
    return _mm512_permutexvar_ps(idx, r);
}

// ---------------------------------------------------------------- prefill GEMM (AVX-512)
// out[t][r] = dot(W[r], x[t]) for a block of 4 weight rows (or 1) and up to 6 tokens: 24 accumulators take
// 16-wide steps along k, each weight vector is loaded (and converted from f16) once for all tokens, and the
// sums are reduced once at the end. No packing: OpenBLAS repacked every converted tile for every call, which
// at prefill sizes (M = tokens <= 512) cost it half its speed. The tail of k goes through masked loads, whose
// zero lanes add nothing, so any k works.
#define CK_LD_F16_M(p, m) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((m), (p)))
#define CK_LD_F32_M(p, m) _mm512_maskz_loadu_ps((m), (p))
#define CK_GEMM_UK(NAME, TW, LOAD, LOADM, R, NT)                                                               \
    TGT_AVX512 static void NAME##_##R##x##NT(const TW *w, size_t ldw, const float *x, size_t ldx, size_t k,    \
                                             float *c, size_t ldc) {                                           \
        __m512 a[NT][R];                                                                                       \
        CK_UNROLL for (int t = 0; t < NT; t++)                                                                 \
            CK_UNROLL for (int r = 0; r < R; r++) a[t][r] = _mm512_setzero_ps();                               \
        size_t i = 0;                                                                                          \
        for (; i + 16 <= k; i += 16) {                                                                         \
            __m512 v[R];                                                                                       \
            CK_UNROLL for (int r = 0; r < R; r++) v[r] = LOAD(w + r * ldw + i);                                \
            CK_UNROLL for (int t = 0; t < NT; t++) {                                                           \
                __m512 xv = _mm512_loadu_ps(x + t * ldx + i);                                                  \
                CK_UNROLL for (int r = 0; r < R; r++) a[t][r] = _mm512_fmadd_ps(v[r], xv, a[t][r]);            \
            }                                                                                                  \
        }                                                                                                      \
        if (i < k) {                                                                                           \
            __mmask16 m = (__mmask16)((1u << (k - i)) - 1);                                                    \
            __m512 v[R];                                                                                       \
            CK_UNROLL for (int r = 0; r < R; r++) v[r] = LOADM(w + r * ldw + i, m);                            \
            CK_UNROLL for (int t = 0; t < NT; t++) {                                                           \
                __m512 xv = _mm512_maskz_loadu_ps(m, x + t * ldx + i);                                         \
                CK_UNROLL for (int r = 0; r < R; r++) a[t][r] = _mm512_fmadd_ps(v[r], xv, a[t][r]);            \
            }                                                                                                  \
        }                                                                                                      \
        if (R == 4) {                                                                                          \
            /* Four tokens' 4 rows per transposing tree: lanes 4t..4t+3 are token t's, stored by one masked */ \
            /* store each (the pointer is offset back so the kept lanes land at c[t][0..3]). */                \
            CK_UNROLL for (int t0 = 0; t0 < NT; t0 += 4) {                                                     \
                __m512 sp[16];                                                                                 \
                CK_UNROLL for (int j = 0; j < 16; j++)                                                         \
                    sp[j] = t0 + j / 4 < NT ? a[(t0 + j / 4) % NT][j % R] : _mm512_setzero_ps();               \
                __m512 s = hsum16_avx512(sp);                                                                  \
                CK_UNROLL for (int t = t0; t < NT && t < t0 + 4; t++)                                          \
                    _mm512_mask_storeu_ps(c + t * ldc - 4 * (t - t0), (__mmask16)(0xFu << (4 * (t - t0))), s); \
            }                                                                                                  \
        } else {                                                                                               \
            CK_UNROLL for (int t = 0; t < NT; t++)                                                             \
                CK_UNROLL for (int r = 0; r < R; r++) c[t * ldc + r] = _mm512_reduce_add_ps(a[t][r]);          \
        }                                                                                                      \
    }
#define CK_GEMM_FAMILY(NAME, TW, LOAD, LOADM)                                                                  \
    CK_GEMM_UK(NAME, TW, LOAD, LOADM, 4, 1) CK_GEMM_UK(NAME, TW, LOAD, LOADM, 4, 2)                            \
    CK_GEMM_UK(NAME, TW, LOAD, LOADM, 4, 3) CK_GEMM_UK(NAME, TW, LOAD, LOADM, 4, 4)                            \
    CK_GEMM_UK(NAME, TW, LOAD, LOADM, 4, 5) CK_GEMM_UK(NAME, TW, LOAD, LOADM, 4, 6)                            \
    CK_GEMM_UK(NAME, TW, LOAD, LOADM, 1, 1) CK_GEMM_UK(NAME, TW, LOAD, LOADM, 1, 2)                            \
    CK_GEMM_UK(NAME, TW, LOAD, LOADM, 1, 3) CK_GEMM_UK(NAME, TW, LOAD, LOADM, 1, 4)                            \
    CK_GEMM_UK(NAME, TW, LOAD, LOADM, 1, 5) CK_GEMM_UK(NAME, TW, LOAD, LOADM, 1, 6)                            \
    typedef void (*NAME##_fn)(const TW *, size_t, const float *, size_t, size_t, float *, size_t);            \
    static const NAME##_fn NAME##_4[7] = {0, NAME##_4x1, NAME##_4x2, NAME##_4x3, NAME##_4x4, NAME##_4x5, NAME##_4x6}; \
    static const NAME##_fn NAME##_1[7] = {0, NAME##_1x1, NAME##_1x2, NAME##_1x3, NAME##_1x4, NAME##_1x5, NAME##_1x6}; \
    /* Panels of up to 32 rows (about 512 KB) stay in L2 while every token passes over them. */              \
    static void NAME(const TW *w, size_t ldw, const float *x, size_t ldx, float *out, size_t ldo, size_t T,   \
                     size_t k, size_t r0, size_t r1) {                                                         \
        size_t pr = ((512u << 10) / (k * sizeof(TW) + 1)) & ~(size_t)3;                                        \
        pr = pr < 4 ? 4 : pr > 32 ? 32 : pr;                                                                   \
        for (size_t p0 = r0; p0 < r1; p0 += pr) {                                                              \
            size_t p1 = p0 + pr < r1 ? p0 + pr : r1;                                                           \
            for (size_t t = 0; t < T; t += 6) {                                                                \
                size_t nt = T - t < 6 ? T - t : 6;                                                             \
                size_t r = p0;                                                                                 \
                for (; r + 4 <= p1; r += 4) NAME##_4[nt](w + r * ldw, ldw, x + t * ldx, ldx, k, out + t * ldo + r, ldo); \
                for (; r < p1; r++) NAME##_1[nt](w + r * ldw, ldw, x + t * ldx, ldx, k, out + t * ldo + r, ldo); \
            }                                                                                                  \
        }                                                                                                      \
    }
CK_GEMM_FAMILY(gemm_f16_avx512, uint16_t, CK_LOAD_F16_512, CK_LD_F16_M)
CK_GEMM_FAMILY(gemm_f32_avx512, float, CK_LOAD_F32_512, CK_LD_F32_M)
#endif

// ---------------------------------------------------------------- dispatch

static int g_level = -1, g_vnni = -1;

// LLAMA_ADAPTER_SIMD caps the kernels' instruction set (lower only), so one machine can run and measure every
// path below its own: generic < avx2 < avx512 < vnni on x86. Returns the cap's rank, or 3 (none) when unset or
// unknown (the Swift side rejects unknown values with a clear error before any kernel runs).
static int simd_cap(void) {
    const char *e = getenv("LLAMA_ADAPTER_SIMD");
    if (!e || !*e) return 3;
    if (!strcmp(e, "generic")) return 0;
    if (!strcmp(e, "avx2")) return 1;
    if (!strcmp(e, "avx512")) return 2;
    return 3;
}

int ck_cpu_level(void) {
    if (g_level >= 0) return g_level;
    int l = CK_GENERIC;
#ifdef CK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) l = CK_AVX2;
    if (l == CK_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) l = CK_AVX512;
#endif
    int cap = simd_cap();
    if (cap < 3 && l > cap) l = cap;
    g_level = l;
    return l;
}

int ck_cpu_has_vnni(void) {
    if (g_vnni >= 0) return g_vnni;
    int v = 0;
#ifdef CK_X86
    __builtin_cpu_init();
    v = __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") && ck_cpu_level() >= CK_AVX512;
#endif
    if (simd_cap() < 3) v = 0;
    g_vnni = v;
    return v;
}

static inline int level(void) { return ck_cpu_level(); }

const char *ck_simd_level(void) {
    switch (level()) {
    case CK_AVX512: return ck_cpu_has_vnni() ? "vnni" : "avx512";
    case CK_AVX2: return "avx2";
    default: return "generic";
    }
}

void ck_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
#ifdef CK_X86
    if (level() >= CK_AVX2) { f16_to_f32_avx2(src, dst, n); return; }
#endif
    f16_to_f32_generic(src, dst, n);
}

void ck_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
#ifdef CK_X86
    if (level() >= CK_AVX2) { f32_to_f16_avx2(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = float_to_half_sw(src[i]);
}

void ck_bf16_to_f32(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_float(src[i]);
}

void ck_matvec_f16(const uint16_t *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
#ifdef CK_X86
    int l = level();
    if (l >= CK_AVX512) { matvec_f16_avx512(w, x, y, k, r0, r1); return; }
    if (l >= CK_AVX2) { matvec_f16_avx2(w, x, y, k, r0, r1); return; }
#endif
    matvec_f16_generic(w, x, y, k, r0, r1);
}

void ck_matvec_f32(const float *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
#ifdef CK_X86
    int l = level();
    if (l >= CK_AVX512) { matvec_f32_avx512(w, x, y, k, r0, r1); return; }
    if (l >= CK_AVX2) { matvec_f32_avx2(w, x, y, k, r0, r1); return; }
#endif
    matvec_f32_generic(w, x, y, k, r0, r1);
}

void ck_matvec_bf16(const uint16_t *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
#ifdef CK_X86
    int l = level();
    if (l >= CK_AVX512) { matvec_bf16_avx512(w, x, y, k, r0, r1); return; }
    if (l >= CK_AVX2) { matvec_bf16_avx2(w, x, y, k, r0, r1); return; }
#endif
    matvec_bf16_generic(w, x, y, k, r0, r1);
}

void ck_gemm_f16(const uint16_t *w, const float *x, size_t ldx, float *out, size_t ldo, size_t T, size_t k, size_t r0, size_t r1) {
#ifdef CK_X86
    if (level() >= CK_AVX512) { gemm_f16_avx512(w, k, x, ldx, out, ldo, T, k, r0, r1); return; }
    if (level() >= CK_AVX2) { gemm_f16_avx2(w, k, x, ldx, out, ldo, T, k, r0, r1); return; }
#endif
    gemm_f16_generic(w, x, ldx, out, ldo, T, k, r0, r1);
}

void ck_gemm_f32(const float *w, size_t ldw, const float *x, size_t ldx, float *out, size_t ldo, size_t T, size_t k, size_t r0, size_t r1) {
#ifdef CK_X86
    if (level() >= CK_AVX512) { gemm_f32_avx512(w, ldw, x, ldx, out, ldo, T, k, r0, r1); return; }
    if (level() >= CK_AVX2) { gemm_f32_avx2(w, ldw, x, ldx, out, ldo, T, k, r0, r1); return; }
#endif
    gemm_f32_generic(w, ldw, x, ldx, out, ldo, T, k, r0, r1);
}

float ck_dot_f32(const float *a, const float *b, size_t n) {
#ifdef CK_X86
    int l = level();
    if (l >= CK_AVX512) return dot_f32_avx512(a, b, n);
    if (l >= CK_AVX2) return dot_f32_avx2(a, b, n);
#endif
    return dot_f32_generic(a, b, n);
}

void ck_axpy_f32(float a, const float *x, float *y, size_t n) {
#ifdef CK_X86
    if (level() >= CK_AVX2) { axpy_f32_avx2(a, x, y, n); return; }
#endif
    axpy_f32_generic(a, x, y, n);
}

// ---------------------------------------------------------------- attention

// The sum in 8 interleaved partial sums reduced as hsum256 pairs them (j + j+4, then 0+1 and 2+3): one chain of
// n dependent adds lost up to n ulps at long rows, and this way the portable path gives the AVX2 path's bits.
static void softmax_generic(float *x, size_t n) {
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++) if (x[i] > m) m = x[i];
    float p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) { float e = expf(x[i] - m); x[i] = e; p[i % 8] += e; }
    float q0 = p[0] + p[4], q1 = p[1] + p[5], q2 = p[2] + p[6], q3 = p[3] + p[7];
    float inv = 1.0f / ((q0 + q1) + (q2 + q3));
    for (size_t i = 0; i < n; i++) x[i] *= inv;
}

#ifdef CK_X86
// ---------------------------------------------------------------- e^x, 16 lanes
// glibc's expf as x86-64 runs it wherever AVX-512 exists (its FMA build), lane by lane and bit for bit: checked on
// every float from log(2^-150) to log(2^128) (2.24e9 inputs, 0 differences) and in ExpKernelTests. In double:
// k = round(x·32/ln2) by the 1.5·2^52 shift, r = x·32/ln2 − k as one FMA (the contraction GCC makes there; an
// unfused r differed on 2 inputs), 2^(k/32) from the 32-entry table below with k/32's integer part added to the
// exponent bits, times a cubic in r (FMAs), rounded once to float. The scalar call was 2-4% of a prefill.
static const uint64_t ck_exp2_32nd[32] = {  // bits of 2^(i/32) minus i << 47 (so that adding k << 47 scales by 2^(k/32 - i/32))
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
};

// The lanes of a 16-wide step that hold data when `left` elements remain.
static inline __mmask16 tail16(size_t left) { return left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1); }

TGT_AVX512 static inline __attribute__((always_inline)) __m256 exp8_core_avx512(__m256 xf) {
    const __m512d n_ln2 = _mm512_set1_pd(0x1.71547652b82fep+0 * 32), shift = _mm512_set1_pd(0x1.8p+52);
    // The cubic's coefficients for r in units of 1/32 (ln2/32, (ln2/32)^2/2, ... as fitted for 2^r).
    const __m512d c3 = _mm512_set1_pd(0x1.c6af84b912394p-5 / 32 / 32 / 32);
    const __m512d c2 = _mm512_set1_pd(0x1.ebfce50fac4f3p-3 / 32 / 32), c1 = _mm512_set1_pd(0x1.62e42ff0c52d6p-1 / 32);
    const __m512i t0 = _mm512_loadu_si512(ck_exp2_32nd), t1 = _mm512_loadu_si512(ck_exp2_32nd + 8);
    const __m512i t2 = _mm512_loadu_si512(ck_exp2_32nd + 16), t3 = _mm512_loadu_si512(ck_exp2_32nd + 24);
    __m512d xd = _mm512_cvtps_pd(xf);
    __m512d kd = _mm512_add_pd(_mm512_mul_pd(n_ln2, xd), shift);
    __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, shift);
    __m512d r = _mm512_fmsub_pd(n_ln2, xd, kd);
    __m512i t = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(ki, _mm512_set1_epi64(16)),
                                        _mm512_permutex2var_epi64(t0, ki, t1), _mm512_permutex2var_epi64(t2, ki, t3));
    __m512d s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64(ki, 47)));
    __m512d hi = _mm512_fmadd_pd(c3, r, c2), y = _mm512_fmadd_pd(c1, r, _mm512_set1_pd(1));
    y = _mm512_fmadd_pd(hi, _mm512_mul_pd(r, r), y);
    return _mm512_cvtpd_ps(_mm512_mul_pd(y, s));
}

/// e^x per lane, as glibc's expf: +inf above log(2^128), 0 below log(2^-150) (and for -inf), NaN stays NaN.
TGT_AVX512 static inline __attribute__((always_inline)) __m512 expf16_avx512(__m512 x) {
    __m256 lo = exp8_core_avx512(_mm512_castps512_ps256(x));
    __m256 hi = exp8_core_avx512(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    __m512 e = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
    __mmask16 over = _mm512_cmp_ps_mask(x, _mm512_set1_ps(0x1.62e42ep6f), _CMP_GT_OQ);
    __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-0x1.9fe368p6f), _CMP_LT_OQ);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    e = _mm512_mask_blend_ps(over, e, _mm512_set1_ps(INFINITY));
    e = _mm512_mask_blend_ps(under, e, _mm512_setzero_ps());
    return _mm512_mask_blend_ps(nan, e, _mm512_add_ps(x, x));
}

TGT_AVX512 static void expf_avx512(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        _mm512_mask_storeu_ps(y + i, m, expf16_avx512(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

// ---------------------------------------------------------------- e^x, 8 lanes (AVX2)
// The same computation as exp8_core_avx512 (glibc's FMA expf, bit for bit), in two 4-lane double halves; the
// table lookup is a gather of k mod 32.
TGT_AVX2 static inline __attribute__((always_inline)) __m256d exp4_core_avx2(__m128 xf) {
    const __m256d n_ln2 = _mm256_set1_pd(0x1.71547652b82fep+0 * 32), shift = _mm256_set1_pd(0x1.8p+52);
    const __m256d c3 = _mm256_set1_pd(0x1.c6af84b912394p-5 / 32 / 32 / 32);
    const __m256d c2 = _mm256_set1_pd(0x1.ebfce50fac4f3p-3 / 32 / 32), c1 = _mm256_set1_pd(0x1.62e42ff0c52d6p-1 / 32);
    __m256d xd = _mm256_cvtps_pd(xf);
    __m256d kd = _mm256_add_pd(_mm256_mul_pd(n_ln2, xd), shift);
    __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, shift);
    __m256d r = _mm256_fmsub_pd(n_ln2, xd, kd);
    __m256i t = _mm256_i64gather_epi64((const long long *)ck_exp2_32nd, _mm256_and_si256(ki, _mm256_set1_epi64x(31)), 8);
    __m256d sc = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64(ki, 47)));
    __m256d hi = _mm256_fmadd_pd(c3, r, c2), y = _mm256_fmadd_pd(c1, r, _mm256_set1_pd(1));
    y = _mm256_fmadd_pd(hi, _mm256_mul_pd(r, r), y);
    return _mm256_mul_pd(y, sc);
}

/// e^x per lane, as glibc's expf: +inf above log(2^128), 0 below log(2^-150) (and for -inf), NaN stays NaN.
TGT_AVX2 static inline __attribute__((always_inline)) __m256 expf8_avx2(__m256 x) {
    __m128 lo = _mm256_cvtpd_ps(exp4_core_avx2(_mm256_castps256_ps128(x)));
    __m128 hi = _mm256_cvtpd_ps(exp4_core_avx2(_mm256_extractf128_ps(x, 1)));
    __m256 e = _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
    __m256 over = _mm256_cmp_ps(x, _mm256_set1_ps(0x1.62e42ep6f), _CMP_GT_OQ);
    __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(-0x1.9fe368p6f), _CMP_LT_OQ);
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    e = _mm256_blendv_ps(e, _mm256_set1_ps(INFINITY), over);
    e = _mm256_blendv_ps(e, _mm256_setzero_ps(), under);
    return _mm256_blendv_ps(e, _mm256_add_ps(x, x), nan);
}

// Lanes of an 8-wide step that hold data when `left` elements remain, for maskload/maskstore.
TGT_AVX2 static inline __m256i tail8(size_t left) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left >= 8 ? 8 : (int)left), idx);
}

TGT_AVX2 static void expf_avx2(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        __m256i m = tail8(n - i);
        _mm256_maskstore_ps(y + i, m, expf8_avx2(_mm256_maskload_ps(x + i, m)));
    }
}

// As softmax_avx512 with 8 lanes: the masked-off lanes load 0 and are zeroed after e^x, so they add nothing.
TGT_AVX2 static void softmax_avx2(float *x, size_t n) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += 8) {
        __m256i m = tail8(n - i);
        mv = _mm256_max_ps(mv, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_maskload_ps(x + i, m), _mm256_castsi256_ps(m)));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    __m256 mx = _mm256_set1_ps(_mm_cvtss_f32(m4)), sum = _mm256_setzero_ps();
    for (size_t i = 0; i < n; i += 8) {
        __m256i m = tail8(n - i);
        __m256 e = _mm256_and_ps(expf8_avx2(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), mx)), _mm256_castsi256_ps(m));
        _mm256_maskstore_ps(x + i, m, e);
        sum = _mm256_add_ps(sum, e);
    }
    __m256 inv = _mm256_set1_ps(1.0f / hsum256(sum));
    for (size_t i = 0; i < n; i += 8) {
        __m256i m = tail8(n - i);
        _mm256_maskstore_ps(x + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), inv));
    }
}

// a / (1 + e^-a) · b in the scalar loop's float operations, so the same bits.
TGT_AVX2 static void swiglu_avx2(float *out, const float *a, const float *b, size_t n) {
    const __m256 one = _mm256_set1_ps(1), sign = _mm256_set1_ps(-0.0f);
    for (size_t i = 0; i < n; i += 8) {
        __m256i m = tail8(n - i);
        __m256 x = _mm256_maskload_ps(a + i, m);
        __m256 e = expf8_avx2(_mm256_xor_ps(x, sign));
        _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_maskload_ps(b + i, m)));
    }
}

// x / (1 + e^(-1.702·x)) in place, the scalar loop's float operations (CLIP's QuickGELU), so the same bits.
TGT_AVX2 static void quick_gelu_avx2(float *x, size_t n) {
    const __m256 one = _mm256_set1_ps(1), c = _mm256_set1_ps(-1.702f);
    for (size_t i = 0; i < n; i += 8) {
        __m256i m = tail8(n - i);
        __m256 v = _mm256_maskload_ps(x + i, m);
        _mm256_maskstore_ps(x + i, m, _mm256_div_ps(v, _mm256_add_ps(one, expf8_avx2(_mm256_mul_ps(c, v)))));
    }
}

// The maximum and the exponentials lane-parallel; the sum in 16 lanes, reduced at the end (the scalar loop's one
// chain of dependent adds cost as much as its expf calls). Same result to an ulp or so of the sum, not the same bits.
TGT_AVX512 static void softmax_avx512(float *x, size_t n) {
    __m512 mv = _mm512_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, x + i));
    }
    __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(mv)), sum = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m512 e = _mm512_maskz_mov_ps(m, expf16_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mx)));
        _mm512_mask_storeu_ps(x + i, m, e);
        sum = _mm512_add_ps(sum, e);
    }
    __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
    }
}

// a / (1 + e^-a) · b in the scalar loop's float operations, so the same bits.
TGT_AVX512 static void swiglu_avx512(float *out, const float *a, const float *b, size_t n) {
    const __m512 one = _mm512_set1_ps(1);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m512 x = _mm512_maskz_loadu_ps(m, a + i);
        __m512 e = expf16_avx512(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u))));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, b + i)));
    }
}

// x / (1 + e^(-1.702·x)) in place, the scalar loop's float operations (CLIP's QuickGELU), so the same bits.
TGT_AVX512 static void quick_gelu_avx512(float *x, size_t n) {
    const __m512 one = _mm512_set1_ps(1), c = _mm512_set1_ps(-1.702f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail16(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_div_ps(v, _mm512_add_ps(one, expf16_avx512(_mm512_mul_ps(c, v)))));
    }
}
#endif

void ck_quick_gelu(float *x, size_t n) {
#ifdef CK_X86
    if (level() >= CK_AVX512) { quick_gelu_avx512(x, n); return; }
    if (level() >= CK_AVX2) { quick_gelu_avx2(x, n); return; }
#endif
    for (size_t i = 0; i < n; i++) { float v = x[i]; x[i] = v / (1 + expf(-1.702f * v)); }
}

void ck_softmax(float *x, size_t n) {
#ifdef CK_X86
    if (level() >= CK_AVX512) { softmax_avx512(x, n); return; }
    if (level() >= CK_AVX2) { softmax_avx2(x, n); return; }
#endif
    softmax_generic(x, n);
}

void ck_expf(const float *x, float *y, size_t n) {
#ifdef CK_X86
    if (level() >= CK_AVX512) { expf_avx512(x, y, n); return; }
    if (level() >= CK_AVX2) { expf_avx2(x, y, n); return; }
#endif
    for (size_t i = 0; i < n; i++) y[i] = expf(x[i]);
}

void ck_swiglu(float *out, const float *a, const float *b, size_t n) {
#ifdef CK_X86
    if (level() >= CK_AVX512) { swiglu_avx512(out, a, b, n); return; }
    if (level() >= CK_AVX2) { swiglu_avx2(out, a, b, n); return; }
#endif
    for (size_t i = 0; i < n; i++) { float x = a[i]; out[i] = x / (1 + expf(-x)) * b[i]; }
}

#ifdef CK_X86
// out[16·c ..] = Σ_p scores[p]·v[p·stride + 16·c ..] for the NC chunks of a head (NC a constant after inlining).
TGT_AVX512 static inline __attribute__((always_inline)) void attend_values_avx512(const float *scores, const float *v, size_t n,
                                                                                 size_t stride, const int NC, float *out) {
    __m512 acc[8];
    for (int c = 0; c < NC; c++) acc[c] = _mm512_setzero_ps();
    for (size_t p = 0; p < n; p++) {
        __m512 s = _mm512_set1_ps(scores[p]);
        for (int c = 0; c < NC; c++) acc[c] = _mm512_fmadd_ps(s, _mm512_loadu_ps(v + p * stride + 16 * c), acc[c]);
    }
    for (int c = 0; c < NC; c++) _mm512_storeu_ps(out + 16 * c, acc[c]);
}

// scores[p] = scale·(q·k_p) for 16 positions from p0, NC chunks of 16 per head (a constant after inlining): each
// position's FMA chain as the one-position loop below runs it, and the 16 horizontal sums through one transposing
// tree that pairs lanes exactly as _mm512_reduce_add_ps does (v_j + v_j+8, then + 4, + 2, + 1), so every score has
// the same bits, for ~3 shuffles and 1 add per position instead of 7 narrow steps whose latency chains stalled.
TGT_AVX512 static inline __attribute__((always_inline)) void attend_scores16_avx512(const float *q, const float *k, size_t p0,
                                                                                   size_t stride, const int NC, float scale,
                                                                                   float *scores) {
    __m512 qv[8], sp[16];
    for (int c = 0; c < NC; c++) qv[c] = _mm512_loadu_ps(q + 16 * c);
    for (int p = 0; p < 16; p++) {
        const float *kp = k + (p0 + p) * stride;
        __m512 a = _mm512_setzero_ps();
        for (int c = 0; c < NC; c++) a = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(kp + 16 * c), a);
        sp[p] = a;
    }
    _mm512_storeu_ps(scores + p0, _mm512_mul_ps(hsum16_avx512(sp), _mm512_set1_ps(scale)));
}

TGT_AVX512 static void attend_head_avx512(const float *q, const float *k, const float *v, size_t n, size_t hd, size_t stride,
                                          float scale, float *scores, float *out) {
    size_t p0 = 0;
    if (hd == 64) for (; p0 + 16 <= n; p0 += 16) attend_scores16_avx512(q, k, p0, stride, 4, scale, scores);
    if (hd == 128) for (; p0 + 16 <= n; p0 += 16) attend_scores16_avx512(q, k, p0, stride, 8, scale, scores);
    for (size_t p = p0; p < n; p++) {
        const float *kp = k + p * stride;
        __m512 s = _mm512_setzero_ps();
        for (size_t i = 0; i < hd; i += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(kp + i), s);
        scores[p] = _mm512_reduce_add_ps(s) * scale;
    }
    ck_softmax(scores, n);
    // Positions outer, the head's 16-lane chunks inner: one FMA chain per chunk as before (the same sums in the
    // same order, so the same bits), but the chunks' chains now run side by side instead of one after the other
    // (a chunk-outer loop waited 4 cycles per position and chunk: 20% of a SmolLM2 batch-8 step at 272 positions).
    if (hd == 64) { attend_values_avx512(scores, v, n, stride, 4, out); return; }
    if (hd == 128) { attend_values_avx512(scores, v, n, stride, 8, out); return; }
    for (size_t i = 0; i < hd; i += 16) {
        __m512 acc = _mm512_setzero_ps();
        for (size_t p = 0; p < n; p++) acc = _mm512_fmadd_ps(_mm512_set1_ps(scores[p]), _mm512_loadu_ps(v + p * stride + i), acc);
        _mm512_storeu_ps(out + i, acc);
    }
}
#endif

#ifdef CK_X86
// out[8·c ..] = Σ_p scores[p]·v[p·stride + 8·c ..] for NC chunks of 8 (a constant after inlining, so the
// accumulators stay in registers).
TGT_AVX2 static inline __attribute__((always_inline)) void attend_values_avx2(const float *scores, const float *v, size_t n,
                                                                             size_t stride, const int NC, float *out) {
    __m256 acc[16];
    for (int c = 0; c < NC; c++) acc[c] = _mm256_setzero_ps();
    for (size_t p = 0; p < n; p++) {
        __m256 sp = _mm256_set1_ps(scores[p]);
        for (int c = 0; c < NC; c++) acc[c] = _mm256_fmadd_ps(sp, _mm256_loadu_ps(v + p * stride + 8 * c), acc[c]);
    }
    for (int c = 0; c < NC; c++) _mm256_storeu_ps(out + 8 * c, acc[c]);
}

// One head on AVX2 (hd a multiple of 8): each score one 8-wide FMA chain and hsum256; the values with positions
// outer and the head's 8-lane chunks inner, one accumulator per chunk, so the chunks' chains run side by side.
TGT_AVX2 static void attend_head_avx2(const float *q, const float *k, const float *v, size_t n, size_t hd, size_t stride,
                                      float scale, float *scores, float *out) {
    for (size_t p = 0; p < n; p++) {
        const float *kp = k + p * stride;
        __m256 s = _mm256_setzero_ps();
        for (size_t i = 0; i < hd; i += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(kp + i), s);
        scores[p] = hsum256(s) * scale;
    }
    softmax_avx2(scores, n);
    if (hd == 64) { attend_values_avx2(scores, v, n, stride, 8, out); return; }
    if (hd == 128) { attend_values_avx2(scores, v, n, stride, 16, out); return; }
    for (size_t c = 0; c < hd / 8; c++) attend_values_avx2(scores, v + 8 * c, n, stride, 1, out + 8 * c);
}
#endif

void ck_attend_head(const float *q, const float *k, const float *v, size_t n, size_t hd, size_t stride,
                    float scale, float *scores, float *out) {
#ifdef CK_X86
    if (hd % 16 == 0 && level() >= CK_AVX512) { attend_head_avx512(q, k, v, n, hd, stride, scale, scores, out); return; }
    if (hd % 8 == 0 && level() >= CK_AVX2) { attend_head_avx2(q, k, v, n, hd, stride, scale, scores, out); return; }
#endif
    // One dispatch per head instead of two calls per cached position (decode at 300+ positions was
    // spending 11% of its time in call overhead of tiny dot/axpy calls).
    for (size_t p = 0; p < n; p++) scores[p] = ck_dot_f32(q, k + p * stride, hd) * scale;
    ck_softmax(scores, n);
    memset(out, 0, hd * sizeof(float));
    for (size_t p = 0; p < n; p++) ck_axpy_f32(scores[p], v + p * stride, out, hd);
}
