// Mat-vec and row-conversion kernels for ggml block-quantized weights (Q4_0, Q4_1, Q8_0).
// Activations stay f32: the quantized weights are expanded in registers and multiplied with exact
// f32 inputs, so results match a dequantized f32 reference to rounding (no int8 activation loss).
#ifndef CKQUANT_H
#define CKQUANT_H
#include <stddef.h>
#include <stdint.h>

/// Per-32-block sums of x (n/32 values); Q4_0 and Q4_1 dot products use them for their offsets.
void ck_block_sums32(const float *x, float *sums, size_t n);
/// Whether this CPU's Q4_0/Q4_1/Q8_0 mat-vec kernels read the block sums (the AVX-512 ones dequantize each block
/// exactly and do not, so callers may skip computing them).
int ck_quant_uses_block_sums(void);

/// y[r] = dot(W[r,:], x) for Q4_0 rows r in [r0, r1); k columns (a multiple of 32); xsum from ck_block_sums32.
void ck_matvec_q4_0(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1);
/// As ck_matvec_q4_0 for Q4_1 rows.
void ck_matvec_q4_1(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1);
/// As ck_matvec_q4_0 for Q8_0 rows (xsum unused, may be NULL).
void ck_matvec_q8_0(const void *w, const float *x, const float *xsum, float *y, size_t k, size_t r0, size_t r1);

/// y[v*ys + r] = dot(W[r,:], x[v*xs ...]) for nvec vectors and Q4_0 rows r in [r0, r1); xsum (stride ss) per
/// vector as for ck_matvec_q4_0. Each weight block is expanded once for all vectors; per vector the result is
/// bit for bit that of ck_matvec_q4_0.
void ck_matmul_q4_0(const void *w, const float *x, size_t xs, const float *xsum, size_t ss, float *y, size_t ys,
                    size_t nvec, size_t k, size_t r0, size_t r1);
/// As ck_matmul_q4_0 for Q4_1 rows.
void ck_matmul_q4_1(const void *w, const float *x, size_t xs, const float *xsum, size_t ss, float *y, size_t ys,
                    size_t nvec, size_t k, size_t r0, size_t r1);
/// As ck_matmul_q4_0 for Q8_0 rows (xsum unused, may be NULL).
void ck_matmul_q8_0(const void *w, const float *x, size_t xs, const float *xsum, size_t ss, float *y, size_t ys,
                    size_t nvec, size_t k, size_t r0, size_t r1);

/// Dequantizes n values (a multiple of 32) of Q4_0 / Q4_1 / Q8_0 data into dst.
void ck_dequant_q4_0(const void *src, float *dst, size_t n);
/// See ck_dequant_q4_0.
void ck_dequant_q4_1(const void *src, float *dst, size_t n);
/// See ck_dequant_q4_0.
void ck_dequant_q8_0(const void *src, float *dst, size_t n);

#endif
