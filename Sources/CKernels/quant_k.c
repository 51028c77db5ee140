// K-quant kernels (ggml Q4_K, Q5_K, Q6_K; block structs in ggml-common.h, reference dequantizers in
// ggml-quants.c): AVX-512, AVX2 and portable versions, picked at run time like quant.c.
//
// Dequantization reproduces ggml's float operations exactly (per sub-block `d*sc` and `dmin*m` first, then
// `dl*q - ml`; Q6_K `(d*sc)*q`). Mat-vecs keep x in f32. Q4_K/Q5_K use
//   dot = sum_s (d*sc_s) * sum_l q_l x_l  -  sum_s (dmin*m_s) * sum_l x_l
// with the per-32 sums of x computed once per call: per 32 weights two FMAs plus one scale FMA, fewer vector
// operations than expanding d*sc*q - dmin*m in registers. Q6_K's scales cover only 16 weights, so it expands
// (d*sc)*(q-32) and does one FMA per 16. The kernels are bound by vector-op throughput, not memory: on Zen 4
// (512-bit ops split in two) AVX-512 runs at AVX2 speed except for Q5_K, which gains from vpternlogd, and
// other float conversions (vpermps from a 16-entry table, the 2^23 magic-number trick) measured no faster.
// The portable versions only run off x86 (e.g. arm64) and are written so the compiler can vectorize them.
#include "ckquant_k.h"
#include <stdlib.h>
#include <string.h>

// ggml (and the Swift reference) round `d1 * q` before subtracting `m1`; a contracted FMA would not, so the
// dequantized values would stop being bit-identical. Vector code spells its FMAs out explicitly.
#pragma STDC FP_CONTRACT OFF

#include "ck_common.h"

#define QK_K 256

typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } block_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } block_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } block_q6_K;
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K is 144 bytes");
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K is 176 bytes");
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K is 210 bytes");


