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
// Mat-vecs: see "several vectors per weight row" below (each block dequantized exactly in registers, then two
// FMAs per vector); the horizontal sum happens once per row, not per block.

TGT_AVX512 static inline __m512 nib_lo(__m128i q) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(q, _mm_set1_epi8(15)))); }
TGT_AVX512 static inline __m512 nib_hi(__m128i q) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(15)))); }

// One-vector AVX-512 kernels: the several-vector kernel below with one vector (so a sequence's outputs are the
// same bit for bit batched or alone).
TGT_AVX512 static void mm_q4_0_avx512_n(const void *w, const float *x, size_t xs, const float *xsum, size_t ss,
                                        float *y, size_t ys, size_t nvec, size_t k, size_t r0, size_t r1);
TGT_AVX512 static void mm_q4_1_avx512_n(const void *w, const float *x, size_t xs, const float *xsum, size_t ss,
                                        float *y, size_t ys, size_t nvec, size_t k, size_t r0, size_t r1);
TGT_AVX512 static void mm_q8_0_avx512_n(const void *w, const float *x, size_t xs, const float *xsum, size_t ss,
                                        float *y, size_t ys, size_t nvec, size_t k, size_t r0, size_t r1);
TGT_AVX512 static void matvec_q4_0_avx512(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    mm_q4_0_avx512_n(w, x, 0, xsum, 0, y, 0, 1, k, r0, r1);
}
TGT_AVX512 static void matvec_q4_1_avx512(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    mm_q4_1_avx512_n(w, x, 0, xsum, 0, y, 0, 1, k, r0, r1);
}
TGT_AVX512 static void matvec_q8_0_avx512(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1) {
    mm_q8_0_avx512_n(w, x, 0, xsum, 0, y, 0, 1, k, r0, r1);
}

TGT_AVX512 static void dequant_q4_1_avx512(const void *src, float *dst, size_t n) {
    const block_q4_1 *b = src;
    for (size_t i = 0; i < n / 32; i++) {
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m512 d = _mm512_set1_ps(CK_H2F(b[i].d)), m = _mm512_set1_ps(CK_H2F(b[i].m));
        _mm512_storeu_ps(dst + i * 32, _mm512_fmadd_ps(nib_lo(q), d, m));
        _mm512_storeu_ps(dst + i * 32 + 16, _mm512_fmadd_ps(nib_hi(q), d, m));
    }
}

TGT_AVX512 static void dequant_q4_0_avx512(const void *src, float *dst, size_t n) {
    const block_q4_0 *b = src;
    __m512 eight = _mm512_set1_ps(8.0f);
    for (size_t i = 0; i < n / 32; i++) {
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m512 d = _mm512_set1_ps(CK_H2F(b[i].d));
        _mm512_storeu_ps(dst + i * 32, _mm512_mul_ps(_mm512_sub_ps(nib_lo(q), eight), d));
        _mm512_storeu_ps(dst + i * 32 + 16, _mm512_mul_ps(_mm512_sub_ps(nib_hi(q), eight), d));
    }
}

TGT_AVX512 static void dequant_q8_0_avx512(const void *src, float *dst, size_t n) {
    const block_q8_0 *b = src;
    for (size_t i = 0; i < n / 32; i++) {
        __m512 d = _mm512_set1_ps(CK_H2F(b[i].d));
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
            acc = _mm256_fmadd_ps(_mm256_set1_ps(CK_H2F(b[i].d)), t, acc);
            moff += CK_H2F(b[i].m) * xsum[i];
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
            float d = CK_H2F(b[i].d);
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
            acc = _mm256_fmadd_ps(_mm256_set1_ps(CK_H2F(b[i].d)), t, acc);
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

int ck_quant_uses_block_sums(void) {
#ifdef CK_X86
    return ck_cpu_level() < CK_AVX512;
#else
    return 1;
#endif
}

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
// for every vector. AVX-512: the one-vector kernel is this kernel's one-vector instance; AVX2: per vector, the
// arithmetic is exactly that of the one-vector AVX2 kernel (the same intrinsics and scalar expressions, in the
// same order). Either way a batched sequence's outputs are bit for bit those it gets alone. Other CPUs run the
// one-vector kernel per vector.

#ifdef CK_X86
#define CK_ALWAYS_INLINE __attribute__((always_inline)) inline

// An f16 broadcast to 16 f32 lanes. Not _cvtsh_ss + set1: clang turns _cvtsh_ss into vpinsrw, which merges
// into whatever register it picks, at times an accumulator, chaining every block to the previous FMA.
TGT_AVX512 static CK_ALWAYS_INLINE __m512 bcast_f16(uint16_t h) { return _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(h))); }

