// Integer mat-vec kernels for the opt-in 8-bit activation path (see ckquant8.h).
#include "ckquant8.h"
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ck_common.h"

typedef struct { uint16_t d; uint8_t qs[16]; } bq4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } bq4_1;
typedef struct { uint16_t d; int8_t qs[32]; } bq8_0;


#ifdef CK_X86
// roundf (halves away from zero) on 16 lanes: the truncation, plus the sign where the exact remainder is >= 1/2.
TGT_AVX512 static inline __m512 round_half_away_avx512(__m512 v) {
    __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __m512i sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u));
    __m512 one = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(_mm512_set1_ps(1.0f)), sign));
    return _mm512_mask_add_ps(t, up, t, one);
}
#endif

// Level l quantizes what levels 0..l-1 left (level 0: x, as llama.cpp does, d = max|x|/127 and roundf's halves away
// from zero; the AVX-512 version gives the same values 32 at a time, since a roundf call per element was 4% of a
// SmolLM2 batch-8 step): r_0 = x, q_l = round(r_l / d_l) with d_l = max|r_l| / 127 per block,
// r_{l+1} = r_l - q_l·d_l (one fused rounding, of a value already below d_l/2). So x = Σ_l q_l·d_l up to
// max|x|/254³ (about 2^-24) per block after three levels, and Σ_l dot(w, q_l)·d_l is an integer sum per level.
// A block's levels are stored side by side, so the GEMM reads a token's levels through one pointer.
static void quantize_x_q8_levels_generic(const float *x, size_t levels, int8_t *qs, float *d, int32_t *isum, size_t n) {
    size_t nb = n / 32;
    for (size_t b = 0; b < nb; b++) {
        float r[32];
        memcpy(r, x + b * 32, sizeof r);
        for (size_t l = 0; l < levels; l++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) { float a = fabsf(r[j]); if (a > amax) amax = a; }
            float db = amax / 127.0f, id = db != 0 ? 1.0f / db : 0;
            int32_t s = 0;
            for (int j = 0; j < 32; j++) {
                float v = roundf(r[j] * id);
                v = v > 127 ? 127 : v < -127 ? -127 : v;
                qs[(b * levels + l) * 32 + j] = (int8_t)v;
                s += (int32_t)v;
                r[j] = fmaf(-v, db, r[j]);
            }
            d[b * levels + l] = db;
            isum[b * levels + l] = s;
        }
    }
}

#ifdef CK_X86
TGT_AVX512 static void quantize_x_q8_levels_avx512(const float *x, size_t levels, int8_t *qs, float *d, int32_t *isum, size_t n) {
    size_t nb = n / 32;
    __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
    for (size_t b = 0; b < nb; b++) {
        __m512 a = _mm512_loadu_ps(x + b * 32), c = _mm512_loadu_ps(x + b * 32 + 16);
        for (size_t l = 0; l < levels; l++) {
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(c)));
            float db = amax / 127.0f, id = db != 0 ? 1.0f / db : 0;
            __m512 vid = _mm512_set1_ps(id), vd = _mm512_set1_ps(-db);
            __m512 fa = _mm512_min_ps(lim, _mm512_max_ps(nlim, round_half_away_avx512(_mm512_mul_ps(a, vid))));
            __m512 fc = _mm512_min_ps(lim, _mm512_max_ps(nlim, round_half_away_avx512(_mm512_mul_ps(c, vid))));
            __m512i qa = _mm512_cvttps_epi32(fa), qc = _mm512_cvttps_epi32(fc);
            _mm_storeu_si128((__m128i *)(qs + (b * levels + l) * 32), _mm512_cvtepi32_epi8(qa));
            _mm_storeu_si128((__m128i *)(qs + (b * levels + l) * 32 + 16), _mm512_cvtepi32_epi8(qc));
            d[b * levels + l] = db;
            isum[b * levels + l] = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qc));
            a = _mm512_fmadd_ps(fa, vd, a);
            c = _mm512_fmadd_ps(fc, vd, c);
        }
    }
}
#endif

void ck_quantize_x_q8_levels(const float *x, size_t levels, int8_t *qs, float *d, int32_t *isum, size_t n) {
#ifdef CK_X86
    if (ck_cpu_level() >= CK_AVX512) { quantize_x_q8_levels_avx512(x, levels, qs, d, isum, n); return; }
#endif
    quantize_x_q8_levels_generic(x, levels, qs, d, isum, n);
}

// One level: llama.cpp's quantization (the clamp at ±127 never acts on level 0, whose largest value maps to 127).
void ck_quantize_x_q8(const float *x, int8_t *qs, float *d, int32_t *isum, size_t n) {
    ck_quantize_x_q8_levels(x, 1, qs, d, isum, n);
}

// ---------------------------------------------------------------- portable

static inline int32_t dot_nib(const uint8_t *q, const int8_t *x) {
    int32_t s = 0;
    for (int j = 0; j < 16; j++) s += (q[j] & 15) * x[j] + (q[j] >> 4) * x[j + 16];
    return s;
}

static void q4_0_generic(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const bq4_0 *b = (const bq4_0 *)w + r * nb;
        float acc = 0;
        for (size_t i = 0; i < nb; i++) acc += h2f(b[i].d) * xd[i] * (float)(dot_nib(b[i].qs, xq + i * 32) - 8 * xsum[i]);
        y[r] = acc;
    }
}

static void q4_1_generic(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const bq4_1 *b = (const bq4_1 *)w + r * nb;
        float acc = 0;
        for (size_t i = 0; i < nb; i++)
            acc += h2f(b[i].d) * xd[i] * (float)dot_nib(b[i].qs, xq + i * 32) + h2f(b[i].m) * xd[i] * (float)xsum[i];
        y[r] = acc;
    }
}

static void q8_0_generic(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1) {
    (void)xsum;
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const bq8_0 *b = (const bq8_0 *)w + r * nb;
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            int32_t s = 0;
            for (int j = 0; j < 32; j++) s += b[i].qs[j] * xq[i * 32 + j];
            acc += h2f(b[i].d) * xd[i] * (float)s;
        }
        y[r] = acc;
    }
}

#ifdef CK_X86
// ---------------------------------------------------------------- AVX2 (maddubs) and AVX-512 VNNI (dpbusd)

// The 32 nibbles of a block as bytes in element order: low nibbles are elements 0-15, high nibbles 16-31.
TGT_AVX2 static inline __m256i nibbles32(const uint8_t *qs) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m128i lo = _mm_and_si128(q, _mm_set1_epi8(15)), hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(15));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