// The eight 6-bit scales (out[0..7]) and mins (out[8..15]) of a Q4_K/Q5_K block: ggml's get_scale_min_k4 for
// every sub-block. Byte by byte so it is right on any endianness; the x86 paths use k4_unpack_le.
static inline void k4_unpack(const uint8_t *q, uint8_t out[16]) {
    for (int j = 0; j < 4; j++) {
        out[j] = q[j] & 63;
        out[8 + j] = q[j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        out[j] = (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4);
        out[8 + j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// ---------------------------------------------------------------- portable

// One Q4_K block to 256 floats, in ggml's operation order (branch-free loops the compiler can vectorize).
static void block_q4_K_to_f32(const block_q4_K *b, float *y) {
    const float d = h2f(b->d), dmin = h2f(b->dmin);
    const uint8_t *q = b->qs;
    uint8_t sm[16];
    k4_unpack(b->scales, sm);
    for (int c = 0; c < 4; c++) {
        const float d1 = d * sm[2 * c], m1 = dmin * sm[8 + 2 * c];
        const float d2 = d * sm[2 * c + 1], m2 = dmin * sm[8 + 2 * c + 1];
        for (int l = 0; l < 32; l++) y[l] = d1 * (float)(q[l] & 0xF) - m1;
        for (int l = 0; l < 32; l++) y[32 + l] = d2 * (float)(q[l] >> 4) - m2;
        q += 32;
        y += 64;
    }
}

// One Q5_K block to 256 floats, in ggml's operation order; bit 2c (2c+1) of qh[l] is worth 16 in sub-block 2c (2c+1).
static void block_q5_K_to_f32(const block_q5_K *b, float *y) {
    const float d = h2f(b->d), dmin = h2f(b->dmin);
    const uint8_t *q = b->qs, *qh = b->qh;
    uint8_t sm[16];
    k4_unpack(b->scales, sm);
    for (int c = 0; c < 4; c++) {
        const float d1 = d * sm[2 * c], m1 = dmin * sm[8 + 2 * c];
        const float d2 = d * sm[2 * c + 1], m2 = dmin * sm[8 + 2 * c + 1];
        for (int l = 0; l < 32; l++) y[l] = d1 * (float)((q[l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4)) - m1;
        for (int l = 0; l < 32; l++) y[32 + l] = d2 * (float)((q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4)) - m2;
        q += 32;
        y += 64;
    }
}

// One Q6_K block to 256 floats, in ggml's operation order `(d*sc)*q`. Element 32n+l of each 128-half takes
// the low (n = 0, 1) or high (n = 2, 3) nibble of ql[l + 32(n&1)] and bits 2n..2n+1 of qh[l]; one loop per
// 16 elements that share a scale, so the compiler can vectorize it.
static void block_q6_K_to_f32(const block_q6_K *b, float *y) {
    const float d = h2f(b->d);
    for (int hf = 0; hf < 2; hf++) {
        const uint8_t *ql = b->ql + 64 * hf, *qh = b->qh + 32 * hf;
        const int8_t *sc = b->scales + 8 * hf;
        for (int n = 0; n < 4; n++) {
            const uint8_t *qn = ql + 32 * (n & 1);
            const int shift = 4 * (n >> 1);
            for (int j = 0; j < 2; j++) {
                const float s = d * sc[2 * n + j];
                for (int l = 16 * j; l < 16 * j + 16; l++) {
                    const int q = (((qn[l] >> shift) & 0xF) | (((qh[l] >> (2 * n)) & 3) << 4)) - 32;
                    y[128 * hf + 32 * n + l] = s * (float)q;
                }
            }
        }
    }
}

// Portable Q4_K rows to f32.
static void dequant_q4_K_generic(const void *src, float *dst, size_t n) {
    const block_q4_K *b = src;
    for (size_t i = 0; i < n / QK_K; i++) block_q4_K_to_f32(&b[i], dst + i * QK_K);
}

// Portable Q5_K rows to f32.
static void dequant_q5_K_generic(const void *src, float *dst, size_t n) {
    const block_q5_K *b = src;
    for (size_t i = 0; i < n / QK_K; i++) block_q5_K_to_f32(&b[i], dst + i * QK_K);
}

// Portable Q6_K rows to f32.
static void dequant_q6_K_generic(const void *src, float *dst, size_t n) {
    const block_q6_K *b = src;
    for (size_t i = 0; i < n / QK_K; i++) block_q6_K_to_f32(&b[i], dst + i * QK_K);
}

// Four-float vector (GCC/Clang extension): SSE on x86, NEON on arm64, without target-specific intrinsics.
typedef float v4f __attribute__((vector_size(16)));

// Unaligned load of four floats.
static inline v4f load4(const float *p) {
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

// Dot of 256 dequantized weights with x over four 4-lane accumulators (the auto-vectorizer mangles the
// equivalent scalar loop into shuffles because it may not reassociate a float reduction).
static float dot256(const float *w, const float *x) {
    v4f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (int j = 0; j < QK_K; j += 16) {
        s0 += load4(w + j) * load4(x + j);
        s1 += load4(w + j + 4) * load4(x + j + 4);
        s2 += load4(w + j + 8) * load4(x + j + 8);
        s3 += load4(w + j + 12) * load4(x + j + 12);
    }
    v4f s = (s0 + s1) + (s2 + s3);
    return (s[0] + s[1]) + (s[2] + s[3]);
}

// Portable mat-vecs: dequantize one block into a stack buffer (exact ggml values), then dot it with x.
static void matvec_q4_K_generic(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / QK_K;
    float t[QK_K];
    for (size_t r = r0; r < r1; r++) {
        const block_q4_K *b = (const block_q4_K *)w + r * nb;
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            block_q4_K_to_f32(&b[i], t);
            acc += dot256(t, x + i * QK_K);
        }
        y[r] = acc;
    }
}

// Portable Q5_K mat-vec (see matvec_q4_K_generic).
static void matvec_q5_K_generic(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / QK_K;
    float t[QK_K];
    for (size_t r = r0; r < r1; r++) {
        const block_q5_K *b = (const block_q5_K *)w + r * nb;
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            block_q5_K_to_f32(&b[i], t);
            acc += dot256(t, x + i * QK_K);
        }
        y[r] = acc;
    }
}

// Portable Q6_K mat-vec (see matvec_q4_K_generic).
static void matvec_q6_K_generic(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / QK_K;
    float t[QK_K];
    for (size_t r = r0; r < r1; r++) {
        const block_q6_K *b = (const block_q6_K *)w + r * nb;
        float acc = 0;
        for (size_t i = 0; i < nb; i++) {
            block_q6_K_to_f32(&b[i], t);
            acc += dot256(t, x + i * QK_K);
        }
        y[r] = acc;
    }
}

#ifdef CK_X86
// The scales and mins of a Q4_K/Q5_K block with 32-bit masks (ggml's utmp trick; x86 is little-endian):
// out[0..7] scales, out[8..15] mins, as k4_unpack.
static inline void k4_unpack_le(const uint8_t *q, uint8_t out[16]) {
    uint32_t u[4];
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    memcpy(u, q, 12);
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    const uint32_t mins_lo = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[2] = mins_lo;
    u[0] &= k1;
    memcpy(out, u, 16);
}

// Scratch for the per-32 sums of x: on the stack for any realistic row width, else on the heap.
#define XSUM_STACK 1024

// ---------------------------------------------------------------- AVX-512

// Per-32 sums of x (k/32 values), the Q4_K/Q5_K min term's input.
TGT_AVX512 static void xsums32_avx512(const float *x, float *s, size_t k) {
    for (size_t b = 0; b < k / 32; b++)
        s[b] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_loadu_ps(x + 32 * b), _mm512_loadu_ps(x + 32 * b + 16)));
}

// Shared Q4_K/Q5_K mat-vec: `five` selects Q5_K (qh bits add 16); bytes/qh/qs give the block layout.
// Each 16 quant bytes yield 16 weights of two sub-blocks (low nibbles: sub-block 2c, high: 2c+1);
// four accumulators keep the per-sub-block FMAs off one dependency chain.
TGT_AVX512 static inline __attribute__((always_inline)) void matvec_q45_K_avx512(
    const uint8_t *w, size_t bytes, size_t qhoff, size_t qsoff, int five,
    const float *x, float *y, size_t k, size_t r0, size_t r1) {
    if (r0 >= r1) return;
    size_t nb = k / QK_K;
    float stackbuf[XSUM_STACK];
    float *xs = nb * 8 <= XSUM_STACK ? stackbuf : malloc(nb * 8 * sizeof(float));
    if (!xs) abort();
    xsums32_avx512(x, xs, k);
    const __m512i m15 = _mm512_set1_epi32(15), b16 = _mm512_set1_epi32(16);
    for (size_t r = r0; r < r1; r++) {
        const uint8_t *row = w + r * nb * bytes;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
        __m256 macc = _mm256_setzero_ps();
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *blk = row + i * bytes, *qs = blk + qsoff, *qh = blk + qhoff;
            uint16_t dh, mh;
            memcpy(&dh, blk, 2);
            memcpy(&mh, blk + 2, 2);
            const float d = CK_H2F(dh), dmin = CK_H2F(mh);
            uint8_t sm[16];
            k4_unpack_le(blk + 4, sm);
            float dsc[8];
            _mm256_storeu_ps(dsc, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)sm)))));
            __m256 mf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(sm + 8))));
            macc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(dmin), mf), _mm256_loadu_ps(xs + 8 * i), macc);
            // High bits of Q5_K pre-shifted so bit p of qh[l] lands on bit 4 after a right shift by p.
            __m512i h0 = _mm512_setzero_si512(), h1 = _mm512_setzero_si512();
            if (five) {
                h0 = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qh)), 4);
                h1 = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qh + 16))), 4);
            }
            const float *xb = x + i * QK_K;
            for (int c = 0; c < 4; c += 2) {
                // Chunks c and c+1 (sub-blocks 2c..2c+3) go to the four accumulators.
                __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qs + 32 * c)));
                __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qs + 32 * c + 16)));
                __m512i v2 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qs + 32 * c + 32)));
                __m512i v3 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qs + 32 * c + 48)));
                __m512i l0 = _mm512_and_si512(v0, m15), l1 = _mm512_and_si512(v1, m15);
                __m512i l2 = _mm512_and_si512(v2, m15), l3 = _mm512_and_si512(v3, m15);
                __m512i u0 = _mm512_srli_epi32(v0, 4), u1 = _mm512_srli_epi32(v1, 4);
                __m512i u2 = _mm512_srli_epi32(v2, 4), u3 = _mm512_srli_epi32(v3, 4);
                if (five) {
                    // A | (B & C) = ternary-logic 0xF8: adds the fifth bit in one instruction.
                    l0 = _mm512_ternarylogic_epi32(l0, _mm512_srli_epi32(h0, 2 * c), b16, 0xF8);
                    l1 = _mm512_ternarylogic_epi32(l1, _mm512_srli_epi32(h1, 2 * c), b16, 0xF8);
                    u0 = _mm512_ternarylogic_epi32(u0, _mm512_srli_epi32(h0, 2 * c + 1), b16, 0xF8);
                    u1 = _mm512_ternarylogic_epi32(u1, _mm512_srli_epi32(h1, 2 * c + 1), b16, 0xF8);
                    l2 = _mm512_ternarylogic_epi32(l2, _mm512_srli_epi32(h0, 2 * c + 2), b16, 0xF8);
                    l3 = _mm512_ternarylogic_epi32(l3, _mm512_srli_epi32(h1, 2 * c + 2), b16, 0xF8);
                    u2 = _mm512_ternarylogic_epi32(u2, _mm512_srli_epi32(h0, 2 * c + 3), b16, 0xF8);
                    u3 = _mm512_ternarylogic_epi32(u3, _mm512_srli_epi32(h1, 2 * c + 3), b16, 0xF8);
                }
                const float *xc = xb + 64 * c;
                __m512 t0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(l1), _mm512_loadu_ps(xc + 16), _mm512_mul_ps(_mm512_cvtepi32_ps(l0), _mm512_loadu_ps(xc)));
                __m512 t1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(u1), _mm512_loadu_ps(xc + 48), _mm512_mul_ps(_mm512_cvtepi32_ps(u0), _mm512_loadu_ps(xc + 32)));
                __m512 t2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(l3), _mm512_loadu_ps(xc + 80), _mm512_mul_ps(_mm512_cvtepi32_ps(l2), _mm512_loadu_ps(xc + 64)));
                __m512 t3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(u3), _mm512_loadu_ps(xc + 112), _mm512_mul_ps(_mm512_cvtepi32_ps(u2), _mm512_loadu_ps(xc + 96)));
                acc0 = _mm512_fmadd_ps(_mm512_set1_ps(dsc[2 * c]), t0, acc0);
                acc1 = _mm512_fmadd_ps(_mm512_set1_ps(dsc[2 * c + 1]), t1, acc1);
                acc2 = _mm512_fmadd_ps(_mm512_set1_ps(dsc[2 * c + 2]), t2, acc2);
                acc3 = _mm512_fmadd_ps(_mm512_set1_ps(dsc[2 * c + 3]), t3, acc3);
            }
        }
        __m128 m = _mm_add_ps(_mm256_castps256_ps128(macc), _mm256_extractf128_ps(macc, 1));
        m = _mm_add_ps(m, _mm_movehl_ps(m, m));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        y[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3))) - _mm_cvtss_f32(m);
    }
    if (xs != stackbuf) free(xs);
}

