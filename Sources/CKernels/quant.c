// Block-quantized kernels (ggml layouts, see ggml-common.h): AVX-512, AVX2 and portable versions.
#include "ckquant.h"
#include <string.h>

#include "ck_common.h"

typedef struct { uint16_t d; uint8_t qs[16]; } block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } block_q4_1;
typedef struct { uint16_t d; int8_t qs[32]; } block_q8_0;


// ---------------------------------------------------------------- portable

void ck_block_sums32(const float *x, float *sums, size_t n) {
    for (size_t b = 0; b < n / 32; b++) {
        float s = 0;
        for (int j = 0; j < 32; j++) s += x[b * 32 + j];
        sums[b] = s;
    }
}

static void matvec_q4_0_generic(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q4_0 *b = (const block_q4_0 *)w + r * nb;
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            float s = 0;
            for (int j = 0; j < 16; j++) s += (float)(b[i].qs[j] & 15) * x[i * 32 + j] + (float)(b[i].qs[j] >> 4) * x[i * 32 + j + 16];
            acc += h2f(b[i].d) * (s - 8.0f * xsum[i]);
        }
        y[r] = acc;
    }
}

static void matvec_q4_1_generic(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q4_1 *b = (const block_q4_1 *)w + r * nb;
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            float s = 0;
            for (int j = 0; j < 16; j++) s += (float)(b[i].qs[j] & 15) * x[i * 32 + j] + (float)(b[i].qs[j] >> 4) * x[i * 32 + j + 16];
            acc += h2f(b[i].d) * s + h2f(b[i].m) * xsum[i];
        }
        y[r] = acc;
    }
}

static void matvec_q8_0_generic(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    (void)xsum;
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q8_0 *b = (const block_q8_0 *)w + r * nb;
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            float s = 0;
            for (int j = 0; j < 32; j++) s += (float)b[i].qs[j] * x[i * 32 + j];
            acc += h2f(b[i].d) * s;
        }
        y[r] = acc;
    }
}

static void dequant_q4_0_generic(const void *src, float *dst, size_t n) {
    const block_q4_0 *b = src;
    for (size_t i = 0; i < n / 32; i++) {
        float d = h2f(b[i].d);
        for (int j = 0; j < 16; j++) {
            dst[i * 32 + j] = ((int)(b[i].qs[j] & 15) - 8) * d;
            dst[i * 32 + j + 16] = ((int)(b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_1_generic(const void *src, float *dst, size_t n) {
    const block_q4_1 *b = src;
    for (size_t i = 0; i < n / 32; i++) {
        float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < 16; j++) {
            dst[i * 32 + j] = (b[i].qs[j] & 15) * d + m;
            dst[i * 32 + j + 16] = (b[i].qs[j] >> 4) * d + m;
        }
    }
}

static void dequant_q8_0_generic(const void *src, float *dst, size_t n) {
    const block_q8_0 *b = src;
    for (size_t i = 0; i < n / 32; i++) {
        float d = h2f(b[i].d);
        for (int j = 0; j < 32; j++) dst[i * 32 + j] = b[i].qs[j] * d;
    }
}

#ifdef CK_X86
// ---------------------------------------------------------------- AVX-512
// Per block: expand nibbles (or int8) to f32 in registers, multiply with x, scale by the block's d with
// one FMA into a vector accumulator; the horizontal sum happens once per row, not per block.

TGT_AVX512 static inline __m512 nib_lo(__m128i q) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, _mm_set1_epi8(15)))); }
TGT_AVX512 static inline __m512 nib_hi(__m128i q) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(15)))); }

TGT_AVX512 static inline __m512 q4_block_dot(const uint8_t *qs, const float *x) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m512 t = _mm512_mul_ps(nib_lo(q), _mm512_loadu_ps(x));
    return _mm512_fmadd_ps(nib_hi(q), _mm512_loadu_ps(x + 16), t);
}