TGT_AVX2 static inline __m256i udot_avx2(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// The f16 scale d times xd in 8 lanes, from a broadcast load and a vector multiply (d·xd rounds once, as a scalar
// product would): 3 instructions where converting d as a scalar, multiplying and broadcasting took 5.
TGT_AVX2 static inline __m256 scale8(uint16_t d, const float *xd) {
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_set1_epi16((short)d)), _mm256_set1_ps(*xd));
}

TGT_AVX2 static inline float hsum8f(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define Q4_LOOP(NAME, TGT, UDOT, BLOCK, OFFSET)                                                             \
    TGT static void NAME(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y,  \
                         size_t k, size_t r0, size_t r1) {                                                 \
        size_t nb = k / 32;                                                                                \
        for (size_t r = r0; r < r1; r++) {                                                                 \
            const BLOCK *b = (const BLOCK *)w + r * nb;                                                    \
            __m256 acc = _mm256_setzero_ps();                                                              \
            float off = 0;                                                                                 \
            for (size_t i = 0; i < nb; i++) {                                                              \
                __m256i p = UDOT(nibbles32(b[i].qs), _mm256_loadu_si256((const __m256i *)(xq + i * 32)));  \
                float dd = CK_H2F(b[i].d) * xd[i];                                                      \
                acc = _mm256_fmadd_ps(_mm256_set1_ps(dd), _mm256_cvtepi32_ps(p), acc);                     \
                OFFSET;                                                                                    \
            }                                                                                              \
            y[r] = hsum8f(acc) + off;                                                                      \
        }                                                                                                  \
    }

Q4_LOOP(q4_0_avx2, TGT_AVX2, udot_avx2, bq4_0, off -= 8.0f * dd * (float)xsum[i])
Q4_LOOP(q4_1_avx2, TGT_AVX2, udot_avx2, bq4_1, off += CK_H2F(b[i].m) * xd[i] * (float)xsum[i])

TGT_VNNI static inline __m256i udot_vnni(__m256i u, __m256i s) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s); }

// The 32 nibbles as bytes in element order from one broadcast load: the upper 128-bit lane is shifted right by 4
// (per dword; the bits that cross into a byte's top nibble are masked off), 3 instructions instead of 5.
TGT_VNNI static inline __m256i nibbles32_vnni(const uint8_t *qs) {
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    v = _mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(v, _mm256_set1_epi8(15));
}

// Q4_0 with VNNI: the -8 offset is folded into the integer sum (each of dpbusd's 8 lanes subtracts xsum, a
// broadcast operand of the subtraction; they sum to -8·xsum exactly), so each block is one dpbusd, one subtraction,
// one conversion and one FMA; two blocks per iteration into two accumulators. Decode of LLaMA-7B Q4_0 is bound by
// these instructions, not by memory (measured 15.1 -> 16.9 GB/s on one core).
TGT_VNNI static void q4_0_vnni(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y,
                               size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const bq4_0 *b = (const bq4_0 *)w + r * nb;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 2 <= nb; i += 2) {
            __m256i p0 = _mm256_sub_epi32(udot_vnni(nibbles32_vnni(b[i].qs), _mm256_loadu_si256((const __m256i *)(xq + i * 32))),
                                          _mm256_set1_epi32(xsum[i]));
            __m256i p1 = _mm256_sub_epi32(udot_vnni(nibbles32_vnni(b[i + 1].qs), _mm256_loadu_si256((const __m256i *)(xq + i * 32 + 32))),
                                          _mm256_set1_epi32(xsum[i + 1]));
            acc0 = _mm256_fmadd_ps(scale8(b[i].d, xd + i), _mm256_cvtepi32_ps(p0), acc0);
            acc1 = _mm256_fmadd_ps(scale8(b[i + 1].d, xd + i + 1), _mm256_cvtepi32_ps(p1), acc1);
        }
        for (; i < nb; i++) {
            __m256i p0 = _mm256_sub_epi32(udot_vnni(nibbles32_vnni(b[i].qs), _mm256_loadu_si256((const __m256i *)(xq + i * 32))),
                                          _mm256_set1_epi32(xsum[i]));
            acc0 = _mm256_fmadd_ps(scale8(b[i].d, xd + i), _mm256_cvtepi32_ps(p0), acc0);
        }
        y[r] = hsum8f(_mm256_add_ps(acc0, acc1));
    }
}
// Q4_1 with VNNI: as q4_0_vnni (one broadcast load per block's nibbles, two blocks per iteration); the min's
// term m·xd·xsum stays a float sum beside the vector accumulators.
TGT_VNNI static void q4_1_vnni(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y,
                               size_t k, size_t r0, size_t r1) {
    size_t nb = k / 32;
    for (size_t r = r0; r < r1; r++) {
        const bq4_1 *b = (const bq4_1 *)w + r * nb;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        float off0 = 0, off1 = 0;
        size_t i = 0;
        for (; i + 2 <= nb; i += 2) {
            __m256i p0 = udot_vnni(nibbles32_vnni(b[i].qs), _mm256_loadu_si256((const __m256i *)(xq + i * 32)));
            __m256i p1 = udot_vnni(nibbles32_vnni(b[i + 1].qs), _mm256_loadu_si256((const __m256i *)(xq + i * 32 + 32)));
            acc0 = _mm256_fmadd_ps(scale8(b[i].d, xd + i), _mm256_cvtepi32_ps(p0), acc0);
            acc1 = _mm256_fmadd_ps(scale8(b[i + 1].d, xd + i + 1), _mm256_cvtepi32_ps(p1), acc1);
            off0 += CK_H2F(b[i].m) * xd[i] * (float)xsum[i];
            off1 += CK_H2F(b[i + 1].m) * xd[i + 1] * (float)xsum[i + 1];
        }
        for (; i < nb; i++) {
            __m256i p0 = udot_vnni(nibbles32_vnni(b[i].qs), _mm256_loadu_si256((const __m256i *)(xq + i * 32)));
            acc0 = _mm256_fmadd_ps(scale8(b[i].d, xd + i), _mm256_cvtepi32_ps(p0), acc0);
            off0 += CK_H2F(b[i].m) * xd[i] * (float)xsum[i];
        }
        y[r] = hsum8f(_mm256_add_ps(acc0, acc1)) + (off0 + off1);
    }
}

