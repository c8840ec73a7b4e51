/* int8-input / 1-bit-weight convolution (included by bnn_kernel.c).
 *
 * For a layer whose input quantizer is symmetric k-bit (k <= 8) and whose weights are +-1:
 *   code = clamp(rint(x / step), qmin, qmax)       (exactly the fake quantizer's rounding, half to even)
 *   dot[co] = sum_{t, ci} code[t, ci] * s[co, t, ci],   s in {-1, +1}
 *   out = float(dot) * mul[co] + add[co]
 * The products are additions and subtractions of the input codes, chosen by the weight bit. The codes
 * are stored biased as unsigned bytes u = code + 128 (zero padding = 128, code 0) so that `vpmaddubsw`
 * (unsigned byte x signed byte, adjacent pairs summed to int16) computes sum u * s; the bias adds
 * 128 * sum_{t, ci} s[co, t, ci], one constant per output channel (padding included, since a padded
 * tap holds code 0 = u 128), subtracted in the epilogue.  Each int16 lane gains at most 510 per step,
 * so 64 steps are accumulated in int16 before `vpmaddwd` widens them to int32.
 *
 * With AVX-512 VNNI (`vpdpbusd`: four u8 x s8 products summed straight into an int32 lane) a tile is 12 pixels x
 * 32 output channels in 24 zmm accumulators, with no int16 stage; otherwise AVX2 tiles of 6 pixels x 16 outputs.
 *
 * Layer constants (bytes): weights s as int8 [CB8, T, C4, 8, 4] (CB8 = 2 ceil(Cout / 16) blocks of 8 output
 * channels, C4 = ceil(Cin / 4) groups of 4 input channels; 0 for padded channels and outputs), then
 * corr int32 [CB8 * 8] = 128 * sum s.  Input image: uint8 [N, Hp, Wp, C4 * 4], padded with 128.
 */
typedef struct {
    const float* x; /* float32 [N, H, W, Cin] channels last */
    float step;
    int qmin, qmax;
    const int8_t* w;
    const int32_t* corr;
    const float* mul;
    const float* add;
    float* out; /* float32 [N, OH, OW, Cout] */
    int N, H, W, Cin, Cout, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, nthreads;
} qconv_args;

/* CB8 is even: the tiles read blocks of 16 output channels */
#define QCB8(Cout) (2 * (((Cout) + 15) / 16))

static int64_t qconv_consts_bytes(int Cout, int Cin, int T)
{
    const int64_t CB8 = QCB8(Cout), C4 = (Cin + 3) / 4;
    return CB8 * T * C4 * 32 + CB8 * 8 * 4;
}

/* weights from the packed words [1, CB, T, Wg, NR] (bit 1 = -1) */
static void qconv_consts_fill(const uint64_t* words, int Cout, int Cin, int T, uint8_t* c)
{
    const int CB8 = QCB8(Cout), C4 = (Cin + 3) / 4, Wg = (Cin + 63) / 64;
    int8_t* w = (int8_t*)c;
    int32_t* corr = (int32_t*)(c + (int64_t)CB8 * T * C4 * 32);
    memset(c, 0, (size_t)qconv_consts_bytes(Cout, Cin, T));
    for (int co = 0; co < Cout; ++co) {
        const int cb = co / NR, n = co % NR;
        int32_t sum = 0;
        for (int t = 0; t < T; ++t)
            for (int ci = 0; ci < Cin; ++ci) {
                const uint64_t word = words[(((int64_t)cb * T + t) * Wg + ci / 64) * NR + n];
                const int s = (word >> (ci % 64)) & 1 ? -1 : 1;
                w[((((int64_t)(co / 8) * T + t) * C4 + ci / 4) * 8 + co % 8) * 4 + ci % 4] = (int8_t)s;
                sum += s;
            }
        corr[co] = 128 * sum;
    }
}

static inline uint8_t qcode(float v, float step, int qmin, int qmax)
{
    float r = rintf(v / step);
    if (r < (float)qmin) r = (float)qmin;
    if (r > (float)qmax) r = (float)qmax;
    return (uint8_t)((int)r + 128);
}