// Two blocks per iteration into two accumulators: independent FMA chains, no per-block branch.
TGT_AVX512 static void matvec_q4_1_avx512(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q4_1 *b = (const block_q4_1 *)w + r * nb;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        float moff = 0;
        size_t i = 0;
        for (; i + 2 <= nb; i += 2) {
            acc0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), q4_block_dot(b[i].qs, x + i * 32), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i + 1].d)), q4_block_dot(b[i + 1].qs, x + i * 32 + 32), acc1);
            moff += _cvtsh_ss(b[i].m) * xsum[i] + _cvtsh_ss(b[i + 1].m) * xsum[i + 1];
        }
        for (; i < nb; i++) {
            acc0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), q4_block_dot(b[i].qs, x + i * 32), acc0);
            moff += _cvtsh_ss(b[i].m) * xsum[i];
        }
        y[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + moff;
    }
}

TGT_AVX512 static void matvec_q4_0_avx512(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q4_0 *b = (const block_q4_0 *)w + r * nb;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        float off = 0;
        size_t i = 0;
        for (; i + 2 <= nb; i += 2) {
            float d0 = _cvtsh_ss(b[i].d), d1 = _cvtsh_ss(b[i + 1].d);
            acc0 = _mm512_fmadd_ps(_mm512_set1_ps(d0), q4_block_dot(b[i].qs, x + i * 32), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_set1_ps(d1), q4_block_dot(b[i + 1].qs, x + i * 32 + 32), acc1);
            off += d0 * xsum[i] + d1 * xsum[i + 1];
        }
        for (; i < nb; i++) {
            float d = _cvtsh_ss(b[i].d);
            acc0 = _mm512_fmadd_ps(_mm512_set1_ps(d), q4_block_dot(b[i].qs, x + i * 32), acc0);
            off += d * xsum[i];
        }
        y[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) - 8.0f * off;
    }
}

TGT_AVX512 static inline __m512 q8_block_dot(const int8_t *qs, const float *x) {
    __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qs)));
    __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(qs + 16))));
    return _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + 16), _mm512_mul_ps(lo, _mm512_loadu_ps(x)));
}

TGT_AVX512 static void matvec_q8_0_avx512(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    (void)xsum;
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q8_0 *b = (const block_q8_0 *)w + r * nb;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        size_t i = 0;
        for (; i + 2 <= nb; i += 2) {
            acc0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), q8_block_dot(b[i].qs, x + i * 32), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i + 1].d)), q8_block_dot(b[i + 1].qs, x + i * 32 + 32), acc1);
        }
        for (; i < nb; i++)
            acc0 = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), q8_block_dot(b[i].qs, x + i * 32), acc0);
        y[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    }
}

TGT_AVX512 static void dequant_q4_1_avx512(const void *src, float *dst, size_t n) {
    const block_q4_1 *b = src;
    for (size_t i = 0; i < n / 32; i++) {
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m512 d = _mm512_set1_ps(_cvtsh_ss(b[i].d)), m = _mm512_set1_ps(_cvtsh_ss(b[i].m));
        _mm512_storeu_ps(dst + i * 32, _mm512_fmadd_ps(nib_lo(q), d, m));
        _mm512_storeu_ps(dst + i * 32 + 16, _mm512_fmadd_ps(nib_hi(q), d, m));
    }
}

TGT_AVX512 static void dequant_q4_0_avx512(const void *src, float *dst, size_t n) {
    const block_q4_0 *b = src;
    __m512 eight = _mm512_set1_ps(8.0f);
    for (size_t i = 0; i < n / 32; i++) {
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m512 d = _mm512_set1_ps(_cvtsh_ss(b[i].d));
        _mm512_storeu_ps(dst + i * 32, _mm512_mul_ps(_mm512_sub_ps(nib_lo(q), eight), d));
        _mm512_storeu_ps(dst + i * 32 + 16, _mm512_mul_ps(_mm512_sub_ps(nib_hi(q), eight), d));
    }
}

TGT_AVX512 static void dequant_q8_0_avx512(const void *src, float *dst, size_t n) {
    const block_q8_0 *b = src;
    for (size_t i = 0; i < n / 32; i++) {
        __m512 d = _mm512_set1_ps(_cvtsh_ss(b[i].d));
        _mm512_storeu_ps(dst + i * 32, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b[i].qs))), d));
        _mm512_storeu_ps(dst + i * 32 + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b[i].qs + 16)))), d));
    }
}

// ---------------------------------------------------------------- AVX2