// Signed × signed: |w| as the unsigned operand and x with w's sign, as llama.cpp does.
#define Q8_LOOP(NAME, TGT, UDOT)                                                                            \
    TGT static void NAME(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y,  \
                         size_t k, size_t r0, size_t r1) {                                                 \
        (void)xsum;                                                                                        \
        size_t nb = k / 32;                                                                                \
        for (size_t r = r0; r < r1; r++) {                                                                 \
            const bq8_0 *b = (const bq8_0 *)w + r * nb;                                                    \
            __m256 acc = _mm256_setzero_ps();                                                              \
            for (size_t i = 0; i < nb; i++) {                                                              \
                __m256i wq = _mm256_loadu_si256((const __m256i *)b[i].qs);                                 \
                __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + i * 32));                           \
                __m256i p = UDOT(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xv, wq));                      \
                acc = _mm256_fmadd_ps(scale8(b[i].d, xd + i), _mm256_cvtepi32_ps(p), acc); \
            }                                                                                              \
            y[r] = hsum8f(acc);                                                                            \
        }                                                                                                  \
    }

Q8_LOOP(q8_0_avx2, TGT_AVX2, udot_avx2)
Q8_LOOP(q8_0_vnni, TGT_VNNI, udot_vnni)
#endif

// ---------------------------------------------------------------- int8 GEMM (8-bit activations)
// Sixteen rows at a time form a panel where, for each 32-block, dword lane j of register g holds weight bytes
// 4g..4g+3 of row j as unsigned values (Q4_0/Q4_1: q in element order; Q8_0: q + 128), followed by the 16 rows' f16
// scales d (and Q4_1's mins m). A dpbusd then multiplies 4 elements of 16 rows with the same 4 activation bytes of
// one token (a broadcast operand): per block and token, 8 dpbusd give 16 outputs, then the unsigned offset's
// correction (Q4_0: 8·isum, Q8_0: 128·isum, exact in int32), one conversion and one FMA with d_w·d_x (Q4_1: one
// more FMA, m_w times d_x·isum). About 0.75 instructions per output and block against 2 FMAs in the f32 kernels.
// A panel takes the bytes of its 16 ggml rows (Q4: 256 bytes of packed nibbles per block, low nibble = element
// 4g + i of register g, high = register g + 4; Q8_0: 512 bytes), so a whole weight can be repacked once at load
// (`ck_q8act_pack`) and read as one stream; rows without such a copy are packed the same way into a per-thread
// buffer per call. Each panel is read by every group of up to 8 tokens; a token's outputs never depend on the
// tokens computed with it. kind: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0.
#ifdef CK_X86
#define CK_ALWAYS_INLINE8 __attribute__((always_inline)) inline

// Bytes of one 32-column block of a ggml row, for kinds 0-2 (the K-quants' super-blocks span 256 columns).
static inline size_t q8act_block_bytes(int kind) { return kind == 0 ? sizeof(bq4_0) : kind == 1 ? sizeof(bq4_1) : sizeof(bq8_0); }
// Bytes of a ggml row of nb blocks of 32 (Q4_K: 144 per 256 columns, Q6_K: 210).
static inline size_t q8act_row_bytes(int kind, size_t nb) { return kind == 3 ? nb / 8 * 144 : kind == 4 ? nb / 8 * 210 : nb * q8act_block_bytes(kind); }
// Bytes of a 16-row panel of nb blocks of 32 columns: the 16 ggml rows' for kinds 0-2 and Q6_K, 148 per row and 256
// columns for Q4_K (the file's 144 and 4).
static inline size_t q8act_panel_bytes(int kind, size_t nb) {
    return kind == 3 ? nb / 8 * CK_Q4K_PANEL_SUPER : kind == 4 ? nb / 8 * CK_Q6K_PANEL_SUPER : 16 * nb * q8act_block_bytes(kind);
}

// The 16 bytes at p + j·stride, rows j = 0..15, four rows per register (row 4i + L in 128-bit lane L of a[i]).
TGT_VNNI static CK_ALWAYS_INLINE8 void q8act_load16x4(const uint8_t *p, size_t stride, __m512i a[4]) {
    for (int i = 0; i < 4; i++) {
        const uint8_t *q = p + 4 * i * stride;
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)q));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(q + stride)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(q + 2 * stride)), 2);
        a[i] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(q + 3 * stride)), 3);
    }
}

// Dword h (0..3) of the 16 bytes at p + j·stride, for rows j = 0..15, into lane j of out[h]: four rows per register
// (one per 128-bit lane), a 4x4 transpose inside the lanes, then one permutation puts lane j at position j.
// Gathers did the same at ~50 cycles each on Zen 4, which made building a panel cost more than using it.
TGT_VNNI static CK_ALWAYS_INLINE8 void q8act_transpose16x4(const uint8_t *p, size_t stride, __m512i out[4]) {
    __m512i a[4];
    q8act_load16x4(p, stride, a);
    __m512i t0 = _mm512_unpacklo_epi32(a[0], a[1]), t1 = _mm512_unpackhi_epi32(a[0], a[1]);
    __m512i t2 = _mm512_unpacklo_epi32(a[2], a[3]), t3 = _mm512_unpackhi_epi32(a[2], a[3]);
    // Position 4L + i of these holds row 4i + L; position j must hold row j.
    __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    out[0] = _mm512_permutexvar_epi32(idx, _mm512_unpacklo_epi64(t0, t2));
    out[1] = _mm512_permutexvar_epi32(idx, _mm512_unpackhi_epi64(t0, t2));
    out[2] = _mm512_permutexvar_epi32(idx, _mm512_unpacklo_epi64(t1, t3));
    out[3] = _mm512_permutexvar_epi32(idx, _mm512_unpackhi_epi64(t1, t3));
}

// The first dword of the 16 bytes at p + j·stride into lane j (the first register of q8act_transpose16x4).
TGT_VNNI static CK_ALWAYS_INLINE8 __m512i q8act_first_dwords(const uint8_t *p, size_t stride) {
    __m512i a[4];
    q8act_load16x4(p, stride, a);
    __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_epi32(idx, _mm512_unpacklo_epi64(_mm512_unpacklo_epi32(a[0], a[1]), _mm512_unpacklo_epi32(a[2], a[3])));
}

static inline size_t q8act_packed_quant_bytes(int kind) { return kind == 2 ? 512 : 256; }