#if BNN_X86 && defined(__GNUC__)
__attribute__((target("avx2"), always_inline)) static inline void qconv_tile_avx2_nm(
    const uint8_t* img, const int64_t* pix, const int64_t* soff, int S, const int8_t* w, int64_t wstride,
    const int32_t* corr, const float* mul, const float* add, float* o, int Cout, const int nm, int cn, int nts)
{
    /* nm <= 6 pixels (image offsets pix[m], as in the VNNI tile) x 16 output channels (two blocks of 8); steps
     * s = (tap, 4 input channels) at image offset soff[s]; int16 sums widened to int32 every 64 steps */
    __m256i c16[6][2], c32[6][2];
    const __m256i z = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
#pragma GCC unroll 6
    for (int m = 0; m < 6; ++m) c16[m][0] = c16[m][1] = c32[m][0] = c32[m][1] = z;
    const int32_t* w0 = (const int32_t*)w;
    const int32_t* w1 = (const int32_t*)w + wstride;
    const uint8_t *a0 = img + pix[0], *a1 = img + pix[nm > 1 ? 1 : 0], *a2 = img + pix[nm > 2 ? 2 : 0];
    const uint8_t *a3 = img + pix[nm > 3 ? 3 : 0], *a4 = img + pix[nm > 4 ? 4 : 0], *a5 = img + pix[nm > 5 ? 5 : 0];
    for (int s0 = 0; s0 < S; s0 += 64) {
        const int s1 = s0 + 64 < S ? s0 + 64 : S;
        if (nm == 6) {
            /* a full tile: the chunk in assembly, its 12 int16 accumulators in ymm0-11 (widened to int32 and
             * added into c32 at the end) and 4 temporaries in ymm12-15.  Compiled from C, every accumulator's add
             * went to a temporary and a register copy back: 12 extra instructions per step made the loop front-end
             * bound, at about 45 of the 64 int8 MACs per cycle that two vpmaddubsw a cycle give. */
            const int64_t* so = soff + s0;
            const int32_t* wp = w0 + (int64_t)s0 * 8;
            const int64_t wsb = (int64_t)(w1 - w0) * 4;
            int64_t cnt = s1 - s0;
            __asm__ volatile(
                "vpxor %%ymm0, %%ymm0, %%ymm0\n\t"
                "vpxor %%ymm1, %%ymm1, %%ymm1\n\t"
                "vpxor %%ymm2, %%ymm2, %%ymm2\n\t"
                "vpxor %%ymm3, %%ymm3, %%ymm3\n\t"
                "vpxor %%ymm4, %%ymm4, %%ymm4\n\t"
                "vpxor %%ymm5, %%ymm5, %%ymm5\n\t"
                "vpxor %%ymm6, %%ymm6, %%ymm6\n\t"
                "vpxor %%ymm7, %%ymm7, %%ymm7\n\t"
                "vpxor %%ymm8, %%ymm8, %%ymm8\n\t"
                "vpxor %%ymm9, %%ymm9, %%ymm9\n\t"
                "vpxor %%ymm10, %%ymm10, %%ymm10\n\t"
                "vpxor %%ymm11, %%ymm11, %%ymm11\n\t"
                "1:\n\t"
                "movq (%[so]), %%rax\n\t"
                "vmovdqu (%[wp]), %%ymm12\n\t"
                "vmovdqu (%[wp],%[wsb]), %%ymm13\n\t"
#define QASM(A, CA, CB)                                                                                               \
    "vpbroadcastd (%[" A "],%%rax), %%ymm14\n\t"                                                                     \
    "vpmaddubsw %%ymm12, %%ymm14, %%ymm15\n\t"                                                                       \
    "vpaddw %%ymm15, %%ymm" CA ", %%ymm" CA "\n\t"                                                                   \
    "vpmaddubsw %%ymm13, %%ymm14, %%ymm15\n\t"                                                                       \
    "vpaddw %%ymm15, %%ymm" CB ", %%ymm" CB "\n\t"
                QASM("a0", "0", "1") QASM("a1", "2", "3") QASM("a2", "4", "5")
                QASM("a3", "6", "7") QASM("a4", "8", "9") QASM("a5", "10", "11")
#undef QASM
                "addq $8, %[so]\n\t"
                "addq $32, %[wp]\n\t"
                "decq %[cnt]\n\t"
                "jnz 1b\n\t"
                "vpcmpeqw %%ymm12, %%ymm12, %%ymm12\n\t"
                "vpsrlw $15, %%ymm12, %%ymm12\n\t" /* int16 ones */
                "vpmaddwd %%ymm12, %%ymm0, %%ymm0\n\t"
                "vpaddd 0(%[c]), %%ymm0, %%ymm0\n\t"
                "vmovdqu %%ymm0, 0(%[c])\n\t"
                "vpmaddwd %%ymm12, %%ymm1, %%ymm1\n\t"
                "vpaddd 32(%[c]), %%ymm1, %%ymm1\n\t"
                "vmovdqu %%ymm1, 32(%[c])\n\t"
                "vpmaddwd %%ymm12, %%ymm2, %%ymm2\n\t"
                "vpaddd 64(%[c]), %%ymm2, %%ymm2\n\t"
                "vmovdqu %%ymm2, 64(%[c])\n\t"
                "vpmaddwd %%ymm12, %%ymm3, %%ymm3\n\t"
                "vpaddd 96(%[c]), %%ymm3, %%ymm3\n\t"
                "vmovdqu %%ymm3, 96(%[c])\n\t"
                "vpmaddwd %%ymm12, %%ymm4, %%ymm4\n\t"
                "vpaddd 128(%[c]), %%ymm4, %%ymm4\n\t"
                "vmovdqu %%ymm4, 128(%[c])\n\t"
                "vpmaddwd %%ymm12, %%ymm5, %%ymm5\n\t"
                "vpaddd 160(%[c]), %%ymm5, %%ymm5\n\t"
                "vmovdqu %%ymm5, 160(%[c])\n\t"
                "vpmaddwd %%ymm12, %%ymm6, %%ymm6\n\t"
                "vpaddd 192(%[c]), %%ymm6, %%ymm6\n\t"
                "vmovdqu %%ymm6, 192(%[c])\n\t"
                "vpmaddwd %%ymm12, %%ymm7, %%ymm7\n\t"
                "vpaddd 224(%[c]), %%ymm7, %%ymm7\n\t"
                "vmovdqu %%ymm7, 224(%[c])\n\t"
                "vpmaddwd %%ymm12, %%ymm8, %%ymm8\n\t"
                "vpaddd 256(%[c]), %%ymm8, %%ymm8\n\t"
                "vmovdqu %%ymm8, 256(%[c])\n\t"
                "vpmaddwd %%ymm12, %%ymm9, %%ymm9\n\t"
                "vpaddd 288(%[c]), %%ymm9, %%ymm9\n\t"
                "vmovdqu %%ymm9, 288(%[c])\n\t"
                "vpmaddwd %%ymm12, %%ymm10, %%ymm10\n\t"
                "vpaddd 320(%[c]), %%ymm10, %%ymm10\n\t"
                "vmovdqu %%ymm10, 320(%[c])\n\t"
                "vpmaddwd %%ymm12, %%ymm11, %%ymm11\n\t"
                "vpaddd 352(%[c]), %%ymm11, %%ymm11\n\t"
                "vmovdqu %%ymm11, 352(%[c])\n\t"
                : [so] "+r"(so), [wp] "+r"(wp), [cnt] "+r"(cnt)
                : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [a4] "r"(a4), [a5] "r"(a5), [wsb] "r"(wsb),
                  [c] "r"(&c32[0][0])
                : "rax", "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                  "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
        } else
        for (int st = s0; st < s1; ++st) {
            const int64_t off = soff[st];
            const __m256i wa = _mm256_loadu_si256((const __m256i*)(w0 + (int64_t)st * 8));
            const __m256i wb = _mm256_loadu_si256((const __m256i*)(w1 + (int64_t)st * 8));
#define QSTEP(m, am)                                                                                                 \
    if (m < nm) {                                                                                                    \
        int32_t v_;                                                                                                  \
        memcpy(&v_, am + off, 4);                                                                                    \
        const __m256i b_ = _mm256_set1_epi32(v_);                                                                    \
        c16[m][0] = _mm256_add_epi16(c16[m][0], _mm256_maddubs_epi16(b_, wa));                                       \
        c16[m][1] = _mm256_add_epi16(c16[m][1], _mm256_maddubs_epi16(b_, wb));                                       \
        __asm__("" : "+x"(c16[m][0]), "+x"(c16[m][1])); /* pixel by pixel: no spills */                          \
    }
            QSTEP(0, a0) QSTEP(1, a1) QSTEP(2, a2) QSTEP(3, a3) QSTEP(4, a4) QSTEP(5, a5)
#undef QSTEP
        }
        if (nm != 6) /* the assembly widened its sums into c32 itself */
#pragma GCC unroll 6
            for (int m = 0; m < nm; ++m)
                for (int v = 0; v < 2; ++v) {
                    c32[m][v] = _mm256_add_epi32(c32[m][v], _mm256_madd_epi16(c16[m][v], ones));
                    c16[m][v] = z;
                }
    }
#pragma GCC unroll 6
    for (int m = 0; m < nm; ++m) {
        float* om = o + (int64_t)m * Cout;
        for (int v = 0; v < 2; ++v) {
            const int rem = cn - 8 * v;
            if (rem <= 0) break;
            const __m256i d = _mm256_sub_epi32(c32[m][v], _mm256_loadu_si256((const __m256i*)(corr + 8 * v)));
            if (rem >= 8) {
                __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(d), _mm256_loadu_ps(mul + 8 * v));
                if (add) y = _mm256_add_ps(y, _mm256_loadu_ps(add + 8 * v));
                if (nts) _mm256_stream_ps(om + 8 * v, y);
                else _mm256_storeu_ps(om + 8 * v, y);
            } else {
                const __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(d), _mm256_maskload_ps(mul + 8 * v, mk));
                if (add) y = _mm256_add_ps(y, _mm256_maskload_ps(add + 8 * v, mk));
                _mm256_maskstore_ps(om + 8 * v, mk, y);
            }
        }
    }
}