TGT_AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TGT_AVX2 static inline __m256 u8x8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
TGT_AVX2 static inline __m256 i8x8(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

// Sum over one block of 32 of nibble(q) * x, as 8 lanes.
TGT_AVX2 static inline __m256 nib_dot_avx2(__m128i q, const float *x) {
    __m128i lo = _mm_and_si128(q, _mm_set1_epi8(15));
    __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(15));
    __m256 t = _mm256_mul_ps(u8x8(lo), _mm256_loadu_ps(x));
    t = _mm256_fmadd_ps(u8x8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), t);
    t = _mm256_fmadd_ps(u8x8(hi), _mm256_loadu_ps(x + 16), t);
    return _mm256_fmadd_ps(u8x8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), t);
}

TGT_AVX2 static void matvec_q4_1_avx2(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q4_1 *b = (const block_q4_1 *)w + r * nb;
        __m256 acc = _mm256_setzero_ps();
        float moff = 0;
        for (size_t i = 0; i < nb; i++) {
            __m256 t = nib_dot_avx2(_mm_loadu_si128((const __m128i *)b[i].qs), x + i * 32);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), t, acc);
            moff += _cvtsh_ss(b[i].m) * xsum[i];
        }
        y[r] = hsum8(acc) + moff;
    }
}

TGT_AVX2 static void matvec_q4_0_avx2(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q4_0 *b = (const block_q4_0 *)w + r * nb;
        __m256 acc = _mm256_setzero_ps();
        float off = 0;
        for (size_t i = 0; i < nb; i++) {
            __m256 t = nib_dot_avx2(_mm_loadu_si128((const __m128i *)b[i].qs), x + i * 32);
            float d = _cvtsh_ss(b[i].d);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), t, acc);
            off += d * xsum[i];
        }
        y[r] = hsum8(acc) - 8.0f * off;
    }
}

TGT_AVX2 static void matvec_q8_0_avx2(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    (void)xsum;
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q8_0 *b = (const block_q8_0 *)w + r * nb;
        __m256 acc = _mm256_setzero_ps();
        for (size_t i = 0; i < nb; i++) {
            const float *xi = x + i * 32;
            __m128i q0 = _mm_loadu_si128((const __m128i *)b[i].qs), q1 = _mm_loadu_si128((const __m128i *)(b[i].qs + 16));
            __m256 t = _mm256_mul_ps(i8x8(q0), _mm256_loadu_ps(xi));
            t = _mm256_fmadd_ps(i8x8(_mm_srli_si128(q0, 8)), _mm256_loadu_ps(xi + 8), t);
            t = _mm256_fmadd_ps(i8x8(q1), _mm256_loadu_ps(xi + 16), t);
            t = _mm256_fmadd_ps(i8x8(_mm_srli_si128(q1, 8)), _mm256_loadu_ps(xi + 24), t);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), t, acc);
        }
        y[r] = hsum8(acc);
    }
}
#endif

// ---------------------------------------------------------------- dispatch