// Block b of a panel from its raw dwords, one row per lane: dm, the block's first dword (d in its low half, Q4_1's m
// in its high half), and q, the block's weight dwords (Q4: the 4 dwords of packed nibbles; Q8_0: 8 dwords).
TGT_VNNI static CK_ALWAYS_INLINE8 void q8act_put(int kind, __m512i dm, const __m512i *q, uint8_t *out) {
    size_t qb = q8act_packed_quant_bytes(kind);
    if (kind == 2) {
        __m512i flip = _mm512_set1_epi8((char)0x80);
        for (int g = 0; g < 8; g++) _mm512_storeu_si512(out + 64 * g, _mm512_xor_si512(q[g], flip));
    } else {
        for (int g = 0; g < 4; g++) _mm512_storeu_si512(out + 64 * g, q[g]);
    }
    _mm256_storeu_si256((__m256i *)(out + qb), _mm512_cvtepi32_epi16(dm));
    if (kind == 1) _mm256_storeu_si256((__m256i *)(out + qb + 32), _mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)));
}

// The panel of `rows` ggml rows at w (rows apart by rowBytes) into dst; a partial one (fewer than 16 rows: the last of
// a matrix whose row count is not a multiple of 16, or a range off a panel boundary) through masked gathers, which
// never read past the live rows, its other lanes zero.
TGT_VNNI static void q8act_pack_rows(int kind, const uint8_t *w, size_t rowBytes, size_t nb, size_t rows, uint8_t *dst) {
    if (kind == 3) { ck_q4_K_panel(w, rowBytes, nb, rows, dst); return; }
    if (kind == 4) { ck_q6_K_panel(w, rowBytes, nb, rows, dst); return; }
    size_t bsz = q8act_block_bytes(kind), qoff = kind == 1 ? 4 : 2, stride = 16 * bsz;
    __m512i q[8];
    if (rows == 16) {
        // The 16 rows are one contiguous stretch, read here block by block across all of them, an order the
        // hardware prefetcher does not follow: ask for the next panel's stretch now, line by line.
        for (size_t o = 0; o < 16 * rowBytes; o += 64) _mm_prefetch((const char *)(w + 16 * rowBytes + o), _MM_HINT_T1);
        for (size_t b = 0; b < nb; b++) {
            const uint8_t *base = w + b * bsz;
            q8act_transpose16x4(base + qoff, rowBytes, q);
            if (kind == 2) q8act_transpose16x4(base + qoff + 16, rowBytes, q + 4);
            q8act_put(kind, q8act_first_dwords(base, rowBytes), q, dst + b * stride);
        }
        return;
    }
    __mmask16 live = (__mmask16)((1u << rows) - 1);
    __m512i rowOff = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                        _mm512_set1_epi32((int)rowBytes));
    __m512i zero = _mm512_setzero_si512();
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *base = w + b * bsz;
        for (int g = 0; g < (kind == 2 ? 8 : 4); g++)
            q[g] = _mm512_mask_i32gather_epi32(zero, live, rowOff, base + qoff + 4 * g, 1);
        q8act_put(kind, _mm512_mask_i32gather_epi32(zero, live, rowOff, base, 1), q, dst + b * stride);
    }
}

// Block s's f32 scales d·sc and −dmin·m of the 16 rows of a Q4_K panel's super-block at sb (ggml's products, exact
// operands; flipping the sign bit of dmin first gives the bits of the negated product).
TGT_VNNI static CK_ALWAYS_INLINE8 void q4k_panel_scales(const uint8_t *sb, size_t s, __m512 *d, __m512 *m) {
    __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(sb + 16 * s))));
    __m512 mn = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(sb + 128 + 16 * s))));
    __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sb + 288)));
    *d = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sb + 256))), sc);
    *m = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(dmin), _mm512_set1_epi32(INT32_MIN))), mn);
}

// Block s's f32 scales d·sc of its two 16-column halves for the 16 rows of a Q6_K panel's super-block at sb (ggml's
// products `d * sc`, exact operands).
TGT_VNNI static CK_ALWAYS_INLINE8 void q6k_panel_scales(const uint8_t *sb, size_t s, __m512 *da, __m512 *db) {
    const uint8_t *sc = sb + 3072;
    __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(sc + 256)));
    *da = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(sc + 32 * s)))));
    *db = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(sc + 32 * s + 16)))));
}