// AVX-512 Q4_K mat-vec: the shared kernel with Q4_K offsets and no fifth bit.
TGT_AVX512 static void matvec_q4_K_avx512(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    matvec_q45_K_avx512(w, sizeof(block_q4_K), 0, offsetof(block_q4_K, qs), 0, x, y, k, r0, r1);
}

// AVX-512 Q5_K mat-vec: the shared kernel with Q5_K offsets and qh bits.
TGT_AVX512 static void matvec_q5_K_avx512(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    matvec_q45_K_avx512(w, sizeof(block_q5_K), offsetof(block_q5_K, qh), offsetof(block_q5_K, qs), 1, x, y, k, r0, r1);
}

// Shared Q4_K/Q5_K dequantizer: per sub-block `d*sc` and `dmin*m` as scalars, then mul and sub (no FMA).
TGT_AVX512 static inline __attribute__((always_inline)) void dequant_q45_K_avx512(
    const uint8_t *src, size_t bytes, size_t qhoff, size_t qsoff, int five, float *dst, size_t n) {
    const __m512i m15 = _mm512_set1_epi32(15), b16 = _mm512_set1_epi32(16);
    for (size_t i = 0; i < n / QK_K; i++) {
        const uint8_t *blk = src + i * bytes, *qs = blk + qsoff, *qh = blk + qhoff;
        uint16_t dh, mh;
        memcpy(&dh, blk, 2);
        memcpy(&mh, blk + 2, 2);
        const float d = CK_H2F(dh), dmin = CK_H2F(mh);
        uint8_t sm[16];
        k4_unpack_le(blk + 4, sm);
        __m512i h[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
        if (five) {
            h[0] = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qh)), 4);
            h[1] = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qh + 16))), 4);
        }
        float *y = dst + i * QK_K;
        for (int c = 0; c < 4; c++) {
            const __m512 d1 = _mm512_set1_ps(d * sm[2 * c]), m1 = _mm512_set1_ps(dmin * sm[8 + 2 * c]);
            const __m512 d2 = _mm512_set1_ps(d * sm[2 * c + 1]), m2 = _mm512_set1_ps(dmin * sm[8 + 2 * c + 1]);
            for (int j = 0; j < 2; j++) {
                __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qs + 32 * c + 16 * j)));
                __m512i lo = _mm512_and_si512(v, m15), hi = _mm512_srli_epi32(v, 4);
                if (five) {
                    lo = _mm512_ternarylogic_epi32(lo, _mm512_srli_epi32(h[j], 2 * c), b16, 0xF8);
                    hi = _mm512_ternarylogic_epi32(hi, _mm512_srli_epi32(h[j], 2 * c + 1), b16, 0xF8);
                }
                _mm512_storeu_ps(y + 64 * c + 16 * j, _mm512_sub_ps(_mm512_mul_ps(d1, _mm512_cvtepi32_ps(lo)), m1));
                _mm512_storeu_ps(y + 64 * c + 32 + 16 * j, _mm512_sub_ps(_mm512_mul_ps(d2, _mm512_cvtepi32_ps(hi)), m2));
            }
        }
    }
}