#ifdef CK_X86
#define DISPATCH(name, ...)                                              \
    do {                                                                 \
        int l_ = ck_cpu_level();                                              \
        if (l_ >= CK_AVX512) { name##_avx512(__VA_ARGS__); return; }      \
        if (l_ >= CK_AVX2) { name##_avx2(__VA_ARGS__); return; }          \
        name##_generic(__VA_ARGS__);                                     \
    } while (0)
#else
#define DISPATCH(name, ...) name##_generic(__VA_ARGS__)
#endif

void ck_matvec_q4_0(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) { DISPATCH(matvec_q4_0, w, x, xsum, y, k, r0, r1); }
void ck_matvec_q4_1(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) { DISPATCH(matvec_q4_1, w, x, xsum, y, k, r0, r1); }
void ck_matvec_q8_0(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) { DISPATCH(matvec_q8_0, w, x, xsum, y, k, r0, r1); }

#ifdef CK_X86
#define DISPATCH512(name, ...)                                           \
    do {                                                                 \
        if (ck_cpu_level() >= CK_AVX512) { name##_avx512(__VA_ARGS__); return; } \
        name##_generic(__VA_ARGS__);                                     \
    } while (0)
#else
#define DISPATCH512(name, ...) name##_generic(__VA_ARGS__)
#endif

void ck_dequant_q4_0(const void *src, float *dst, size_t n) { DISPATCH512(dequant_q4_0, src, dst, n); }
void ck_dequant_q4_1(const void *src, float *dst, size_t n) { DISPATCH512(dequant_q4_1, src, dst, n); }
void ck_dequant_q8_0(const void *src, float *dst, size_t n) { DISPATCH512(dequant_q8_0, src, dst, n); }

// ---------------------------------------------------------------- several vectors per weight row
// y_v[r] = dot(W[r,:], x_v) for nvec input vectors: each weight block is loaded and expanded once and used
// for every vector. Per vector, the arithmetic is exactly that of the one-vector AVX-512 kernel above (the
// same intrinsics and the same scalar expressions, in the same order), so a batched sequence's outputs are
// bit for bit those it gets alone. Other CPUs run the one-vector kernel per vector.

#ifdef CK_X86
#define CK_ALWAYS_INLINE __attribute__((always_inline)) inline

TGT_AVX512 static CK_ALWAYS_INLINE void mm_q4_1_avx512(const void *w, const float *x, size_t xs, const float *xsum, size_t ss,
                                                         float *y, size_t ys, const int NV, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q4_1 *b = (const block_q4_1 *)w + r * nb;
        __m512 acc0[8], acc1[8];
        float moff[8];
        for (int v = 0; v < NV; v++) { acc0[v] = _mm512_setzero_ps(); acc1[v] = _mm512_setzero_ps(); moff[v] = 0; }
        size_t i = 0;
        for (; i + 2 <= nb; i += 2) {
            __m128i q0 = _mm_loadu_si128((const __m128i *)b[i].qs), q1 = _mm_loadu_si128((const __m128i *)b[i + 1].qs);
            __m512 lo0 = nib_lo(q0), hi0 = nib_hi(q0), lo1 = nib_lo(q1), hi1 = nib_hi(q1);
            __m512 d0 = _mm512_set1_ps(_cvtsh_ss(b[i].d)), d1 = _mm512_set1_ps(_cvtsh_ss(b[i + 1].d));
            float m0 = _cvtsh_ss(b[i].m), m1 = _cvtsh_ss(b[i + 1].m);
            for (int v = 0; v < NV; v++) {
                const float *xv = x + v * xs + i * 32;
                __m512 t0 = _mm512_fmadd_ps(hi0, _mm512_loadu_ps(xv + 16), _mm512_mul_ps(lo0, _mm512_loadu_ps(xv)));
                __m512 t1 = _mm512_fmadd_ps(hi1, _mm512_loadu_ps(xv + 48), _mm512_mul_ps(lo1, _mm512_loadu_ps(xv + 32)));
                acc0[v] = _mm512_fmadd_ps(d0, t0, acc0[v]);
                acc1[v] = _mm512_fmadd_ps(d1, t1, acc1[v]);
                const float *sv = xsum + v * ss;
                moff[v] += m0 * sv[i] + m1 * sv[i + 1];
            }
        }
        for (; i < nb; i++) {
            __m128i q0 = _mm_loadu_si128((const __m128i *)b[i].qs);
            __m512 lo0 = nib_lo(q0), hi0 = nib_hi(q0);
            __m512 d0 = _mm512_set1_ps(_cvtsh_ss(b[i].d));
            float m0 = _cvtsh_ss(b[i].m);
            for (int v = 0; v < NV; v++) {
                const float *xv = x + v * xs + i * 32;
                __m512 t0 = _mm512_fmadd_ps(hi0, _mm512_loadu_ps(xv + 16), _mm512_mul_ps(lo0, _mm512_loadu_ps(xv)));
                acc0[v] = _mm512_fmadd_ps(d0, t0, acc0[v]);
                moff[v] += m0 * xsum[v * ss + i];
            }
        }
        for (int v = 0; v < NV; v++) y[v * ys + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[v], acc1[v])) + moff[v];
    }
}

TGT_AVX512 static CK_ALWAYS_INLINE void mm_q4_0_avx512(const void *w, const float *x, size_t xs, const float *xsum, size_t ss,
                                                         float *y, size_t ys, const int NV, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q4_0 *b = (const block_q4_0 *)w + r * nb;
        __m512 acc0[8], acc1[8];
        float off[8];
        for (int v = 0; v < NV; v++) { acc0[v] = _mm512_setzero_ps(); acc1[v] = _mm512_setzero_ps(); off[v] = 0; }
        size_t i = 0;
        for (; i + 2 <= nb; i += 2) {
            __m128i q0 = _mm_loadu_si128((const __m128i *)b[i].qs), q1 = _mm_loadu_si128((const __m128i *)b[i + 1].qs);
            __m512 lo0 = nib_lo(q0), hi0 = nib_hi(q0), lo1 = nib_lo(q1), hi1 = nib_hi(q1);
            float d0 = _cvtsh_ss(b[i].d), d1 = _cvtsh_ss(b[i + 1].d);
            __m512 vd0 = _mm512_set1_ps(d0), vd1 = _mm512_set1_ps(d1);
            for (int v = 0; v < NV; v++) {
                const float *xv = x + v * xs + i * 32;
                __m512 t0 = _mm512_fmadd_ps(hi0, _mm512_loadu_ps(xv + 16), _mm512_mul_ps(lo0, _mm512_loadu_ps(xv)));
                __m512 t1 = _mm512_fmadd_ps(hi1, _mm512_loadu_ps(xv + 48), _mm512_mul_ps(lo1, _mm512_loadu_ps(xv + 32)));
                acc0[v] = _mm512_fmadd_ps(vd0, t0, acc0[v]);
                acc1[v] = _mm512_fmadd_ps(vd1, t1, acc1[v]);
                const float *sv = xsum + v * ss;
                off[v] += d0 * sv[i] + d1 * sv[i + 1];
            }
        }
        for (; i < nb; i++) {
            __m128i q0 = _mm_loadu_si128((const __m128i *)b[i].qs);
            __m512 lo0 = nib_lo(q0), hi0 = nib_hi(q0);
            float d = _cvtsh_ss(b[i].d);
            __m512 vd = _mm512_set1_ps(d);
            for (int v = 0; v < NV; v++) {
                const float *xv = x + v * xs + i * 32;
                __m512 t0 = _mm512_fmadd_ps(hi0, _mm512_loadu_ps(xv + 16), _mm512_mul_ps(lo0, _mm512_loadu_ps(xv)));
                acc0[v] = _mm512_fmadd_ps(vd, t0, acc0[v]);
                off[v] += d * xsum[v * ss + i];
            }
        }
        for (int v = 0; v < NV; v++) y[v * ys + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[v], acc1[v])) - 8.0f * off[v];
    }
}