__attribute__((target("avx2"))) static void qconv_tile_avx2(const uint8_t* img, const int64_t* pix,
                                                             const int64_t* soff, int S, const int8_t* w,
                                                             int64_t wstride, const int32_t* corr, const float* mul,
                                                             const float* add, float* o, int Cout, int nm, int cn,
                                                             int nts)
{
    switch (nm) {
    case 6: qconv_tile_avx2_nm(img, pix, soff, S, w, wstride, corr, mul, add, o, Cout, 6, cn, nts); break;
    case 5: qconv_tile_avx2_nm(img, pix, soff, S, w, wstride, corr, mul, add, o, Cout, 5, cn, nts); break;
    case 4: qconv_tile_avx2_nm(img, pix, soff, S, w, wstride, corr, mul, add, o, Cout, 4, cn, nts); break;
    case 3: qconv_tile_avx2_nm(img, pix, soff, S, w, wstride, corr, mul, add, o, Cout, 3, cn, nts); break;
    case 2: qconv_tile_avx2_nm(img, pix, soff, S, w, wstride, corr, mul, add, o, Cout, 2, cn, nts); break;
    default: qconv_tile_avx2_nm(img, pix, soff, S, w, wstride, corr, mul, add, o, Cout, 1, cn, nts); break;
    }
}

