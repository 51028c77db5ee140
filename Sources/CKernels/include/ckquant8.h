// Opt-in integer mat-vec for Q4_0/Q4_1/Q8_0 weights: the activation vector is quantized to 8-bit blocks once
// (as llama.cpp does), then each weight block is an integer dot product. Faster than the exact f32 path,
// but results no longer match an f32 reference to rounding (activations carry ~0.4% relative error).
#ifndef CKQUANT8_H
#define CKQUANT8_H
#include <stddef.h>
#include <stdint.h>

/// Quantizes n floats (a multiple of 32) to int8 blocks: qs[n], per-block scale d[n/32] and sum of q isum[n/32].
void ck_quantize_x_q8(const float *x, int8_t *qs, float *d, int32_t *isum, size_t n);

/// x as `levels` int8 levels, a block's side by side (level l of block b at qs + (b·levels + l)·32, d and isum
/// [b·levels + l]; one level is ck_quantize_x_q8's layout): level 0 is ck_quantize_x_q8's
/// quantization (up to the clamp at ±127), each next level quantizes the remainder the previous ones left, so that
/// x = Σ_l q_l·d_l to max|x|/254³ (about 2^-24) per block of 32 after three levels.
void ck_quantize_x_q8_levels(const float *x, size_t levels, int8_t *qs, float *d, int32_t *isum, size_t n);

/// y[r] = Σ_blocks d_w d_x Σ w_q x_q (plus the block offsets) for rows r in [r0, r1), with x given as int8 blocks.
void ck_matvec_q4_0_q8(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1);
/// See ck_matvec_q4_0_q8.
void ck_matvec_q4_1_q8(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1);
/// See ck_matvec_q4_0_q8.
void ck_matvec_q8_0_q8(const void *w, const int8_t *xq, const float *xd, const int32_t *xsum, float *y, size_t k, size_t r0, size_t r1);

/// Prefill with 8-bit activations: y[t·ys + r] = Σ_k W[r,k]·x̂[t,k] for rows r in [r0, r1) and T tokens, x̂ given as
/// ck_quantize_x_q8 writes it for each token (rows k apart: xq[T·k], xd and xsum [T·k/32]). kind 0: Q4_0, 1: Q4_1,
/// 2: Q8_0, 3: Q4_K, 4: Q6_K (k a multiple of 256; their panels are ck_q8act_panel_bytes long: Q4_K's 148 bytes
/// per row and 256 columns against the file's 144, Q6_K's 212 against 210). packed (may be NULL): the weight's
/// first packedRows rows (a multiple of 16) as ck_q8act_pack wrote them; whole panels inside it are read from there, every other row from w. The result does not depend on which.
/// Returns 0, doing nothing, when the CPU lacks AVX-512 VNNI or for another kind (the caller falls back); 1 otherwise.
int ck_gemm_q8act(int kind, const void *w, const void *packed, size_t packedRows, size_t k, size_t r0, size_t r1,
                  const int8_t *xq, const float *xd, const int32_t *xsum, size_t T, float *y, size_t ys);

/// ck_gemm_q8act for T tokens of `levels` levels each (1, or 3 as ck_quantize_x_q8_levels writes them, token t's
/// at xq + t·levels·k, xd and xsum + t·levels·k/32): y[t·ys + r] = Σ_l Σ_k W[r,k]·q_l[k]·d_l, the levels of a block
/// scaled and added smallest first. Returns 0, doing nothing, where ck_gemm_q8act would, or for other level counts.
/// halves (Q6_K, may be NULL): ck_q8act_half_sums of all T·levels·k activation bytes, which the caller computes once
/// for a whole product instead of once per call (NULL: computed here, per call).
int ck_gemm_q8act_levels(int kind, const void *w, const void *packed, size_t packedRows, size_t k, size_t r0, size_t r1,
                         const int8_t *xq, const float *xd, const int32_t *xsum, const int32_t *halves, size_t T,
                         size_t levels, float *y, size_t ys);

/// dst[i] = the sum of the signed bytes x[16·i ..< 16·i + 16], n a multiple of 64: the per-16-column activation sums
/// the Q6_K GEMM (kind 4) starts its integer sums from.
void ck_q8act_half_sums(const int8_t *x, size_t n, int32_t *dst);

/// Bytes of one 16-row panel of a kind-`kind` weight (see ck_gemm_q8act) with rows of k elements, as ck_q8act_pack
/// writes it (Q4_0/Q4_1/Q8_0: the 16 rows' bytes).
size_t ck_q8act_panel_bytes(int kind, size_t k);

/// Repacks panels p0..<p1 (rows 16·p0 ..< 16·p1) of the Q4_0/Q4_1/Q8_0 weight w (rows of k elements) into dst,
/// which has the same byte size as those rows and the same offsets (panel p at p·16·rowBytes), in the layout
/// ck_gemm_q8act reads without rebuilding panels. Q4_K and Q6_K (kinds 3, 4): panel p at p·ck_q8act_panel_bytes(kind, k)
/// (layouts in quant_k.c). Returns 0, doing nothing, without AVX-512 VNNI; 1 otherwise.
int ck_q8act_pack(int kind, const void *w, size_t k, size_t p0, size_t p1, void *dst);

/// The inverse of ck_q8act_pack: rows r0..<r1 (inside whole panels) of the packed weight as ggml rows, row r at
/// dst + (r - r0)·rowBytes. Portable; for paths that need the rows once the file's pages were given back. Does
/// nothing for Q4_K (kind 3), whose panels keep products of the ggml fields.
void ck_q8act_unpack(int kind, const void *packed, size_t k, size_t r0, size_t r1, void *dst);

#endif