TGT_AVX512 static CK_ALWAYS_INLINE void mm_q8_0_avx512(const void *w, const float *x, size_t xs, const float *xsum, size_t ss,
                                                         float *y, size_t ys, const int NV, size_t k, size_t r0, size_t r1) {
    (void)xsum; (void)ss;
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const block_q8_0 *b = (const block_q8_0 *)w + r * nb;
        __m512 acc0[8], acc1[8];
        for (int v = 0; v < NV; v++) { acc0[v] = _mm512_setzero_ps(); acc1[v] = _mm512_setzero_ps(); }
        size_t i = 0;
        for (; i + 2 <= nb; i += 2) {
            __m512 a0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b[i].qs)));
            __m512 b0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b[i].qs + 16))));
            __m512 a1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b[i + 1].qs)));
            __m512 b1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b[i + 1].qs + 16))));
            __m512 d0 = _mm512_set1_ps(_cvtsh_ss(b[i].d)), d1 = _mm512_set1_ps(_cvtsh_ss(b[i + 1].d));
            for (int v = 0; v < NV; v++) {
                const float *xv = x + v * xs + i * 32;
                __m512 t0 = _mm512_fmadd_ps(b0, _mm512_loadu_ps(xv + 16), _mm512_mul_ps(a0, _mm512_loadu_ps(xv)));
                __m512 t1 = _mm512_fmadd_ps(b1, _mm512_loadu_ps(xv + 48), _mm512_mul_ps(a1, _mm512_loadu_ps(xv + 32)));
                acc0[v] = _mm512_fmadd_ps(d0, t0, acc0[v]);
                acc1[v] = _mm512_fmadd_ps(d1, t1, acc1[v]);
            }
        }
        for (; i < nb; i++) {
            __m512 a0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b[i].qs)));
            __m512 b0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b[i].qs + 16))));
            __m512 d0 = _mm512_set1_ps(_cvtsh_ss(b[i].d));
            for (int v = 0; v < NV; v++) {
                const float *xv = x + v * xs + i * 32;
                __m512 t0 = _mm512_fmadd_ps(b0, _mm512_loadu_ps(xv + 16), _mm512_mul_ps(a0, _mm512_loadu_ps(xv)));
                acc0[v] = _mm512_fmadd_ps(d0, t0, acc0[v]);
            }
        }
        for (int v = 0; v < NV; v++) y[v * ys + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[v], acc1[v]));
    }
}