/* AVX-512 VNNI present (set at module init; the int8 kernel's ISA 2 uses it where the CPU has it) */
static int qconv_vnni_ok = 0;

/* pixels per tile of the VNNI tile (the AVX2 tile: 6) */
#define QTP_VNNI 12

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"), always_inline)) static inline void qconv_tile_vnni_nm(
    const uint8_t* img, const int64_t* pix, const int64_t* soff, int S, const int8_t* w, int64_t wstride,
    const int32_t* corr, const float* mul, const float* add, float* o, int Cout, const int nm, const int nb, int cn)
{
    /* nm <= 12 pixels x nb <= 2 zmm of 16 output channels: step s = (tap, 4 input channels) at image offset
     * soff[s]; two blocks of 8 outputs (wstride int32 apart) make one zmm of 16 x 4 signed bytes; per pixel one
     * broadcast of its 4 biased input bytes and nb vpdpbusd (64 products each) into its int32 accumulators.
     * Named accumulators (not an array) and an empty asm per pixel keep them in registers across the loop.
     * The pixels' addresses come from the image offsets pix[m] (written long before), not from pointers the
     * caller has just stored: a vector copy of those would wait on store forwarding at every tile start. */
    const __m512i z = _mm512_setzero_si512();
    __m512i c0a = z, c0b = z, c1a = z, c1b = z, c2a = z, c2b = z, c3a = z, c3b = z, c4a = z, c4b = z, c5a = z,
            c5b = z, c6a = z, c6b = z, c7a = z, c7b = z, c8a = z, c8b = z, c9a = z, c9b = z, c10a = z, c10b = z,
            c11a = z, c11b = z;
    const uint8_t* ap[QTP_VNNI];
    for (int m = 0; m < QTP_VNNI; ++m) ap[m] = img + pix[m < nm ? m : 0];
    const int32_t* w0 = (const int32_t*)w;
    for (int st = 0; st < S; ++st) {
        const int64_t off = soff[st];
        const int32_t* ws = w0 + (int64_t)st * 8;
        const __m512i wv0 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)ws)),
                                               _mm256_loadu_si256((const __m256i*)(ws + wstride)), 1);
        __m512i wv1 = wv0;
        if (nb > 1)
            wv1 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(ws + 2 * wstride))),
                                     _mm256_loadu_si256((const __m256i*)(ws + 3 * wstride)), 1);