// Block b's 8 weight registers, 16 scales d and (Q4_1, Q4_K) 16 mins m, from the panel at src. Q6_K: d and m are the
// scales of the block's two 16-column halves and its weights the unsigned q (0..63). K-quants: the scales from ks (32
// floats per block) when given, else built from the panel's bytes.
TGT_VNNI static CK_ALWAYS_INLINE8 void q8act_block(int kind, const uint8_t *src, const float *ks, size_t b, __m512i wv[8],
                                                  __m512 *d, __m512 *m) {
    if (kind == 4) {
        // Q6_K: the nibbles as Q4's, each register's top bits from plane G / 4 shifted into bits 4-5 of its bytes.
        const uint8_t *sb = src + b / 8 * CK_Q6K_PANEL_SUPER;
        size_t s = b % 8;
        const uint8_t *q = sb + 384 * s;
        for (size_t o = 0; o < CK_Q6K_PANEL_SUPER / 8; o += 64)
            _mm_prefetch((const char *)(sb + CK_Q6K_PANEL_SUPER / 8 * s + 4096 + o), _MM_HINT_T0);
        const __m512i m15 = _mm512_set1_epi8(15), m48 = _mm512_set1_epi8(48);
        const __m512i h0 = _mm512_loadu_si512(q + 256), h1 = _mm512_loadu_si512(q + 320);
#pragma clang loop unroll(full)
        for (int g = 0; g < 4; g++) {
            __m512i v = _mm512_loadu_si512(q + 64 * g);
            __m512i a = g == 0 ? _mm512_slli_epi32(h0, 4) : g == 1 ? _mm512_slli_epi32(h0, 2) : g == 2 ? h0 : _mm512_srli_epi32(h0, 2);
            __m512i c = g == 0 ? _mm512_slli_epi32(h1, 4) : g == 1 ? _mm512_slli_epi32(h1, 2) : g == 2 ? h1 : _mm512_srli_epi32(h1, 2);
            wv[g] = _mm512_or_si512(_mm512_and_si512(v, m15), _mm512_and_si512(a, m48));
            wv[g + 4] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), m15), _mm512_and_si512(c, m48));
        }
        if (ks) {
            *d = _mm512_loadu_ps(ks + 32 * b);
            *m = _mm512_loadu_ps(ks + 32 * b + 16);
        } else {
            q6k_panel_scales(sb, s, d, m);
        }
        return;
    }
    if (kind == 3) {
        // Q4_K: super-block b / 8 holds the 16 rows' u8 scales sc and mins m per block (16 bytes each), their f16 d
        // and dmin, then the blocks' nibbles. d·sc and dmin·m come out as ggml's f32 products (exact operands).
        const uint8_t *sb = src + b / 8 * CK_Q4K_PANEL_SUPER;
        size_t s = b % 8;
        const uint8_t *q = sb + 320 + 256 * s;
        for (size_t o = 0; o < CK_Q4K_PANEL_SUPER / 8; o += 64)
            _mm_prefetch((const char *)(sb + CK_Q4K_PANEL_SUPER / 8 * s + 4096 + o), _MM_HINT_T0);
        __m512i m15 = _mm512_set1_epi8(15);
        for (int g = 0; g < 4; g++) {
            __m512i v = _mm512_loadu_si512(q + 64 * g);
            wv[g] = _mm512_and_si512(v, m15);
            wv[g + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m15);
        }
        if (ks) {
            *d = _mm512_loadu_ps(ks + 32 * b);
            *m = _mm512_loadu_ps(ks + 32 * b + 16);
        } else {
            q4k_panel_scales(sb, s, d, m);
        }
        return;
    }
    size_t qb = q8act_packed_quant_bytes(kind), stride = 16 * q8act_block_bytes(kind);
    const uint8_t *q = src + b * stride, *ds = q + qb;
    // One token reads each panel once, at memory speed: ask 4 KB ahead (into the next panel at the end). The
    // hardware prefetcher stops at 4 KB pages and starts late in each chunk; 7B Q4_0 decode, 2 threads, tok/s:
    // 8.1-8.2 at 1-2 KB ahead, 8.3-8.6 at 4 KB, 8.2-8.5 at 8 KB (same sitting).
    for (size_t o = 0; o < stride; o += 64) _mm_prefetch((const char *)(q + 4096 + o), _MM_HINT_T0);
    if (kind == 2) {
        for (int g = 0; g < 8; g++) wv[g] = _mm512_loadu_si512(q + 64 * g);
    } else {
        __m512i m15 = _mm512_set1_epi8(15);
        for (int g = 0; g < 4; g++) {
            __m512i v = _mm512_loadu_si512(q + 64 * g);
            wv[g] = _mm512_and_si512(v, m15);
            wv[g + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m15);
        }
    }
    *d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)ds));
    *m = kind == 1 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(ds + 32))) : _mm512_setzero_ps();
}

// NT activation rows (a constant after inlining) against one panel, L rows per token (L = 1: 8-bit activations;
// L = 3: the three levels of f32 precision, side by side per block, so one pointer per token reads them): each
// token's 16-row outputs stay in registers over all blocks. A token's levels are scaled and added per block,
// smallest first, then multiplied by the weight scales once. Zen 4 runs this at ~0.76 dpbusd per cycle (7B
// prefill); one dpbusd chain per level instead of two was slower (latency), three tokens per pass the same.
TGT_VNNI static CK_ALWAYS_INLINE8 void q8act_tokens(int kind, const uint8_t *src, const float *ks, size_t nb, size_t k,
                                                   const int8_t *xq, const float *xd, const int32_t *xsum, const int NT,
                                                   const int L, float *y, size_t ys, size_t rows) {
    const int32_t c = kind == 0 ? 8 : kind == 2 ? 128 : 0;
    const int hasMin = kind == 1 || kind == 3;
    __m512 acc[8];
    for (int t = 0; t < NT / L; t++) acc[t] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        __m512i wv[8];
        __m512 d, m;
        q8act_block(kind, src, ks, b, wv, &d, &m);
        // Unrolled, so the accumulators live in registers: left to itself clang kept the 8-token instance's in
        // memory, a load and a store per token and block (half the prefill's samples, perf annotate).
#pragma clang loop unroll(full)
        for (int t = 0; t < NT / L; t++) {
            __m512 sum = _mm512_setzero_ps(), sum2 = _mm512_setzero_ps();
            float msum = 0;
#pragma clang loop unroll(full)
            for (int l = L - 1; l >= 0; l--) {
                size_t rb = (t * nb + b) * L + l;
                const int8_t *x = xq + rb * 32;
                int32_t xs[8];
                memcpy(xs, x, 32);
                if (kind == 4) {
                    // Q6_K: the halves (columns 0-15, 16-31) have scales of their own, so two sums of the unsigned q
                    // times x, each started at -32 times its half's sum of x (xsum holds two per block), which
                    // makes them the exact sums of (q - 32)·x.
                    __m512i pa = _mm512_set1_epi32(-32 * xsum[2 * rb]), pb = _mm512_set1_epi32(-32 * xsum[2 * rb + 1]);
                    for (int g = 0; g < 4; g++) {
                        pa = _mm512_dpbusd_epi32(pa, wv[g], _mm512_set1_epi32(xs[g]));
                        pb = _mm512_dpbusd_epi32(pb, wv[g + 4], _mm512_set1_epi32(xs[g + 4]));
                    }
                    if (L == 1) {
                        __m512 s = _mm512_set1_ps(xd[rb]);
                        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pa), _mm512_mul_ps(d, s), acc[t]);
                        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pb), _mm512_mul_ps(m, s), acc[t]);
                    } else {
                        sum = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pa), _mm512_set1_ps(xd[rb]), sum);
                        sum2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pb), _mm512_set1_ps(xd[rb]), sum2);
                    }
                    continue;
                }
                // The offset of Q4_0's (q - 8) and Q8_0's stored q + 128 starts the integer sum (exact, so the order
                // of the additions does not matter; one chain instead of two measured the same).
                __m512i p = c != 0 ? _mm512_set1_epi32(-c * xsum[rb]) : _mm512_setzero_si512(), q = _mm512_setzero_si512();
                for (int g = 0; g < 8; g += 2) {
                    p = _mm512_dpbusd_epi32(p, wv[g], _mm512_set1_epi32(xs[g]));
                    q = _mm512_dpbusd_epi32(q, wv[g + 1], _mm512_set1_epi32(xs[g + 1]));
                }
                p = _mm512_add_epi32(p, q);
                if (L == 1) {
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(d, _mm512_set1_ps(xd[rb])), acc[t]);
                    if (hasMin) acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(xd[rb] * (float)xsum[rb]), acc[t]);
                } else {
                    sum = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps(xd[rb]), sum);
                    if (hasMin) msum += xd[rb] * (float)xsum[rb];
                }
            }
            if (L > 1 && kind == 4) {
                acc[t] = _mm512_fmadd_ps(sum, d, acc[t]);
                acc[t] = _mm512_fmadd_ps(sum2, m, acc[t]);
            } else if (L > 1) {
                acc[t] = _mm512_fmadd_ps(sum, d, acc[t]);
                if (hasMin) acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(msum), acc[t]);
            }
        }
    }
    __mmask16 live = (__mmask16)((1u << rows) - 1);
    for (int t = 0; t < NT / L; t++) _mm512_mask_storeu_ps(y + t * ys, live, acc[t]);
}