// AVX-512 Q4_K rows to f32.
TGT_AVX512 static void dequant_q4_K_avx512(const void *src, float *dst, size_t n) {
    dequant_q45_K_avx512(src, sizeof(block_q4_K), 0, offsetof(block_q4_K, qs), 0, dst, n);
}

// AVX-512 Q5_K rows to f32.
TGT_AVX512 static void dequant_q5_K_avx512(const void *src, float *dst, size_t n) {
    dequant_q45_K_avx512(src, sizeof(block_q5_K), offsetof(block_q5_K, qh), offsetof(block_q5_K, qs), 1, dst, n);
}

// The 128 six-bit values of one Q6_K half-block as unsigned bytes q (0..63), in output order: out[n] holds
// elements 32n..32n+31 (ql low nibbles, ql+32 low, ql high, ql+32 high; qh bit pairs 0-1, 2-3, 4-5, 6-7).
// 16-bit shifts leak bits across bytes, but only into positions the masks clear.
TGT_AVX2 static inline void q6_half_u8(const uint8_t *ql, const uint8_t *qh, __m256i out[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x30);
    __m256i a = _mm256_loadu_si256((const __m256i *)ql), b = _mm256_loadu_si256((const __m256i *)(ql + 32));
    __m256i h = _mm256_loadu_si256((const __m256i *)qh);
    out[0] = _mm256_or_si256(_mm256_and_si256(a, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m3));
    out[1] = _mm256_or_si256(_mm256_and_si256(b, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m3));
    out[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4), _mm256_and_si256(h, m3));
    out[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), m4), _mm256_and_si256(_mm256_srli_epi16(h, 2), m3));
}

// As q6_half_u8, as signed bytes q-32.
TGT_AVX2 static inline void q6_half_bytes(const uint8_t *ql, const uint8_t *qh, __m256i out[4]) {
    q6_half_u8(ql, qh, out);
    for (int n = 0; n < 4; n++) out[n] = _mm256_sub_epi8(out[n], _mm256_set1_epi8(32));
}

// The 16 per-16 scales of a Q6_K block times d, as ggml's `d * sc[is]`.
TGT_AVX512 static inline void q6_scales_avx512(const block_q6_K *b, float dsc[16]) {
    __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->scales)));
    _mm512_storeu_ps(dsc, _mm512_mul_ps(_mm512_set1_ps(CK_H2F(b->d)), sc));
}

// Q6_K mat-vec: weights (d*sc)*(q-32) expanded exactly as in dequantization, one FMA per 16 weights.
TGT_AVX512 static void matvec_q6_K_avx512(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / QK_K;
    for (size_t r = r0; r < r1; r++) {
        const block_q6_K *b = (const block_q6_K *)w + r * nb;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
        for (size_t i = 0; i < nb; i++) {
            float dsc[16];
            q6_scales_avx512(&b[i], dsc);
            const float *xb = x + i * QK_K;
            for (int hf = 0; hf < 2; hf++) {
                __m256i q[4];
                q6_half_bytes(b[i].ql + 64 * hf, b[i].qh + 32 * hf, q);
                const float *xh = xb + 128 * hf;
                const float *s = dsc + 8 * hf;
                for (int n = 0; n < 4; n += 2) {
                    __m512 w0 = _mm512_mul_ps(_mm512_set1_ps(s[2 * n]), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q[n]))));
                    __m512 w1 = _mm512_mul_ps(_mm512_set1_ps(s[2 * n + 1]), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q[n], 1))));
                    __m512 w2 = _mm512_mul_ps(_mm512_set1_ps(s[2 * n + 2]), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q[n + 1]))));
                    __m512 w3 = _mm512_mul_ps(_mm512_set1_ps(s[2 * n + 3]), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q[n + 1], 1))));
                    acc0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xh + 32 * n), acc0);
                    acc1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xh + 32 * n + 16), acc1);
                    acc2 = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xh + 32 * n + 32), acc2);
                    acc3 = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xh + 32 * n + 48), acc3);
                }
            }
        }
        y[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
    }
}

// AVX-512 Q6_K rows to f32: (d*sc) per 16 values times q-32, stored.
TGT_AVX512 static void dequant_q6_K_avx512(const void *src, float *dst, size_t n) {
    const block_q6_K *b = src;
    for (size_t i = 0; i < n / QK_K; i++) {
        float dsc[16];
        q6_scales_avx512(&b[i], dsc);
        for (int hf = 0; hf < 2; hf++) {
            __m256i q[4];
            q6_half_bytes(b[i].ql + 64 * hf, b[i].qh + 32 * hf, q);
            float *y = dst + i * QK_K + 128 * hf;
            for (int n = 0; n < 4; n++) {
                _mm512_storeu_ps(y + 32 * n, _mm512_mul_ps(_mm512_set1_ps(dsc[8 * hf + 2 * n]), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q[n])))));
                _mm512_storeu_ps(y + 32 * n + 16, _mm512_mul_ps(_mm512_set1_ps(dsc[8 * hf + 2 * n + 1]), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q[n], 1)))));
            }
        }
    }
}

// ---------------------------------------------------------------- AVX2

// Horizontal sum of 8 lanes.
TGT_AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Per-32 sums of x, as xsums32_avx512.
TGT_AVX2 static void xsums32_avx2(const float *x, float *s, size_t k) {
    for (size_t b = 0; b < k / 32; b++) {
        const float *p = x + 32 * b;
        __m256 v = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)),
                                 _mm256_add_ps(_mm256_loadu_ps(p + 16), _mm256_loadu_ps(p + 24)));
        s[b] = hsum8(v);
    }
}

// 8 zero-extended quant bytes as int32 lanes.
TGT_AVX2 static inline __m256i u8x8_epi32(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }

// Shared Q4_K/Q5_K mat-vec, 8 lanes: same decomposition as the AVX-512 version, 8 quant bytes per step.
TGT_AVX2 static inline __attribute__((always_inline)) void matvec_q45_K_avx2(
    const uint8_t *w, size_t bytes, size_t qhoff, size_t qsoff, int five,
    const float *x, float *y, size_t k, size_t r0, size_t r1) {
    if (r0 >= r1) return;
    size_t nb = k / QK_K;
    float stackbuf[XSUM_STACK];
    float *xs = nb * 8 <= XSUM_STACK ? stackbuf : malloc(nb * 8 * sizeof(float));
    if (!xs) abort();
    xsums32_avx2(x, xs, k);
    const __m256i m15 = _mm256_set1_epi32(15), b16 = _mm256_set1_epi32(16);
    for (size_t r = r0; r < r1; r++) {
        const uint8_t *row = w + r * nb * bytes;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), macc = _mm256_setzero_ps();
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *blk = row + i * bytes, *qs = blk + qsoff, *qh = blk + qhoff;
            uint16_t dh, mh;
            memcpy(&dh, blk, 2);
            memcpy(&mh, blk + 2, 2);
            const float d = CK_H2F(dh), dmin = CK_H2F(mh);
            uint8_t sm[16];
            k4_unpack_le(blk + 4, sm);
            float dsc[8];
            _mm256_storeu_ps(dsc, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(u8x8_epi32(sm))));
            macc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(u8x8_epi32(sm + 8))), _mm256_loadu_ps(xs + 8 * i), macc);
            const float *xb = x + i * QK_K;
            for (int c = 0; c < 4; c++) {
                __m256 tl = _mm256_setzero_ps(), th = _mm256_setzero_ps();
                for (int j = 0; j < 4; j++) {
                    __m256i v = u8x8_epi32(qs + 32 * c + 8 * j);
                    __m256i lo = _mm256_and_si256(v, m15), hi = _mm256_srli_epi32(v, 4);
                    if (five) {
                        // Bit 2c (2c+1) of qh[l] moved to bit 4: shift left by 4, then right by the bit index.
                        __m256i h4 = _mm256_slli_epi32(u8x8_epi32(qh + 8 * j), 4);
                        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_srli_epi32(h4, 2 * c), b16));
                        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_srli_epi32(h4, 2 * c + 1), b16));
                    }
                    tl = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_loadu_ps(xb + 64 * c + 8 * j), tl);
                    th = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_loadu_ps(xb + 64 * c + 32 + 8 * j), th);
                }
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dsc[2 * c]), tl, acc0);
                acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dsc[2 * c + 1]), th, acc1);
            }
        }
        y[r] = hsum8(_mm256_add_ps(acc0, acc1)) - hsum8(macc);
    }
    if (xs != stackbuf) free(xs);
}

// AVX2 Q4_K mat-vec: the shared kernel with Q4_K offsets and no fifth bit.
TGT_AVX2 static void matvec_q4_K_avx2(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    matvec_q45_K_avx2(w, sizeof(block_q4_K), 0, offsetof(block_q4_K, qs), 0, x, y, k, r0, r1);
}

// AVX2 Q5_K mat-vec: the shared kernel with Q5_K offsets and qh bits.
TGT_AVX2 static void matvec_q5_K_avx2(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    matvec_q45_K_avx2(w, sizeof(block_q5_K), offsetof(block_q5_K, qh), offsetof(block_q5_K, qs), 1, x, y, k, r0, r1);
}

// Shared Q4_K/Q5_K dequantizer, 8 lanes; same operations as dequant_q45_K_avx512.
TGT_AVX2 static inline __attribute__((always_inline)) void dequant_q45_K_avx2(
    const uint8_t *src, size_t bytes, size_t qhoff, size_t qsoff, int five, float *dst, size_t n) {
    const __m256i m15 = _mm256_set1_epi32(15), b16 = _mm256_set1_epi32(16);
    for (size_t i = 0; i < n / QK_K; i++) {
        const uint8_t *blk = src + i * bytes, *qs = blk + qsoff, *qh = blk + qhoff;
        uint16_t dh, mh;
        memcpy(&dh, blk, 2);
        memcpy(&mh, blk + 2, 2);
        const float d = CK_H2F(dh), dmin = CK_H2F(mh);
        uint8_t sm[16];
        k4_unpack_le(blk + 4, sm);
        float *y = dst + i * QK_K;
        for (int c = 0; c < 4; c++) {
            const __m256 d1 = _mm256_set1_ps(d * sm[2 * c]), m1 = _mm256_set1_ps(dmin * sm[8 + 2 * c]);
            const __m256 d2 = _mm256_set1_ps(d * sm[2 * c + 1]), m2 = _mm256_set1_ps(dmin * sm[8 + 2 * c + 1]);
            for (int j = 0; j < 4; j++) {
                __m256i v = u8x8_epi32(qs + 32 * c + 8 * j);
                __m256i lo = _mm256_and_si256(v, m15), hi = _mm256_srli_epi32(v, 4);
                if (five) {
                    __m256i h4 = _mm256_slli_epi32(u8x8_epi32(qh + 8 * j), 4);
                    lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_srli_epi32(h4, 2 * c), b16));
                    hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_srli_epi32(h4, 2 * c + 1), b16));
                }
                _mm256_storeu_ps(y + 64 * c + 8 * j, _mm256_sub_ps(_mm256_mul_ps(d1, _mm256_cvtepi32_ps(lo)), m1));
                _mm256_storeu_ps(y + 64 * c + 32 + 8 * j, _mm256_sub_ps(_mm256_mul_ps(d2, _mm256_cvtepi32_ps(hi)), m2));
            }
        }
    }
}

// AVX2 Q4_K rows to f32.
TGT_AVX2 static void dequant_q4_K_avx2(const void *src, float *dst, size_t n) {
    dequant_q45_K_avx2(src, sizeof(block_q4_K), 0, offsetof(block_q4_K, qs), 0, dst, n);
}

// AVX2 Q5_K rows to f32.
TGT_AVX2 static void dequant_q5_K_avx2(const void *src, float *dst, size_t n) {
    dequant_q45_K_avx2(src, sizeof(block_q5_K), offsetof(block_q5_K, qh), offsetof(block_q5_K, qs), 1, dst, n);
}