#define VSTEP(m)                                                                                                     \
    if (m < nm) {                                                                                                    \
        int32_t v_;                                                                                                  \
        memcpy(&v_, ap[m] + off, 4);                                                                                 \
        const __m512i b_ = _mm512_set1_epi32(v_);                                                                    \
        c##m##a = _mm512_dpbusd_epi32(c##m##a, b_, wv0);                                                             \
        if (nb > 1) c##m##b = _mm512_dpbusd_epi32(c##m##b, b_, wv1);                                                 \
        __asm__("" : "+v"(c##m##a), "+v"(c##m##b));                                                                  \
    }
        VSTEP(0) VSTEP(1) VSTEP(2) VSTEP(3) VSTEP(4) VSTEP(5) VSTEP(6) VSTEP(7) VSTEP(8) VSTEP(9) VSTEP(10) VSTEP(11)
#undef VSTEP
    }
    for (int v = 0; v < nb; ++v) {
        const int rem = cn - 16 * v;
        const __mmask16 mk = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1u);
        const __m512i cv = _mm512_maskz_loadu_epi32(mk, corr + 16 * v);
        const __m512 mv = _mm512_maskz_loadu_ps(mk, mul + 16 * v);
        const __m512 bv = add ? _mm512_maskz_loadu_ps(mk, add + 16 * v) : _mm512_setzero_ps();
#define VOUT(m)                                                                                                      \
    if (m < nm) {                                                                                                    \
        __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(v ? c##m##b : c##m##a, cv)), mv);             \
        if (add) y = _mm512_add_ps(y, bv);                                                                           \
        _mm512_mask_storeu_ps(o + (int64_t)m * Cout + 16 * v, mk, y);                                                \
    }
        VOUT(0) VOUT(1) VOUT(2) VOUT(3) VOUT(4) VOUT(5) VOUT(6) VOUT(7) VOUT(8) VOUT(9) VOUT(10) VOUT(11)
#undef VOUT
    }
}

/* nm pixels (image offsets pix[0..nm)) x cn <= 32 output channels (one or two zmm of 16) */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) static void qconv_tile_vnni(
    const uint8_t* img, const int64_t* pix, const int64_t* soff, int S, const int8_t* w, int64_t wstride,
    const int32_t* corr, const float* mul, const float* add, float* o, int Cout, int nm, int cn)
{
    if (cn > 16) {
        if (nm == QTP_VNNI) qconv_tile_vnni_nm(img, pix, soff, S, w, wstride, corr, mul, add, o, Cout, QTP_VNNI, 2, cn);
        else qconv_tile_vnni_nm(img, pix, soff, S, w, wstride, corr, mul, add, o, Cout, nm, 2, cn);
    } else {
        if (nm == QTP_VNNI) qconv_tile_vnni_nm(img, pix, soff, S, w, wstride, corr, mul, add, o, Cout, QTP_VNNI, 1, cn);
        else qconv_tile_vnni_nm(img, pix, soff, S, w, wstride, corr, mul, add, o, Cout, nm, 1, cn);
    }
}

