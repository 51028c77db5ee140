// Kernels for ggml's K-quant super-blocks (Q4_K, Q5_K, Q6_K: 256 weights per block, layouts in ggml-common.h).
// Dequantization is bit-exact with ggml's dequantize_row_q*_K; mat-vecs keep activations in f32 (no int8
// quantization of x), so they agree with a dequantized f32 reference to rounding.
#ifndef CKQUANT_K_H
#define CKQUANT_K_H
#include <stddef.h>
#include <stdint.h>

/// Dequantizes n values (a multiple of 256) of Q4_K data into dst, bit-identical to ggml.
void ck_dequant_q4_K(const void *src, float *dst, size_t n);
/// As ck_dequant_q4_K for Q5_K data.
void ck_dequant_q5_K(const void *src, float *dst, size_t n);
/// As ck_dequant_q4_K for Q6_K data.
void ck_dequant_q6_K(const void *src, float *dst, size_t n);

/// y[r] = dot(W[r,:], x) for Q4_K rows r in [r0, r1); k columns (a multiple of 256).
void ck_matvec_q4_K(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1);
/// As ck_matvec_q4_K for Q5_K rows.
void ck_matvec_q5_K(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1);
/// As ck_matvec_q4_K for Q6_K rows.
void ck_matvec_q6_K(const void *w, const float *x, float *y, size_t k, size_t r0, size_t r1);

/// With 8-bit activations (`--int8-activations`; x as ck_quantize_x_q8 writes it, blocks of 32): y[r] for Q4_K rows
/// r in [r0, r1) from integer products, per sub-block (d·sc)·xd·Σq·x̂ − (dmin·m)·xd·Σx̂. Returns 0, doing nothing,
/// without AVX-512 VNNI (the caller keeps the f32 kernel); 1 otherwise.
int ck_matvec_q4_K_q8(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1);
/// As ck_matvec_q4_K_q8 for Q5_K rows.
int ck_matvec_q5_K_q8(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1);
/// As ck_matvec_q4_K_q8 for Q6_K rows (its scale per 16 weights; the block sums of x are not needed).
int ck_matvec_q6_K_q8(const void *w, const int8_t *xq, const float *xd, float *y, size_t k, size_t r0, size_t r1);

/// For tests: caps the SIMD level of the K-quant kernels (0 portable, 1 AVX2, 2 AVX-512; negative restores the
/// CPU's best) so every variant can be checked on one machine. Returns the level now in effect.
int ck_quant_k_set_level(int level);

#endif
