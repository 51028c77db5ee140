// Small C kernels for the parts Swift cannot express portably without compiler flags:
// F16C/AVX2/AVX-512 code selected per function with target attributes and runtime CPU checks.
#ifndef CKERNELS_H
#define CKERNELS_H
#include <stddef.h>
#include <stdint.h>
#include "ckquant.h"
#include "ckquant8.h"
#include "ckquant_k.h"

/// Converts `n` IEEE half floats to f32.
void ck_f16_to_f32(const uint16_t *src, float *dst, size_t n);
/// Converts `n` f32 values to IEEE half floats (round to nearest even).
void ck_f32_to_f16(const float *src, uint16_t *dst, size_t n);
/// Converts `n` bfloat16 values to f32.
void ck_bf16_to_f32(const uint16_t *src, float *dst, size_t n);

/// y[r] = dot(W[r, :], x) for rows r in [r0, r1); W is f16 row-major with `k` columns.
void ck_matvec_f16(const uint16_t *w, const float *x, float *y, size_t k, size_t r0, size_t r1);
/// y[r] = dot(W[r, :], x) for rows r in [r0, r1); W is f32 row-major with `k` columns.
void ck_matvec_f32(const float *w, const float *x, float *y, size_t k, size_t r0, size_t r1);
/// out[t * ldo + r] = dot(W[r, :], x[t * ldx ...]) for rows r in [r0, r1) and tokens t < T; W is f16 row-major
/// with `k` columns. Every SIMD path (AVX-512, AVX2, portable C) has its own kernel, and each gives a token's
/// outputs the same bits whatever the other tokens of the call (prefill is batch invariant).
void ck_gemm_f16(const uint16_t *w, const float *x, size_t ldx, float *out, size_t ldo, size_t T, size_t k, size_t r0, size_t r1);
/// As ck_gemm_f16 for f32 rows `ldw` floats apart.
void ck_gemm_f32(const float *w, size_t ldw, const float *x, size_t ldx, float *out, size_t ldo, size_t T, size_t k, size_t r0, size_t r1);

/// y[r] = dot(W[r, :], x) for rows r in [r0, r1); W is bf16 row-major with `k` columns.
void ck_matvec_bf16(const uint16_t *w, const float *x, float *y, size_t k, size_t r0, size_t r1);

/// Dot product of two f32 vectors.
float ck_dot_f32(const float *a, const float *b, size_t n);
/// y += a * x over n elements.
void ck_axpy_f32(float a, const float *x, float *y, size_t n);

/// y[i] = e^x[i]; with AVX-512 16 lanes at a time, bit for bit glibc's expf (its FMA build), else expf itself.
void ck_expf(const float *x, float *y, size_t n);
/// Softmax of n floats in place (the maximum subtracted first); with AVX-512 the sum runs in 16 lanes.
void ck_softmax(float *x, size_t n);
/// out[i] = a[i] / (1 + e^-a[i]) · b[i] (SwiGLU: silu(a)·b), the same float operations as a scalar loop over expf.
void ck_swiglu(float *out, const float *a, const float *b, size_t n);
/// x[i] = x[i] / (1 + e^(-1.702·x[i])) in place (CLIP's QuickGELU), the same float operations as a scalar loop.
void ck_quick_gelu(float *x, size_t n);

/// One attention head over n cached positions: scores[p] = scale * q·K[p], softmax, out = Σ scores[p] V[p].
/// K and V rows are `stride` floats apart; `scores` needs n floats and holds the probabilities afterwards.
void ck_attend_head(const float *q, const float *k, const float *v, size_t n, size_t hd, size_t stride,
                    float scale, float *scores, float *out);

/// Returns a short name of the SIMD level the kernels dispatch to ("vnni", "avx512", "avx2", "generic"), after the
/// LLAMA_ADAPTER_SIMD cap.
const char *ck_simd_level(void);

#endif

/* Process-wide glibc malloc tuning for the command-line tool: blocks up to 256 MB come from the heap and the
   heap is not trimmed, so the multi-megabyte tile buffers kernels allocate per call are not mapped and
   page-cleared afresh each time. No-op elsewhere. */
void ck_keep_large_allocations(void);