// The 16 Q6_K scales times d, as q6_scales_avx512.
TGT_AVX2 static inline void q6_scales_avx2(const block_q6_K *b, float dsc[16]) {
    __m128i sc = _mm_loadu_si128((const __m128i *)b->scales);
    __m256 d = _mm256_set1_ps(CK_H2F(b->d));
    _mm256_storeu_ps(dsc, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
    _mm256_storeu_ps(dsc + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
}

// Signed bytes 8p..8p+7 of a 16-byte half as int32 lanes.
TGT_AVX2 static inline __m256i i8x8_epi32(__m128i v, int p) { return _mm256_cvtepi8_epi32(p ? _mm_srli_si128(v, 8) : v); }

// AVX2 Q6_K mat-vec: as matvec_q6_K_avx512 with 8 lanes and two accumulators.
TGT_AVX2 static void matvec_q6_K_avx2(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / QK_K;
    for (size_t r = r0; r < r1; r++) {
        const block_q6_K *b = (const block_q6_K *)w + r * nb;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (size_t i = 0; i < nb; i++) {
            float dsc[16];
            q6_scales_avx2(&b[i], dsc);
            for (int hf = 0; hf < 2; hf++) {
                __m256i q[4];
                q6_half_bytes(b[i].ql + 64 * hf, b[i].qh + 32 * hf, q);
                const float *xh = x + i * QK_K + 128 * hf;
                for (int n = 0; n < 4; n++) {
                    for (int j = 0; j < 2; j++) {
                        // Elements 32n+16j .. +15 share one scale.
                        __m128i part = j ? _mm256_extracti128_si256(q[n], 1) : _mm256_castsi256_si128(q[n]);
                        __m256 s = _mm256_set1_ps(dsc[8 * hf + 2 * n + j]);
                        __m256 w0 = _mm256_mul_ps(s, _mm256_cvtepi32_ps(i8x8_epi32(part, 0)));
                        __m256 w1 = _mm256_mul_ps(s, _mm256_cvtepi32_ps(i8x8_epi32(part, 1)));
                        acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xh + 32 * n + 16 * j), acc0);
                        acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xh + 32 * n + 16 * j + 8), acc1);
                    }
                }
            }
        }
        y[r] = hsum8(_mm256_add_ps(acc0, acc1));
    }
}

// AVX2 Q6_K rows to f32.
TGT_AVX2 static void dequant_q6_K_avx2(const void *src, float *dst, size_t n) {
    const block_q6_K *b = src;
    for (size_t i = 0; i < n / QK_K; i++) {
        float dsc[16];
        q6_scales_avx2(&b[i], dsc);
        for (int hf = 0; hf < 2; hf++) {
            __m256i q[4];
            q6_half_bytes(b[i].ql + 64 * hf, b[i].qh + 32 * hf, q);
            float *y = dst + i * QK_K + 128 * hf;
            for (int n = 0; n < 4; n++) {
                for (int j = 0; j < 2; j++) {
                    __m128i part = j ? _mm256_extracti128_si256(q[n], 1) : _mm256_castsi256_si128(q[n]);
                    __m256 s = _mm256_set1_ps(dsc[8 * hf + 2 * n + j]);
                    _mm256_storeu_ps(y + 32 * n + 16 * j, _mm256_mul_ps(s, _mm256_cvtepi32_ps(i8x8_epi32(part, 0))));
                    _mm256_storeu_ps(y + 32 * n + 16 * j + 8, _mm256_mul_ps(s, _mm256_cvtepi32_ps(i8x8_epi32(part, 1))));
                }
            }
        }
    }
}
#endif

// ---------------------------------------------------------------- dispatch

static int kq_cap = CK_AVX512;       // test override (ck_quant_k_set_level)

// The SIMD level to use: the CPU's best, capped by the test override.
static int kq_level(void) {
    int cpu = ck_cpu_level();
    return cpu < kq_cap ? cpu : kq_cap;
}

// Test hook: caps the level kq_level returns (see ckquant_k.h).
int ck_quant_k_set_level(int level) {
    kq_cap = level < 0 || level > CK_AVX512 ? CK_AVX512 : level;
    return kq_level();
}