// Instances for 1..8 vectors, so every loop over vectors is unrolled with its accumulators in registers.
#define CK_MM_INSTANCES(name)                                                                                     \
    TGT_AVX512 static void name##_n(const void *w, const float *x, size_t xs, const float *xsum, size_t ss,       \
                                    float *y, size_t ys, size_t nvec, size_t k, size_t r0, size_t r1) {           \
        while (nvec > 0) {                                                                                        \
            size_t n = nvec > 8 ? 8 : nvec;                                                                       \
            switch (n) {                                                                                          \
            case 1: name(w, x, xs, xsum, ss, y, ys, 1, k, r0, r1); break;                                         \
            case 2: name(w, x, xs, xsum, ss, y, ys, 2, k, r0, r1); break;                                         \
            case 3: name(w, x, xs, xsum, ss, y, ys, 3, k, r0, r1); break;                                         \
            case 4: name(w, x, xs, xsum, ss, y, ys, 4, k, r0, r1); break;                                         \
            case 5: name(w, x, xs, xsum, ss, y, ys, 5, k, r0, r1); break;                                         \
            case 6: name(w, x, xs, xsum, ss, y, ys, 6, k, r0, r1); break;                                         \
            case 7: name(w, x, xs, xsum, ss, y, ys, 7, k, r0, r1); break;                                         \
            default: name(w, x, xs, xsum, ss, y, ys, 8, k, r0, r1); break;                                        \
            }                                                                                                     \
            x += n * xs; xsum = xsum ? xsum + n * ss : xsum; y += n * ys; nvec -= n;                              \
        }                                                                                                         \
    }
CK_MM_INSTANCES(mm_q4_1_avx512)
CK_MM_INSTANCES(mm_q4_0_avx512)
CK_MM_INSTANCES(mm_q8_0_avx512)

// AVX2: one block expanded into four 8-lane f32 vectors, then the per-vector chain of nib_dot_avx2 /
// matvec_q8_0_avx2 (mul, fma, fma, fma) and the block's FMA into the accumulator. At most 8 vectors per
// pass: 16 ymm registers just hold 8 accumulators, the expanded block and the temporaries.
TGT_AVX2 static CK_ALWAYS_INLINE __m256 dot4_avx2(__m256 w0, __m256 w1, __m256 w2, __m256 w3, const float *x) {
    __m256 t = _mm256_mul_ps(w0, _mm256_loadu_ps(x));
    t = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + 8), t);
    t = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x + 16), t);
    return _mm256_fmadd_ps(w3, _mm256_loadu_ps(x + 24), t);
}

// kind: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0 (a constant after inlining).
TGT_AVX2 static CK_ALWAYS_INLINE void mm_avx2(const int kind, const void *w, const float *x, size_t xs, const float *xsum, size_t ss,
                                               float *y, size_t ys, const int NV, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    size_t bsz = kind == 0 ? sizeof(block_q4_0) : kind == 1 ? sizeof(block_q4_1) : sizeof(block_q8_0);
    for (size_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + r * nb * bsz;
        __m256 acc[8];
        float off[8];
        for (int v = 0; v < NV; v++) { acc[v] = _mm256_setzero_ps(); off[v] = 0; }
        for (size_t i = 0; i < nb; i++) {
            __m256 w0, w1, w2, w3;
            float d, m = 0;
            if (kind == 2) {
                const block_q8_0 *b = (const block_q8_0 *)row + i;
                __m128i q0 = _mm_loadu_si128((const __m128i *)b->qs), q1 = _mm_loadu_si128((const __m128i *)(b->qs + 16));
                w0 = i8x8(q0); w1 = i8x8(_mm_srli_si128(q0, 8)); w2 = i8x8(q1); w3 = i8x8(_mm_srli_si128(q1, 8));
                d = _cvtsh_ss(b->d);
            } else {
                const uint8_t *qs;
                if (kind == 0) { const block_q4_0 *b = (const block_q4_0 *)row + i; qs = b->qs; d = _cvtsh_ss(b->d); }
                else { const block_q4_1 *b = (const block_q4_1 *)row + i; qs = b->qs; d = _cvtsh_ss(b->d); m = _cvtsh_ss(b->m); }
                __m128i q = _mm_loadu_si128((const __m128i *)qs);
                __m128i lo = _mm_and_si128(q, _mm_set1_epi8(15));
                __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(15));
                w0 = u8x8(lo); w1 = u8x8(_mm_srli_si128(lo, 8)); w2 = u8x8(hi); w3 = u8x8(_mm_srli_si128(hi, 8));
            }
            __m256 vd = _mm256_set1_ps(d);
            for (int v = 0; v < NV; v++) {
                __m256 t = dot4_avx2(w0, w1, w2, w3, x + v * xs + i * 32);
                acc[v] = _mm256_fmadd_ps(vd, t, acc[v]);
                if (kind == 0) off[v] += d * xsum[v * ss + i];
                if (kind == 1) off[v] += m * xsum[v * ss + i];
            }
        }
        for (int v = 0; v < NV; v++) {
            float h = hsum8(acc[v]);
            y[v * ys + r] = kind == 0 ? h - 8.0f * off[v] : kind == 1 ? h + off[v] : h;
        }
    }
}