/* the codes + 128 of 8 floats as int32 lanes: rint(x / step) as rint(x * (1 / step)); the product is within
 * 2^-22 |q| of the rounded quotient, so the two round alike unless q lies within 2^-14 of a half-integer (for
 * |q| < 256; beyond 129 both clamp alike); those vectors (rare) divide */
__attribute__((target("avx2"), always_inline)) static inline __m256i qcode8_avx2(const float* xp, __m256 inv, __m256 st,
                                                                                 __m256 lo, __m256 hi)
{
    const __m256 half = _mm256_set1_ps(0.5f), lim = _mm256_set1_ps(0x1p-12f);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 x = _mm256_loadu_ps(xp), q = _mm256_mul_ps(x, inv);
    __m256 r = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 dist = _mm256_sub_ps(half, _mm256_and_ps(_mm256_sub_ps(q, r), absm));
    if (_mm256_movemask_ps(_mm256_cmp_ps(dist, lim, _CMP_LE_OQ)))
        r = _mm256_round_ps(_mm256_div_ps(x, st), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
    return _mm256_add_epi32(_mm256_cvtps_epi32(r), _mm256_set1_epi32(128)); /* 0..255 */
}

/* codes of one pixel's Cin floats as biased bytes (u = code + 128), 32 at a time, then 8, then one */
__attribute__((target("avx2"))) static void qcode_pixel_avx2(const float* xp, uint8_t* op, int Cin, float step,
                                                              int qmin, int qmax)
{
    const __m256 st = _mm256_set1_ps(step), lo = _mm256_set1_ps((float)qmin), hi = _mm256_set1_ps((float)qmax);
    const __m256 inv = _mm256_set1_ps(1.0f / step);
    int c = 0;
    for (; c + 32 <= Cin; c += 32) { /* 32 codes packed to bytes at once: two packs and a dword permute */
        const __m256i p01 = _mm256_packus_epi32(qcode8_avx2(xp + c, inv, st, lo, hi),
                                                qcode8_avx2(xp + c + 8, inv, st, lo, hi));
        const __m256i p23 = _mm256_packus_epi32(qcode8_avx2(xp + c + 16, inv, st, lo, hi),
                                                qcode8_avx2(xp + c + 24, inv, st, lo, hi));
        /* dwords of the byte pack: 4 codes of vector v's low half at v, of its high half at 4 + v */
        const __m256i b = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23),
                                                      _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i*)(op + c), b);
    }
    for (; c + 8 <= Cin; c += 8) {
        const __m256i u = qcode8_avx2(xp + c, inv, st, lo, hi);
        const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
        _mm_storel_epi64((__m128i*)(op + c), _mm_packus_epi16(w16, w16));
    }
    for (; c < Cin; ++c) op[c] = qcode(xp[c], step, qmin, qmax);
}

/* the same codes 16 at a time (AVX-512): the lanes near a rounding tie alone are divided */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) static void qcode_pixel_avx512(const float* xp, uint8_t* op,
                                                                                         int Cin, float step, int qmin,
                                                                                         int qmax)
{
    const __m512 st = _mm512_set1_ps(step), lo = _mm512_set1_ps((float)qmin), hi = _mm512_set1_ps((float)qmax);
    const __m512 inv = _mm512_set1_ps(1.0f / step), lim = _mm512_set1_ps(0x1p-12f); /* as qcode8_avx2 */
    const __m512 half = _mm512_set1_ps(0.5f);
    const __m512i b128 = _mm512_set1_epi32(128);
    for (int c = 0; c < Cin; c += 16) {
        const __mmask16 k = Cin - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (Cin - c)) - 1u);
        const __m512 x = _mm512_maskz_loadu_ps(k, xp + c), q = _mm512_mul_ps(x, inv);
        __m512 r = _mm512_roundscale_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512 dist = _mm512_sub_ps(half, _mm512_abs_ps(_mm512_sub_ps(q, r)));
        const __mmask16 near = _mm512_cmp_ps_mask(dist, lim, _CMP_LE_OQ);
        if (near)
            r = _mm512_mask_roundscale_ps(r, near, _mm512_div_ps(x, st), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
        const __m512i u = _mm512_add_epi32(_mm512_cvtps_epi32(r), b128); /* 0..255 */
        _mm_mask_storeu_epi8(op + c, k, _mm512_cvtepi32_epi8(u));
    }
}
#endif