// All T tokens (L rows each) against one panel: 8 rows at a time, or two tokens of three levels.
TGT_VNNI static CK_ALWAYS_INLINE8 void q8act_panel_tokens(int kind, const uint8_t *src, size_t nb, size_t k,
                                                         const int8_t *xq, const float *xd, const int32_t *xsum,
                                                         size_t T, int L, float *y, size_t ys, size_t rows,
                                                         float *scratch) {
    // The K-quant panels keep bytes where the scales are f32 products: with more than one pass over the panel, build
    // them once into scratch (32 floats per block) instead of once per pass (Q4_K: a tenth more work per pass of two
    // tokens).
    const float *ks = NULL;
    if (kind >= 3 && T > (L == 3 ? 2u : 8u)) {
        for (size_t b = 0; b < nb; b++) {
            __m512 d, m;
            if (kind == 3) q4k_panel_scales(src + b / 8 * CK_Q4K_PANEL_SUPER, b % 8, &d, &m);
            else q6k_panel_scales(src + b / 8 * CK_Q6K_PANEL_SUPER, b % 8, &d, &m);
            _mm512_storeu_ps(scratch + 32 * b, d);
            _mm512_storeu_ps(scratch + 32 * b + 16, m);
        }
        ks = scratch;
    }
    if (L == 3) {
        for (size_t t = 0; t < T; t += 2) {
            const int8_t *x = xq + 3 * t * k;
            const float *d = xd + 3 * t * nb;
            const int32_t *s = xsum + (kind == 4 ? 2 : 1) * 3 * t * nb;
            if (T - t >= 2) q8act_tokens(kind, src, ks, nb, k, x, d, s, 6, 3, y + t * ys, ys, rows);
            else q8act_tokens(kind, src, ks, nb, k, x, d, s, 3, 3, y + t * ys, ys, rows);
        }
        return;
    }
    for (size_t t = 0; t < T; t += 8) {
        size_t n = T - t < 8 ? T - t : 8;
        const int8_t *x = xq + t * k;
        const float *d = xd + t * nb;
        const int32_t *s = xsum + (kind == 4 ? 2 : 1) * t * nb;
        float *yt = y + t * ys;
#define CK_Q8ACT_CASE(N) case N: q8act_tokens(kind, src, ks, nb, k, x, d, s, N, 1, yt, ys, rows); break;
        switch (n) { CK_Q8ACT_CASE(1) CK_Q8ACT_CASE(2) CK_Q8ACT_CASE(3) CK_Q8ACT_CASE(4)
                     CK_Q8ACT_CASE(5) CK_Q8ACT_CASE(6) CK_Q8ACT_CASE(7) default: q8act_tokens(kind, src, ks, nb, k, x, d, s, 8, 1, yt, ys, rows); }
#undef CK_Q8ACT_CASE
    }
}

// Rows [r0, r1): whole 16-row panels below packedRows from the packed copy, any other rows (a partial last panel, a
// range not starting on a panel boundary, a weight without a packed copy) through a panel packed from the ggml rows
// into `panel`.
TGT_VNNI static CK_ALWAYS_INLINE8 void gemm_q8act_vnni(int kind, const void *w, const void *packed, size_t packedRows,
                                                      size_t k, size_t r0, size_t r1, const int8_t *xq, const float *xd,
                                                      const int32_t *xsum, size_t T, int L, float *y, size_t ys, uint8_t *panel) {
    size_t nb = k / 32, rowBytes = q8act_row_bytes(kind, nb), panelBytes = q8act_panel_bytes(kind, nb);
    float *scratch = (float *)(panel + panelBytes);  // Q4_K's scales (ck_gemm_q8act_levels sizes the buffer)
    for (size_t r = r0; r < r1;) {
        if (packed && r % 16 == 0 && r + 16 <= r1 && r + 16 <= packedRows) {
            q8act_panel_tokens(kind, (const uint8_t *)packed + r / 16 * panelBytes, nb, k, xq, xd, xsum, T, L, y + r, ys, 16,
                               scratch);
            r += 16;
            continue;
        }
        size_t end = r1 - r < 16 ? r1 : r + 16;
        if (packed && r % 16 != 0 && end > (r / 16 + 1) * 16) end = (r / 16 + 1) * 16;
        q8act_pack_rows(kind, (const uint8_t *)w + r * rowBytes, rowBytes, nb, end - r, panel);
        q8act_panel_tokens(kind, panel, nb, k, xq, xd, xsum, T, L, y + r, ys, end - r, scratch);
        r = end;
    }
}
// One function per kind with the level count a constant (1 or 3), so the inlined kernels specialise on both.
#define CK_Q8ACT_KIND(NAME, KIND)                                                                              \
    TGT_VNNI static void NAME(const void *w, const void *packed, size_t packedRows, size_t k, size_t r0,       \
                              size_t r1, const int8_t *xq, const float *xd, const int32_t *xsum, size_t T,     \
                              int L, float *y, size_t ys, uint8_t *panel) {                                    \
        if (L == 3) gemm_q8act_vnni(KIND, w, packed, packedRows, k, r0, r1, xq, xd, xsum, T, 3, y, ys, panel); \
        else gemm_q8act_vnni(KIND, w, packed, packedRows, k, r0, r1, xq, xd, xsum, T, 1, y, ys, panel);        \
    }
CK_Q8ACT_KIND(gemm_q8act_q4_0, 0)
CK_Q8ACT_KIND(gemm_q8act_q4_1, 1)
CK_Q8ACT_KIND(gemm_q8act_q8_0, 2)
CK_Q8ACT_KIND(gemm_q8act_q4_K, 3)
CK_Q8ACT_KIND(gemm_q8act_q6_K, 4)
#undef CK_Q8ACT_KIND

