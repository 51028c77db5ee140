// Shared by the kernel files: x86 target attributes for per-function SIMD levels, and a portable
// half-to-float conversion (exact for every input, no F16C needed). Private to CKernels.
#ifndef CK_COMMON_H
#define CK_COMMON_H
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define CK_X86 1
#include <immintrin.h>
#define TGT_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TGT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define TGT_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
// Half to float in SIMD kernels (F16C). Not _cvtsh_ss: clang emits it as a vpinsrw that merges into whatever
// register it picks, at times a loop's accumulator, so each block then waits for the previous block's FMA (the
// 7B Q8_0 int8 mat-vec's loop was one chain). The empty asm makes the zero-extending vmovd's register the input,
// which clang would otherwise fold back into the same vpinsrw.
TGT_AVX2 static inline __attribute__((always_inline)) float ck_h2f_f16c(uint16_t h) {
    __m128i v = _mm_cvtsi32_si128(h);
    __asm__("" : "+x"(v));
    return _mm_cvtss_f32(_mm_cvtph_ps(v));
}
#define CK_H2F(h) ck_h2f_f16c(h)
#endif

// SIMD levels of the kernels, detected once for the whole target (defined in kernels.c).
enum { CK_GENERIC = 0, CK_AVX2 = 1, CK_AVX512 = 2 };
/// Best level this CPU supports: AVX2 needs FMA and F16C; AVX-512 needs F, BW and VL.
int ck_cpu_level(void);
/// True when AVX-512 VNNI with VL is available (integer dot products of the 8-bit activation path).
int ck_cpu_has_vnni(void);

/// Bytes of one 256-column super-block of a 16-row Q4_K panel (quant_k.c's ck_q4_K_panel, quant8.c's GEMM kind 3):
/// 148 per row, the file's 144 and the 4 of its two f16 scales' products kept apart as bytes.
#define CK_Q4K_PANEL_SUPER 2368
/// Rows [0, rows) of a 16-row Q4_K panel (k = 32·nb columns, rows rowBytes apart) into dst (see quant_k.c).
void ck_q4_K_panel(const uint8_t *w, size_t rowBytes, size_t nb, size_t rows, uint8_t *dst);
/// Bytes of one 256-column super-block of a 16-row Q6_K panel (quant_k.c's ck_q6_K_panel, quant8.c's GEMM kind 4):
/// 212 per row, the file's 210 and padding that keeps the super-blocks on cache lines.
#define CK_Q6K_PANEL_SUPER 3392
/// Rows [0, rows) of a 16-row Q6_K panel (k = 32·nb columns, rows rowBytes apart) into dst (see quant_k.c).
void ck_q6_K_panel(const uint8_t *w, size_t rowBytes, size_t nb, size_t rows, uint8_t *dst);

// IEEE half to f32 (subnormals normalised, inf/NaN kept).
static inline float h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) bits = sign;
        else {
            exp = 113;
            while ((mant & 0x400) == 0) { mant <<= 1; exp--; }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
    else bits = sign | ((exp + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
#endif