static void qconv_tile_scalar(const uint8_t* const* a, const int64_t* tapoff, int T, int C4, const int8_t* w,
                              const int32_t* corr, const float* mul, const float* add, float* o, int Cout, int nm,
                              int cn)
{
    const int64_t wstride = (int64_t)T * C4 * 32;
    for (int m = 0; m < nm; ++m)
        for (int n = 0; n < cn; ++n) {
            const int8_t* wn = w + (n / 8) * wstride + (n % 8) * 4;
            int32_t s = 0;
            for (int t = 0; t < T; ++t) {
                const uint8_t* ap = a[m] + tapoff[t];
                for (int j = 0; j < C4; ++j)
                    for (int i = 0; i < 4; ++i) s += (int32_t)ap[4 * j + i] * wn[((int64_t)t * C4 + j) * 32 + i];
            }
            const float d = (float)(s - corr[n]);
            const float y = d * mul[n];
            o[(int64_t)m * Cout + n] = add ? y + add[n] : y;
        }
}

/* 0, or -1 when out of memory */
static int qconv_run(const qconv_args* p, int isa)
{
    const int C4 = (p->Cin + 3) / 4, Cp = 4 * C4, T = p->KH * p->KW;
    /* a 1x1 unpadded strided conv codes only the pixels it reads, then runs with stride 1 */
    const int sub = p->KH == 1 && p->KW == 1 && p->ph == 0 && p->pw == 0 && (p->sh > 1 || p->sw > 1);
    const int uh = sub ? p->sh : 1, uw = sub ? p->sw : 1, sh = sub ? 1 : p->sh, sw = sub ? 1 : p->sw;
    const int Hs = sub ? p->OH : p->H, Ws = sub ? p->OW : p->W;
    const int Hp = Hs + 2 * p->ph, Wp = Ws + 2 * p->pw;
#if BNN_X86 && defined(__GNUC__)
    const int vnni = isa >= 2 && qconv_vnni_ok;
#else
    const int vnni = 0;
#endif
    const int TP = vnni ? 12 : 6; /* output pixels per tile */
    const int64_t NP = (int64_t)p->N * p->OH * p->OW, ntiles = (NP + TP - 1) / TP;
    uint8_t* img = (uint8_t*)malloc((size_t)p->N * Hp * Wp * Cp);
    int64_t* tapoff = (int64_t*)malloc(sizeof(int64_t) * (size_t)(T + NP + (int64_t)T * C4));
    if (!img || !tapoff) { free(img); free(tapoff); return -1; }
    for (int kh = 0; kh < p->KH; ++kh)
        for (int kw = 0; kw < p->KW; ++kw)
            tapoff[kh * p->KW + kw] = ((int64_t)kh * p->dh * Wp + (int64_t)kw * p->dw) * Cp;
    /* the image offset of every output pixel's first tap (no divisions in the tiles) */
    int64_t* pixoff = tapoff + T;
    /* the image offset of every step (tap, 4 input channels) from a pixel's first tap */
    int64_t* soff = pixoff + NP;
    for (int t = 0; t < T; ++t)
        for (int j = 0; j < C4; ++j) soff[(int64_t)t * C4 + j] = tapoff[t] + 4 * j;
    const int OB = vnni ? 32 : 16; /* output channels per tile */
    const int64_t rows = (int64_t)p->N * Hp, nblk = (p->Cout + OB - 1) / OB, items = ntiles * nblk;
    /* items pixel-major (every block of a tile's pixels before the next tile: each thread writes whole output
     * pixels, in order) when all the weights fit in L1; otherwise blocks outermost, each block's weights reused
     * by all of a thread's pixels */
    const int pmajor = (int64_t)QCB8(p->Cout) * T * C4 * 32 <= (32 << 10);
    int nt = p->nthreads;
    if (items < 2 * nt) nt = 1;
    /* streaming (non-temporal) stores of the AVX2 tiles' full 8-channel outputs when each thread's share of the
     * output exceeds its L2 (as in the binary kernel): no read-for-ownership of lines that only get written */
    const int nts = (int64_t)NP * p->Cout * 4 > ((int64_t)1 << 20) * nt && (p->Cout % 8) == 0 &&
                    (((uintptr_t)p->out) & 31) == 0;
    const int8_t* wts = p->w;
#pragma omp parallel num_threads(nt)
    {
        /* the pixel offsets (no barrier of their own: the coding's, below, orders them before the tiles) */
#pragma omp for schedule(static) nowait
        for (int64_t r = 0; r < (int64_t)p->N * p->OH; ++r) {
            const int n = (int)(r / p->OH), oh = (int)(r % p->OH);
            for (int ow = 0; ow < p->OW; ++ow)
                pixoff[r * p->OW + ow] = (((int64_t)n * Hp + (int64_t)oh * sh) * Wp + (int64_t)ow * sw) * Cp;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const int n = (int)(r / Hp), i = (int)(r % Hp) - p->ph;
            uint8_t* orow = img + r * Wp * Cp;
            if (i < 0 || i >= Hs) { memset(orow, 128, (size_t)Wp * Cp); continue; }
            memset(orow, 128, (size_t)p->pw * Cp);
            memset(orow + (int64_t)(p->pw + Ws) * Cp, 128, (size_t)p->pw * Cp);
            const float* xr = p->x + ((int64_t)n * p->H + (int64_t)i * uh) * p->W * p->Cin;
            for (int j = 0; j < Ws; ++j) {
                uint8_t* op = orow + (int64_t)(p->pw + j) * Cp;
                const float* xp = xr + (int64_t)j * uw * p->Cin;
#if BNN_X86 && defined(__GNUC__)
                /* the input is usually cold, and a strided 1x1 conv reads it with gaps: fetch 8 pixels ahead */
                if (j + 8 < Ws) {
                    const char* pf = (const char*)(xp + (int64_t)8 * uw * p->Cin);
                    for (int b = 0; b < p->Cin * 4; b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
                }
                if (isa >= 2) qcode_pixel_avx512(xp, op, p->Cin, p->step, p->qmin, p->qmax);
                else if (isa >= 1) qcode_pixel_avx2(xp, op, p->Cin, p->step, p->qmin, p->qmax);
                else
#endif
                    for (int c = 0; c < p->Cin; ++c) op[c] = qcode(xp[c], p->step, p->qmin, p->qmax);
                for (int c = p->Cin; c < Cp; ++c) op[c] = 128;
            }
        }
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; ++it) {
            /* a tile: TP consecutive output pixels (across row ends) x one block of OB output channels */
            const int cb = pmajor ? (int)(it % nblk) : (int)(it / ntiles);
            const int64_t pix0 = (pmajor ? it / nblk : it % ntiles) * TP;
            const int nm = NP - pix0 < TP ? (int)(NP - pix0) : TP;
            const int c0 = cb * OB, cn = p->Cout - c0 < OB ? p->Cout - c0 : OB;
            const int8_t* wb = wts + (int64_t)(c0 / 8) * T * C4 * 32;
            float* o = p->out + pix0 * p->Cout + c0;
#if BNN_X86 && defined(__GNUC__)
            if (vnni) {
                qconv_tile_vnni(img, pixoff + pix0, soff, T * C4, wb, (int64_t)T * C4 * 8, p->corr + c0, p->mul + c0,
                                p->add ? p->add + c0 : NULL, o, p->Cout, nm, cn);
                continue;
            }
            if (isa >= 1) {
                qconv_tile_avx2(img, pixoff + pix0, soff, T * C4, wb, (int64_t)T * C4 * 8, p->corr + c0, p->mul + c0,
                                p->add ? p->add + c0 : NULL, o, p->Cout, nm, cn, nts);
                continue;
            }
#endif
            const uint8_t* ap[6];
            for (int m = 0; m < nm; ++m) ap[m] = img + pixoff[pix0 + m];
            qconv_tile_scalar(ap, tapoff, T, C4, wb, p->corr + c0, p->mul + c0, p->add ? p->add + c0 : NULL, o,
                              p->Cout, nm, cn);
        }
#if BNN_X86 && defined(__GNUC__)
        if (nts) _mm_sfence(); /* the streaming stores ordered before the region ends */
#endif
    }
    free(img);
    free(tapoff);
    return 0;
}