#endif

size_t ck_q8act_panel_bytes(int kind, size_t k) {
#ifdef CK_X86
    if (kind >= 0 && kind <= 4) return q8act_panel_bytes(kind, k / 32);
#endif
    (void)kind; (void)k;
    return 0;
}

int ck_q8act_pack(int kind, const void *w, size_t k, size_t p0, size_t p1, void *dst) {
#ifdef CK_X86
    if (kind < 0 || kind > 4 || k % (kind >= 3 ? 256 : 32) != 0 || !ck_cpu_has_vnni()) return 0;
    size_t nb = k / 32, rowBytes = q8act_row_bytes(kind, nb), panelBytes = q8act_panel_bytes(kind, nb);
    for (size_t p = p0; p < p1; p++)
        q8act_pack_rows(kind, (const uint8_t *)w + p * 16 * rowBytes, rowBytes, nb, 16, (uint8_t *)dst + p * panelBytes);
    return 1;
#else
    (void)kind; (void)w; (void)k; (void)p0; (void)p1; (void)dst;
    return 0;
#endif
}

#ifdef CK_X86
// One block of a whole panel back into its 16 rows' ggml blocks: the quants' dwords [g][row] transposed to
// [row][g] in registers (unpack 32- then 64-bit pairs inside 128-bit lanes: lane L of u[i] is row 4L + i), four
// dwords at a time (Q8_0 twice, flipping the +128 back). The scalar loop below was 5% of a SmolLM2 prefill.
#define CK_UNPACK_STORE(u, L, i)                                                                        \
    _mm_storeu_si128((__m128i *)(rows + (4 * (L) + (i)) * rowBytes + off), _mm512_extracti32x4_epi32((u), (L)))
TGT_VNNI static void q8act_unpack_panel(int kind, const uint8_t *panel, size_t nb, size_t rowBytes, uint8_t *rows) {
    size_t bsz = q8act_block_bytes(kind), qb = kind == 2 ? 512 : 256, qoff = kind == 1 ? 4 : 2;
    const __m512i flip = _mm512_set1_epi32(kind == 2 ? (int)0x80808080u : 0);
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *src = panel + b * 16 * bsz;
        for (int half = 0; half < (kind == 2 ? 2 : 1); half++) {
            const uint8_t *q = src + 256 * half;
            __m512i g0 = _mm512_xor_si512(_mm512_loadu_si512(q), flip), g1 = _mm512_xor_si512(_mm512_loadu_si512(q + 64), flip);
            __m512i g2 = _mm512_xor_si512(_mm512_loadu_si512(q + 128), flip), g3 = _mm512_xor_si512(_mm512_loadu_si512(q + 192), flip);
            __m512i t0 = _mm512_unpacklo_epi32(g0, g1), t1 = _mm512_unpackhi_epi32(g0, g1);
            __m512i t2 = _mm512_unpacklo_epi32(g2, g3), t3 = _mm512_unpackhi_epi32(g2, g3);
            __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
            __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
            size_t off = b * bsz + qoff + 16 * half;
            CK_UNPACK_STORE(u0, 0, 0); CK_UNPACK_STORE(u1, 0, 1); CK_UNPACK_STORE(u2, 0, 2); CK_UNPACK_STORE(u3, 0, 3);
            CK_UNPACK_STORE(u0, 1, 0); CK_UNPACK_STORE(u1, 1, 1); CK_UNPACK_STORE(u2, 1, 2); CK_UNPACK_STORE(u3, 1, 3);
            CK_UNPACK_STORE(u0, 2, 0); CK_UNPACK_STORE(u1, 2, 1); CK_UNPACK_STORE(u2, 2, 2); CK_UNPACK_STORE(u3, 2, 3);
            CK_UNPACK_STORE(u0, 3, 0); CK_UNPACK_STORE(u1, 3, 1); CK_UNPACK_STORE(u2, 3, 2); CK_UNPACK_STORE(u3, 3, 3);
        }
        for (size_t j = 0; j < 16; j++) {
            memcpy(rows + j * rowBytes + b * bsz, src + qb + 2 * j, 2);
            if (kind == 1) memcpy(rows + j * rowBytes + b * bsz + 2, src + qb + 32 + 2 * j, 2);
        }
    }
}
#undef CK_UNPACK_STORE
#endif

// The inverse of ck_q8act_pack for rows r0..<r1: in a panel, block b holds dword g of row j's quants at 64·g + 4·j
// (Q8_0: q + 128) and row j's f16 scale at qb + 2·j (Q4_1's min at qb + 32 + 2·j).
void ck_q8act_unpack(int kind, const void *packed, size_t k, size_t r0, size_t r1, void *dst) {
    // Q4_K panels keep products d·sc and dmin·m, not the ggml fields: only wide rows are packed (see ckquant8.h),
    // and those are never unpacked.
    if (kind >= 3) return;
    size_t nb = k / 32, bsz = kind == 0 ? sizeof(bq4_0) : kind == 1 ? sizeof(bq4_1) : sizeof(bq8_0);
    size_t rowBytes = nb * bsz, stride = 16 * bsz, qb = kind == 2 ? 512 : 256, qoff = kind == 1 ? 4 : 2;
    int dwords = kind == 2 ? 8 : 4;
#ifdef CK_X86
    if (ck_cpu_has_vnni()) {
        // Whole panels in registers, the rest (a range off panel boundaries) by the loop below.
        for (; r0 % 16 == 0 && r0 + 16 <= r1; r0 += 16, dst = (uint8_t *)dst + 16 * rowBytes)
            q8act_unpack_panel(kind, (const uint8_t *)packed + r0 * rowBytes, nb, rowBytes, dst);
    }
#endif
    for (size_t r = r0; r < r1; r++) {
        const uint8_t *panel = (const uint8_t *)packed + r / 16 * 16 * rowBytes;
        size_t j = r % 16;
        uint8_t *row = (uint8_t *)dst + (r - r0) * rowBytes;
        for (size_t b = 0; b < nb; b++) {
            const uint8_t *src = panel + b * stride;
            uint8_t *out = row + b * bsz;
            memcpy(out, src + qb + 2 * j, 2);
            if (kind == 1) memcpy(out + 2, src + qb + 32 + 2 * j, 2);
            for (int g = 0; g < dwords; g++) {
                uint32_t v;
                memcpy(&v, src + 64 * g + 4 * j, 4);
                if (kind == 2) v ^= 0x80808080u;
                memcpy(out + qoff + 4 * g, &v, 4);
            }
        }
    }
}