#define CK_MM2_INSTANCE(type, kind)                                                                               \
    TGT_AVX2 static void mm_##type##_avx2_n(const void *w, const float *x, size_t xs, const float *xsum, size_t ss, \
                                            float *y, size_t ys, size_t nvec, size_t k, size_t r0, size_t r1) {   \
        while (nvec > 0) {                                                                                        \
            size_t n = nvec > 8 ? 8 : nvec;                                                                       \
            switch (n) {                                                                                          \
            case 1: mm_avx2(kind, w, x, xs, xsum, ss, y, ys, 1, k, r0, r1); break;                                \
            case 2: mm_avx2(kind, w, x, xs, xsum, ss, y, ys, 2, k, r0, r1); break;                                \
            case 3: mm_avx2(kind, w, x, xs, xsum, ss, y, ys, 3, k, r0, r1); break;                                \
            case 4: mm_avx2(kind, w, x, xs, xsum, ss, y, ys, 4, k, r0, r1); break;                                \
            case 5: mm_avx2(kind, w, x, xs, xsum, ss, y, ys, 5, k, r0, r1); break;                                \
            case 6: mm_avx2(kind, w, x, xs, xsum, ss, y, ys, 6, k, r0, r1); break;                                \
            case 7: mm_avx2(kind, w, x, xs, xsum, ss, y, ys, 7, k, r0, r1); break;                                \
            default: mm_avx2(kind, w, x, xs, xsum, ss, y, ys, 8, k, r0, r1); break;                               \
            }                                                                                                     \
            x += n * xs; xsum = xsum ? xsum + n * ss : xsum; y += n * ys; nvec -= n;                              \
        }                                                                                                         \
    }
CK_MM2_INSTANCE(q4_0, 0)
CK_MM2_INSTANCE(q4_1, 1)
CK_MM2_INSTANCE(q8_0, 2)
#endif

#define CK_MM_ENTRY(type)                                                                                          \
    void ck_matmul_##type(const void *w, const float *x, size_t xs, const float *xsum, size_t ss, float *y,       \
                          size_t ys, size_t nvec, size_t k, size_t r0, size_t r1) {                               \
        CK_MM_FAST(type)                                                                                          \
        for (size_t v = 0; v < nvec; v++) ck_matvec_##type(w, x + v * xs, xsum ? xsum + v * ss : xsum, y + v * ys, k, r0, r1); \
    }
#ifdef CK_X86
#define CK_MM_FAST(type)                                                                                          \
    if (ck_cpu_level() >= CK_AVX512) { mm_##type##_avx512_n(w, x, xs, xsum, ss, y, ys, nvec, k, r0, r1); return; } \
    if (ck_cpu_level() >= CK_AVX2) { mm_##type##_avx2_n(w, x, xs, xsum, ss, y, ys, nvec, k, r0, r1); return; }
#else
#define CK_MM_FAST(type)
#endif
CK_MM_ENTRY(q4_0)
CK_MM_ENTRY(q4_1)
CK_MM_ENTRY(q8_0)