#ifdef CK_X86
#define KQ_DISPATCH(name, ...)                                           \
    do {                                                                 \
        int l_ = kq_level();                                             \
        if (l_ >= CK_AVX512) { name##_avx512(__VA_ARGS__); return; }     \
        if (l_ >= CK_AVX2) { name##_avx2(__VA_ARGS__); return; }         \
        name##_generic(__VA_ARGS__);                                     \
    } while (0)
#else
#define KQ_DISPATCH(name, ...) name##_generic(__VA_ARGS__)
#endif

// Public entry points: dispatch to the best variant for this CPU (declared in ckquant_k.h).
void ck_dequant_q4_K(const void *src, float *dst, size_t n) { KQ_DISPATCH(dequant_q4_K, src, dst, n); }
void ck_dequant_q5_K(const void *src, float *dst, size_t n) { KQ_DISPATCH(dequant_q5_K, src, dst, n); }
void ck_dequant_q6_K(const void *src, float *dst, size_t n) { KQ_DISPATCH(dequant_q6_K, src, dst, n); }

void ck_matvec_q4_K(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) { KQ_DISPATCH(matvec_q4_K, w, x, y, k, r0, r1); }
void ck_matvec_q5_K(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) { KQ_DISPATCH(matvec_q5_K, w, x, y, k, r0, r1); }
void ck_matvec_q6_K(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1) { KQ_DISPATCH(matvec_q6_K, w, x, y, k, r0, r1); }

// ---------------------------------------------------------------- Q4_K panels for the integer GEMM
// Rows [0, rows) of a 16-row panel of Q4_K rows (k = 32·nb, rows rowBytes apart; rows..15 zero) in the layout of
// quant8.c's panels, kind 3: per super-block of 256 columns (CK_Q4K_PANEL_SUPER bytes), the 6-bit scales sc of its 8
// blocks as bytes, block s's 16 rows at 16·s, the mins m likewise at 128 + 16·s, the rows' f16 d at 256 + 2·j and
// dmin at 288 + 2·j, then per block s at 320 + 256·s the nibbles in Q4_0's panel order (row j's dword g at
// 64·g + 4·j, low nibble element 4g + i, high nibble element 16 + 4g + i). The file's 144 bytes per row and
// super-block become 148, where f32 products d·sc and dmin·m per block took 192.
void ck_q4_K_panel(const uint8_t *w, size_t rowBytes, size_t nb, size_t rows, uint8_t *dst) {
    memset(dst, 0, nb / 8 * CK_Q4K_PANEL_SUPER);
    for (size_t j = 0; j < rows; j++) {
        for (size_t i = 0; i < nb / 8; i++) {
            const block_q4_K *b = (const block_q4_K *)(w + j * rowBytes) + i;
            uint8_t sm[16], *sup = dst + i * CK_Q4K_PANEL_SUPER;
            k4_unpack(b->scales, sm);
            memcpy(sup + 256 + 2 * j, &b->d, 2);
            memcpy(sup + 288 + 2 * j, &b->dmin, 2);
            for (int s = 0; s < 8; s++) {
                const uint8_t *q = b->qs + 32 * (s / 2);
                int shift = 4 * (s & 1);
                uint8_t *out = sup + 320 + 256 * s;
                uint8_t packed[16];
                for (int t = 0; t < 16; t++)
                    packed[t] = (uint8_t)(((q[t] >> shift) & 15) | (((q[t + 16] >> shift) & 15) << 4));
                for (int g = 0; g < 4; g++) memcpy(out + 64 * g + 4 * j, packed + 4 * g, 4);
                sup[16 * s + j] = sm[s];
                sup[128 + 16 * s + j] = sm[8 + s];
            }
        }
    }
}

// Rows [0, rows) of a 16-row panel of Q6_K rows (k = 32·nb, rows rowBytes apart; rows..15 zero) in the layout of
// quant8.c's panels, kind 4: per super-block of 256 columns (CK_Q6K_PANEL_SUPER bytes, 212 per row against the
// file's 210, so that every 64-byte load stays inside a cache line), per block s of 32 columns at 384·s the low 4
// bits of q (0..63) as Q4_0's panel nibbles (row j's dword g at 64·g + 4·j: low nibbles elements 4g + i, high
// nibbles 16 + 4g + i) and at +256 its top 2 bits (for the weight register G = 0..7, elements 4G..4G+3, dword j of
// plane G / 4 holds element 4G + i's pair at bits 2·(G % 4) of byte i); then at 3072 + 16·h the int8 scales of the
// super-block's 16 halves of 16 columns (row j at + j), at 3328 + 2·j the rows' f16 d, and 32 bytes of padding.
#ifdef CK_X86
TGT_AVX2 void ck_q6_K_panel(const uint8_t *w, size_t rowBytes, size_t nb, size_t rows, uint8_t *dst) {
    memset(dst, 0, nb / 8 * CK_Q6K_PANEL_SUPER);
    for (size_t j = 0; j < rows; j++) {
        for (size_t i = 0; i < nb / 8; i++) {
            const block_q6_K *b = (const block_q6_K *)(w + j * rowBytes) + i;
            uint8_t q[QK_K], *sup = dst + i * CK_Q6K_PANEL_SUPER;
            for (int hf = 0; hf < 2; hf++) {
                __m256i h[4];
                q6_half_u8(b->ql + 64 * hf, b->qh + 32 * hf, h);
                for (int n = 0; n < 4; n++) _mm256_storeu_si256((__m256i *)(q + 128 * hf + 32 * n), h[n]);
            }
            for (int h = 0; h < 16; h++) sup[3072 + 16 * h + j] = (uint8_t)b->scales[h];
            memcpy(sup + 3328 + 2 * j, &b->d, 2);
            for (int s = 0; s < 8; s++) {
                const uint8_t *qs = q + 32 * s;
                uint8_t *out = sup + 384 * s, lo[16], hi[8] = {0};
                for (int t = 0; t < 16; t++) lo[t] = (uint8_t)((qs[t] & 15) | (qs[t + 16] & 15) << 4);
                for (int G = 0; G < 8; G++)
                    for (int e = 0; e < 4; e++) hi[4 * (G / 4) + e] |= (uint8_t)((qs[4 * G + e] >> 4) << (2 * (G % 4)));
                for (int g = 0; g < 4; g++) memcpy(out + 64 * g + 4 * j, lo + 4 * g, 4);
                memcpy(out + 256 + 4 * j, hi, 4);
                memcpy(out + 320 + 4 * j, hi + 4, 4);
            }
        }
    }
}
#endif

// ---------------------------------------------------------------- 8-bit activations (AVX-512 VNNI)
// The opt-in `--int8-activations` path for K-quant rows (llama.cpp quantizes x to 8 bits against K-quants too, as
// Q8_K blocks of 256; here x comes as ck_quantize_x_q8's blocks of 32, a scale each, which is finer). The weights'
// small unsigned integers multiply the activation bytes in dpbusd; per 32 weights one dpbusd, one conversion and one
// FMA by (weight scale · activation scale), where the f32 kernels above spend eight 16-lane operations.
// Q4_K/Q5_K: sub-block s of super-block i covers x block 8i + s exactly, so
//   dot = Σ_s (d·sc_s)·xd_b·Σ q·x̂  −  Σ_s (dmin·m_s)·xd_b·Σ x̂   (q in 0..15, or 0..31 with Q5_K's fifth bit).
// Q6_K: q in 0..63 stands for q − 32 with a scale per 16 weights; the −32 starts each dpbusd lane as −32 times
// the sum of the four activation bytes the lane multiplies (computed once per call), and the lanes of one x block
// take the block's two scales (lanes 0-3 and 4-7).
#ifdef CK_X86
TGT_VNNI static inline float hsum8_vnni(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

TGT_VNNI static inline __attribute__((always_inline)) void matvec_q45_K_q8_vnni(
    const uint8_t *w, size_t bytes, size_t qhoff, size_t qsoff, int five,
    const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1) {
    size_t nb = k / QK_K;
    const __m256i m15 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    for (size_t r = r0; r < r1; r++) {
        const uint8_t *row = w + r * nb * bytes;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), macc = _mm256_setzero_ps();
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *blk = row + i * bytes, *qs = blk + qsoff;
            uint16_t dh, mh;
            memcpy(&dh, blk, 2);
            memcpy(&mh, blk + 2, 2);
            uint8_t sm[16];
            k4_unpack_le(blk + 4, sm);
            // (d·sc_s)·xd_b for the 8 sub-blocks, and the mins' term (dmin·m_s)·xd_b·Σx̂_b summed as a vector.
            __m256 xdv = _mm256_loadu_ps(xd + 8 * i);
            __m256 dsc = _mm256_mul_ps(_mm256_set1_ps(CK_H2F(dh)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)sm))));
            __m256 dmn = _mm256_mul_ps(_mm256_set1_ps(CK_H2F(mh)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(sm + 8)))));
            macc = _mm256_fmadd_ps(dmn, _mm256_mul_ps(xdv, _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(xsum + 8 * i)))), macc);
            float s[8];
            _mm256_storeu_ps(s, _mm256_mul_ps(dsc, xdv));
            __m256i h = five ? _mm256_loadu_si256((const __m256i *)(blk + qhoff)) : _mm256_setzero_si256();
            const int8_t *xb = xq + (size_t)i * QK_K;
            for (int c = 0; c < 4; c++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
                __m256i lo = _mm256_and_si256(v, m15), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
                if (five) {
                    // Bit 2c (low nibbles) and 2c+1 (high) of each qh byte become the fifth bit (16).
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * c)), one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * c + 1)), one), 4));
                }
                __m256i p0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, _mm256_loadu_si256((const __m256i *)(xb + 64 * c)));
                __m256i p1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), hi, _mm256_loadu_si256((const __m256i *)(xb + 64 * c + 32)));
                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(s[2 * c]), _mm256_cvtepi32_ps(p0), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_set1_ps(s[2 * c + 1]), _mm256_cvtepi32_ps(p1), acc1);
            }
        }
        y[r] = hsum8_vnni(_mm256_add_ps(acc0, acc1)) - hsum8_vnni(macc);
    }
}