#ifdef CK_X86
// dst[i] = the sum of the n signed bytes x[16·i ..< 16·i + 16] (the Q6_K GEMM's half-block sums), n a multiple of
// 64: as unsigned bytes x + 128 (sign bits flipped) summed 8 at a time by vpsadbw, less the 16·128.
TGT_VNNI static void q8act_half_sums(const int8_t *x, int32_t *dst, size_t n) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (size_t i = 0; i < n; i += 64) {
        int64_t s8[8];
        _mm512_storeu_si512(s8, _mm512_sad_epu8(_mm512_xor_si512(_mm512_loadu_si512(x + i), flip), _mm512_setzero_si512()));
        for (int h = 0; h < 4; h++) dst[i / 16 + h] = (int32_t)(s8[2 * h] + s8[2 * h + 1]) - 16 * 128;
    }
}

struct q8act_panel_buf { size_t capacity; size_t pad[7]; uint8_t data[]; };
static pthread_key_t panel_key;
static pthread_once_t panel_once = PTHREAD_ONCE_INIT;
static void panel_key_create(void) { pthread_key_create(&panel_key, free); }
#endif

int ck_gemm_q8act(int kind, const void *w, const void *packed, size_t packedRows, size_t k, size_t r0, size_t r1,
                  const int8_t *xq, const float *xd, const int32_t *xsum, size_t T, float *y, size_t ys) {
    return ck_gemm_q8act_levels(kind, w, packed, packedRows, k, r0, r1, xq, xd, xsum, NULL, T, 1, y, ys);
}

int ck_gemm_q8act_levels(int kind, const void *w, const void *packed, size_t packedRows, size_t k, size_t r0, size_t r1,
                         const int8_t *xq, const float *xd, const int32_t *xsum, const int32_t *halves, size_t T,
                         size_t levels, float *y, size_t ys) {
#ifdef CK_X86
    if (kind < 0 || kind > 4 || k % (kind >= 3 ? 256 : 32) != 0 || (levels != 1 && levels != 3) || !ck_cpu_has_vnni()) return 0;
    if (r0 >= r1) return 1;
    // One panel per thread, kept and grown (decoding calls this hundreds of times per token); a thread-specific
    // value whose destructor frees it when the thread ends.
    pthread_once(&panel_once, panel_key_create);
    struct q8act_panel_buf *buf = pthread_getspecific(panel_key);
    // The panel, then (K-quants) its f32 scales, 32 per block, then (Q6_K, unless the caller has them) the sums of
    // x per 16 columns.
    size_t need = q8act_panel_bytes(kind, k / 32) + (kind >= 3 ? k / 32 * 128 : 0);
    size_t halfBytes = kind == 4 && !halves ? (T * levels * k / 16 * 4 + 63) / 64 * 64 : 0;
    need = (need + 63) / 64 * 64 + halfBytes;
    if (!buf || need > buf->capacity) {
        struct q8act_panel_buf *nb = aligned_alloc(64, (sizeof(struct q8act_panel_buf) + need + 63) / 64 * 64);
        if (!nb) return 0;
        nb->capacity = need;
        free(buf);
        pthread_setspecific(panel_key, nb);
        buf = nb;
    }
    uint8_t *panel = buf->data;
    if (kind == 4) {
        if (!halves) {
            int32_t *hs = (int32_t *)(buf->data + need - halfBytes);
            q8act_half_sums(xq, hs, T * levels * k);
            halves = hs;
        }
        xsum = halves;
    }
    if (kind == 0) gemm_q8act_q4_0(w, packed, packedRows, k, r0, r1, xq, xd, xsum, T, (int)levels, y, ys, panel);
    else if (kind == 1) gemm_q8act_q4_1(w, packed, packedRows, k, r0, r1, xq, xd, xsum, T, (int)levels, y, ys, panel);
    else if (kind == 2) gemm_q8act_q8_0(w, packed, packedRows, k, r0, r1, xq, xd, xsum, T, (int)levels, y, ys, panel);
    else if (kind == 3) gemm_q8act_q4_K(w, packed, packedRows, k, r0, r1, xq, xd, xsum, T, (int)levels, y, ys, panel);
    else gemm_q8act_q6_K(w, packed, packedRows, k, r0, r1, xq, xd, xsum, T, (int)levels, y, ys, panel);
    return 1;
#else
    (void)kind; (void)w; (void)packed; (void)packedRows; (void)k; (void)r0; (void)r1; (void)xq; (void)xd; (void)xsum;
    (void)halves; (void)T; (void)levels; (void)y; (void)ys;
    return 0;
#endif
}

void ck_q8act_half_sums(const int8_t *x, size_t n, int32_t *dst) {
#ifdef CK_X86
    if (ck_cpu_has_vnni()) { q8act_half_sums(x, dst, n); return; }
#endif
    for (size_t i = 0; i < n / 16; i++) {
        int32_t s = 0;
        for (int c = 0; c < 16; c++) s += x[16 * i + c];
        dst[i] = s;
    }
}

// ---------------------------------------------------------------- dispatch

// 2: AVX-512 VNNI dpbusd, 1: AVX2 maddubs, 0: portable.
static int level8(void) {
    if (ck_cpu_level() < CK_AVX2) return 0;
    return ck_cpu_has_vnni() ? 2 : 1;
}

#ifdef CK_X86
#define DISPATCH8(name, ...)                                        \
    do {                                                            \
        int l_ = level8();                                          \
        if (l_ >= 2) { name##_vnni(__VA_ARGS__); return; }          \
        if (l_ >= 1) { name##_avx2(__VA_ARGS__); return; }          \
        name##_generic(__VA_ARGS__);                                \
    } while (0)
#else
#define DISPATCH8(name, ...) name##_generic(__VA_ARGS__)
#endif

void ck_matvec_q4_0_q8(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1) { DISPATCH8(q4_0, w, xq, xd, xsum, y, k, r0, r1); }
void ck_matvec_q4_1_q8(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1) { DISPATCH8(q4_1, w, xq, xd, xsum, y, k, r0, r1); }
void ck_matvec_q8_0_q8(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1) { DISPATCH8(q8_0, w, xq, xd, xsum, y, k, r0, r1); }