// Block i of a row as its 32 dequantized f32 weights (lo: 0..15, hi: 16..31), exactly the values ck_dequant_*
// writes: q·d is exact in f32 (4 or 8 bits times an f16's 11), so is Q4_0's (q − 8)·d; Q4_1's q·d + m rounds
// once, as its f32 dequantization does. Since every way below gives these same values, the way may depend on
// the number of vectors: with one or two, a 16-entry table of the block's possible weights and vpermps (fewer
// floating-point instructions: 7B Q4_0 one-vector 1.99 -> 1.83 ns per block, Q4_1 2.02 -> 1.79); with more,
// conversions (the table measured 0.72 -> 0.82 ns per block and vector for Q4_0 with 8 vectors).
// kind: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0 (constants after inlining, as is `table`).
TGT_AVX512 static CK_ALWAYS_INLINE void expand_avx512(const int kind, const int table, const void *row, size_t i,
                                                       __m512 *lo, __m512 *hi) {
    if (kind == 2) {
        const block_q8_0 *b = (const block_q8_0 *)row + i;
        __m512 d = bcast_f16(b->d);
        *lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->qs))), d);
        *hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + 16)))), d);
        return;
    }
    const block_q4_0 *b0 = (const block_q4_0 *)row + i;
    const block_q4_1 *b1 = (const block_q4_1 *)row + i;
    const uint8_t *qs = kind == 0 ? b0->qs : b1->qs;
    __m512 vd = bcast_f16(kind == 0 ? b0->d : b1->d);
    if (table) {
        // vpermps picks each element's entry by the low 4 bits of its dword, so the low nibbles need no mask.
        __m512 vm = kind == 0 ? _mm512_mul_ps(vd, _mm512_set1_ps(-8.0f)) : bcast_f16(b1->m);
        __m512 t = _mm512_fmadd_ps(_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), vd, vm);
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qs));
        *lo = _mm512_permutexvar_ps(q, t);
        *hi = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), t);
        return;
    }
    __m128i q = _mm_loadu_si128((const __m128i *)qs), m15 = _mm_set1_epi8(15);
    __m128i l = _mm_and_si128(q, m15), h = _mm_and_si128(_mm_srli_epi16(q, 4), m15);
    if (kind == 0) {
        __m128i eight = _mm_set1_epi8(8);
        *lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(l, eight))), vd);
        *hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(h, eight))), vd);
    } else {
        __m512 vm = bcast_f16(b1->m);
        *lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(l)), vd, vm);
        *hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(h)), vd, vm);
    }
}

// Each block is expanded once into dequantized weights and used for every vector: per vector and block just two
// FMAs (one chain for each half of the block), so with 8 vectors an extra vector costs a third of what a lone one
// does. The NV = 1 instance is the one-vector kernel, so a row's value never depends on the vectors batched with it.
// (Rows in pairs or fours for more FMA chains measured no faster for one vector, and 3x slower on a large Q8_0
// matrix: several interleaved row streams defeat the prefetcher.)
TGT_AVX512 static CK_ALWAYS_INLINE void mm_avx512(const int kind, const void *w, const float *x, size_t xs,
                                                   float *y, size_t ys, const int NV, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    size_t rowBytes = nb * (kind == 0 ? sizeof(block_q4_0) : kind == 1 ? sizeof(block_q4_1) : sizeof(block_q8_0));
    for (size_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + r * rowBytes;
        __m512 acc0[8], acc1[8];
        for (int v = 0; v < NV; v++) { acc0[v] = _mm512_setzero_ps(); acc1[v] = _mm512_setzero_ps(); }
        for (size_t i = 0; i < nb; i++) {
            __m512 lo, hi;
            expand_avx512(kind, NV <= 2, row, i, &lo, &hi);
            for (int v = 0; v < NV; v++) {
                const float *xv = x + v * xs + i * 32;
                acc0[v] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xv), acc0[v]);
                acc1[v] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xv + 16), acc1[v]);
            }
        }
        for (int v = 0; v < NV; v++) y[v * ys + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[v], acc1[v]));
    }
}
#define mm_q4_0_avx512(...) mm_avx512(0, __VA_ARGS__)
#define mm_q4_1_avx512(...) mm_avx512(1, __VA_ARGS__)
#define mm_q8_0_avx512(...) mm_avx512(2, __VA_ARGS__)

// Instances for 1..8 vectors, so every loop over vectors is unrolled with its accumulators in registers.
#define CK_MM_INSTANCES(name)                                                                                     \
    TGT_AVX512 static void name##_n(const void *w, const float *x, size_t xs, const float *xsum, size_t ss,       \
                                    float *y, size_t ys, size_t nvec, size_t k, size_t r0, size_t r1) {           \
        (void)xsum; (void)ss;                                                                                     \
        while (nvec > 0) {                                                                                        \
            size_t n = nvec > 8 ? 8 : nvec;                                                                       \
            switch (n) {                                                                                          \
            case 1: name(w, x, xs, y, ys, 1, k, r0, r1); break;                                                   \
            case 2: name(w, x, xs, y, ys, 2, k, r0, r1); break;                                                   \
            case 3: name(w, x, xs, y, ys, 3, k, r0, r1); break;                                                   \
            case 4: name(w, x, xs, y, ys, 4, k, r0, r1); break;                                                   \
            case 5: name(w, x, xs, y, ys, 5, k, r0, r1); break;                                                   \
            case 6: name(w, x, xs, y, ys, 6, k, r0, r1); break;                                                   \
            case 7: name(w, x, xs, y, ys, 7, k, r0, r1); break;                                                   \
            default: name(w, x, xs, y, ys, 8, k, r0, r1); break;                                                  \
            }                                                                                                     \
            x += n * xs; y += n * ys; nvec -= n;                                                                  \
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
                d = CK_H2F(b->d);
            } else {
                const uint8_t *qs;
                if (kind == 0) { const block_q4_0 *b = (const block_q4_0 *)row + i; qs = b->qs; d = CK_H2F(b->d); }
                else { const block_q4_1 *b = (const block_q4_1 *)row + i; qs = b->qs; d = CK_H2F(b->d); m = CK_H2F(b->m); }
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