TGT_VNNI static void matvec_q4_K_q8_vnni(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y,
                                         size_t k, size_t r0, size_t r1) {
    matvec_q45_K_q8_vnni(w, sizeof(block_q4_K), 0, offsetof(block_q4_K, qs), 0, xq, xd, xsum, y, k, r0, r1);
}

TGT_VNNI static void matvec_q5_K_q8_vnni(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y,
                                         size_t k, size_t r0, size_t r1) {
    matvec_q45_K_q8_vnni(w, sizeof(block_q5_K), offsetof(block_q5_K, qh), offsetof(block_q5_K, qs), 1, xq, xd, xsum, y, k, r0, r1);
}

TGT_VNNI static void matvec_q6_K_q8_vnni(const void *w, const int8_t *xq, const float *xd, float *y, size_t k,
                                         size_t r0, size_t r1) {
    size_t nb = k / QK_K;
    // −32 · (sum of each group of 4 activation bytes): the start of every dpbusd lane.
    int32_t stackbuf[4096];
    int32_t *off = k / 4 <= 4096 ? stackbuf : malloc(k / 4 * sizeof(int32_t));
    if (!off) abort();
    for (size_t b = 0; b < k / 32; b++) {
        __m256i sum4 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), _mm256_loadu_si256((const __m256i *)(xq + 32 * b)));
        _mm256_storeu_si256((__m256i *)(off + 8 * b), _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum4, 5)));
    }
    const __m256i lanes = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    for (size_t r = r0; r < r1; r++) {
        const block_q6_K *b = (const block_q6_K *)w + r * nb;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (size_t i = 0; i < nb; i++) {
            __m128 dv = _mm_set1_ps(CK_H2F(b[i].d));
            const int8_t *xb = xq + i * QK_K;
            const int32_t *ob = off + i * (QK_K / 4);
            for (int hf = 0; hf < 2; hf++) {
                __m256i q[4];
                q6_half_u8(b[i].ql + 64 * hf, b[i].qh + 32 * hf, q);
                // The 8 scales of this half (two per 32 weights) times d.
                __m256 sc8 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b[i].scales + 8 * hf))));
                sc8 = _mm256_mul_ps(_mm256_set_m128(dv, dv), sc8);
                for (int n = 0; n < 4; n++) {
                    size_t xbk = 4 * hf + n;  // x block within the super-block
                    __m256i p = _mm256_dpbusd_epi32(_mm256_loadu_si256((const __m256i *)(ob + 8 * xbk)), q[n],
                                                    _mm256_loadu_si256((const __m256i *)(xb + 32 * xbk)));
                    __m256 sv = _mm256_permutevar8x32_ps(sc8, _mm256_add_epi32(lanes, _mm256_set1_epi32(2 * n)));
                    sv = _mm256_mul_ps(sv, _mm256_set1_ps(xd[i * 8 + xbk]));
                    if (n & 1) acc1 = _mm256_fmadd_ps(sv, _mm256_cvtepi32_ps(p), acc1);
                    else acc0 = _mm256_fmadd_ps(sv, _mm256_cvtepi32_ps(p), acc0);
                }
            }
        }
        y[r] = hsum8_vnni(_mm256_add_ps(acc0, acc1));
    }
    if (off != stackbuf) free(off);
}
#endif

// The exported Q4_K/Q5_K entries: the VNNI kernel where the CPU has it, 0 (the caller falls back) elsewhere.
#ifdef CK_X86
#define KQ8_ENTRY(NAME)                                                                                     \
    int ck_##NAME(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, \
                  size_t r0, size_t r1) {                                                                   \
        if (!ck_cpu_has_vnni()) return 0;                                                                   \
        NAME##_vnni(w, xq, xd, xsum, y, k, r0, r1);                                                         \
        return 1;                                                                                           \
    }
#else
#define KQ8_ENTRY(NAME)                                                                                     \
    int ck_##NAME(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, \
                  size_t r0, size_t r1) {                                                                   \
        (void)w; (void)xq; (void)xd; (void)xsum; (void)y; (void)k; (void)r0; (void)r1;                      \
        return 0;                                                                                           \
    }
#endif
KQ8_ENTRY(matvec_q4_K_q8)
KQ8_ENTRY(matvec_q5_K_q8)
#undef KQ8_ENTRY

int ck_matvec_q6_K_q8(const void *w, const int8_t *xq, const float *xd, float *y, size_t k, size_t r0, size_t r1) {
#ifdef CK_X86
    if (ck_cpu_has_vnni()) {
        matvec_q6_K_q8_vnni(w, xq, xd, y, k, r0, r1);
        return 1;
    }
#endif
    (void)w; (void)xq; (void)xd; (void)y; (void)k; (void)r0; (void)r1;
    return 0;
}
