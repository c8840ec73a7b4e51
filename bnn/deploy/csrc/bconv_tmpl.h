/* Binary convolution kernels, instantiated once per ISA by bnn_kernel.c
 * (which defines SUFFIX and BNN_ISA before including this).
 *
 * Arithmetic (XNOR-Net, Rastegari et al. 2016): with +1 -> bit 0 and -1 -> bit 1,
 * dot(a, w) = K - 2 * popcount(a XOR w) over the K valid bits.
 *
 * Zero padding.  The input is first packed into a *padded* bit image whose
 * border words are 0 (bit 0 = +1), so every output pixel runs the same
 * branch-free loop over all T taps:  acc = sum_t popcount(a_t XOR w_t), where a
 * tap in the border adds popcount(w_t).  The fake-binarized conv pads its +-1
 * input with 0, i.e. such a tap must contribute nothing; hence
 *     dot = Tv * Cg - 2 * (acc - P) = bias - 2 * acc,   bias = Tv * Cg + 2 * P,
 * with Tv the number of valid taps and P the sum of popcount(w_t) over the
 * padded taps.  The valid taps of an output pixel are a product of an
 * interval of kernel rows and an interval of kernel columns, so `bias` takes
 * only a few values ("classes", 9 for a 3x3 conv with padding 1): one small
 * float table per layer, read by the epilogue  out = (bias - 2 float(acc)) * mul + add
 * (exact in float32 for K < 2^23, which bnn.deploy.functional.native_supports requires).
 */
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
/* words of the padded bit image per input word: the AVX2 tiles read it nibble-split (2 words per word) */
#define SPLIT (BNN_ISA == 1 ? 2 : 1)

/* ---------------------------------------------------------------------------------------------- */
/* sign packing of one input pixel: C = G * Cg floats -> G * Wg words                               */
/* bit = 1 (value -1) where x < thr[c] (thr = -bias of the RSign shift; 0 when thr is NULL).        */
static inline void CAT(packpix, SUFFIX)(const float* xs, const float* thr, uint64_t* op, int G, int Cg, int Wg)
{
#if BNN_ISA == 2
    if ((Cg & 63) == 0) {
        const int nw = G * Wg;
        /* the four 16-bit compare masks joined in mask registers (kunpck), one move out per word */
#define WORD64(m0, m1, m2, m3) _cvtmask64_u64(_mm512_kunpackd(_mm512_kunpackw(m3, m2), _mm512_kunpackw(m1, m0)))
        if (thr) {
            for (int j = 0; j < nw; ++j) {
                const float* v = xs + 64 * j;
                const float* t = thr + 64 * j;
                op[j] = WORD64(_mm512_cmp_ps_mask(_mm512_loadu_ps(v), _mm512_loadu_ps(t), _CMP_LT_OQ),
                               _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 16), _mm512_loadu_ps(t + 16), _CMP_LT_OQ),
                               _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 32), _mm512_loadu_ps(t + 32), _CMP_LT_OQ),
                               _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 48), _mm512_loadu_ps(t + 48), _CMP_LT_OQ));
            }
        } else {
            const __m512 z = _mm512_setzero_ps();
            for (int j = 0; j < nw; ++j) {
                const float* v = xs + 64 * j;
                op[j] = WORD64(_mm512_cmp_ps_mask(_mm512_loadu_ps(v), z, _CMP_LT_OQ),
                               _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 16), z, _CMP_LT_OQ),
                               _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 32), z, _CMP_LT_OQ),
                               _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 48), z, _CMP_LT_OQ));
            }
        }
#undef WORD64
        return;
    }
#endif
    for (int g = 0; g < G; ++g) {
        for (int j = 0; j < Wg; ++j) {
            int c0 = j * 64;
            int cn = Cg - c0 < 64 ? Cg - c0 : 64;
            const float* v = xs + g * Cg + c0;
            const float* t = thr ? thr + g * Cg + c0 : NULL;
            uint64_t bits = 0;
            int b = 0;
#if BNN_ISA == 2
            for (; b < cn; b += 16) {
                int r = cn - b;
                __mmask16 k = r >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << r) - 1u);
                __m512 vv = _mm512_maskz_loadu_ps(k, v + b);
                __m512 th = t ? _mm512_maskz_loadu_ps(k, t + b) : _mm512_setzero_ps();
                bits |= (uint64_t)_mm512_mask_cmp_ps_mask(k, vv, th, _CMP_LT_OQ) << b;
            }
#elif BNN_ISA == 1
            for (; b + 8 <= cn; b += 8) {
                __m256 vv = _mm256_loadu_ps(v + b);
                __m256 th = t ? _mm256_loadu_ps(t + b) : _mm256_setzero_ps();
                bits |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(vv, th, _CMP_LT_OQ)) << b;
            }
#endif
            for (; b < cn; ++b) bits |= (uint64_t)(v[b] < (t ? t[b] : 0.0f)) << b;
            op[g * Wg + j] = bits;
        }
    }
}

/* after the tiles, inside the OpenMP region, the output rows statically scheduled like the row-major tiles (a
 * thread reads back the outputs it has just written, from its L2): (a) with shortcut, out += res * rgain_c
 * (Bi-Real Net; two roundings, like the torch path), (b) with pack, the output's sign words (p->ow) */
static void CAT(finish_rows, SUFFIX)(const conv_args* p, int shortcut, int pack)
{
    const int Cout = p->G * p->CoutG, Wo = (Cout + 63) / 64;
    const int64_t rows = (int64_t)p->N * p->OH, rlen = (int64_t)p->OW * Cout;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        if (shortcut) {
            float* __restrict o = p->out + r * rlen;
            const float* __restrict x = p->res + r * rlen;
            const float* __restrict g = p->rgain;
            if (g) {
                for (int64_t px = 0; px < rlen; px += Cout)
                    for (int c = 0; c < Cout; ++c) o[px + c] = o[px + c] + x[px + c] * g[c];
            } else {
                for (int64_t i = 0; i < rlen; ++i) o[i] = o[i] + x[i];
            }
        }
        if (pack)
            for (int64_t px = r * p->OW; px < (r + 1) * p->OW; ++px)
                CAT(packpix, SUFFIX)(p->out + px * Cout, p->othr, p->ow + px * Wo, 1, Cout, Wo);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* tile: MR consecutive output pixels of one row x one panel of NR output channels.                */
/*   a:     packed word of pixel 0, tap 0 (group g applied); pixel m is at a + m * pstep          */
/*   w:     weight panel [T, Wg, NR]                                                              */
/*   bias:  per pixel, float [NR] of the pixel's class                                            */
/*   o:     output of pixel 0 (channel c0); pixel m at o + m * Cout; cn valid channels            */
typedef struct {
    const int64_t* tapoff;
    int T, Wg, Cout;
    int64_t pstep;
} CAT(tile_ctx, SUFFIX);

#if BNN_ISA == 2
/* the exact dot of 8 channels: bias - 2 float(acc) (integers below 2^24: one exact fused operation) */
#define DOT8(acc, bs) _mm256_fnmadd_ps(_mm512_cvtepi64_ps(acc), _mm256_set1_ps(2.0f), (bs))

/* dot * mul + add of the 8 channels at bs / mul / add (two roundings), lanes outside mk 0 */
static inline __attribute__((always_inline)) __m256 CAT(ep8, SUFFIX)(__m512i acc, const float* bs, const float* mul,
                                                                   const float* add, __mmask8 mk)
{
    const __m256 d = DOT8(acc, _mm256_maskz_loadu_ps(mk, bs));
    const __m256 y = _mm256_mul_ps(d, _mm256_maskz_loadu_ps(mk, mul));
    return add ? _mm256_add_ps(y, _mm256_maskz_loadu_ps(mk, add)) : y;
}

static inline __attribute__((always_inline)) void CAT(tile_mr, SUFFIX)(
    const CAT(tile_ctx, SUFFIX) * ctx, const int MR_, const uint64_t* a, const uint64_t* w,
    const float* const* bias, const float* mul, const float* add, float* o, int cn, const int nts,
    const uint64_t* pf, uint32_t* ob, const float* othr, int64_t obs, const int bits, const float* r,
    const float* rg)
{
    __m512i c[6][4];
    const int T = ctx->T, Wg = ctx->Wg;
    const int64_t ps = ctx->pstep;
#pragma GCC unroll 6
    for (int m = 0; m < MR_; ++m)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) c[m][v] = _mm512_setzero_si512();
    for (int t = 0; t < T; ++t) {
        const uint64_t* ap = a + ctx->tapoff[t];
        for (int j = 0; j < Wg; ++j) {
            const __m512i w0 = _mm512_loadu_si512((const void*)(w));
            const __m512i w1 = _mm512_loadu_si512((const void*)(w + 8));
            const __m512i w2 = _mm512_loadu_si512((const void*)(w + 16));
            const __m512i w3 = _mm512_loadu_si512((const void*)(w + 24));
            w += NR;
            if (pf) { /* the same step of the panel the next work item reads (4 cache lines) */
                _mm_prefetch((const char*)pf, _MM_HINT_T0);
                _mm_prefetch((const char*)(pf + 8), _MM_HINT_T0);
                _mm_prefetch((const char*)(pf + 16), _MM_HINT_T0);
                _mm_prefetch((const char*)(pf + 24), _MM_HINT_T0);
                pf += NR;
            }
#pragma GCC unroll 6
            for (int m = 0; m < MR_; ++m) {
                const __m512i b = _mm512_set1_epi64((long long)ap[m * ps + j]);
                c[m][0] = _mm512_add_epi64(c[m][0], _mm512_popcnt_epi64(_mm512_xor_si512(b, w0)));
                c[m][1] = _mm512_add_epi64(c[m][1], _mm512_popcnt_epi64(_mm512_xor_si512(b, w1)));
                c[m][2] = _mm512_add_epi64(c[m][2], _mm512_popcnt_epi64(_mm512_xor_si512(b, w2)));
                c[m][3] = _mm512_add_epi64(c[m][3], _mm512_popcnt_epi64(_mm512_xor_si512(b, w3)));
            }
        }
    }
    /* epilogue: out = (bias - 2 acc) * mul + add (two roundings, like the torch path); nts: streaming
     * (non-temporal) stores for outputs much larger than the caches, which then skip the read-for-ownership */
#define STORE8(ptr, val) do { if (nts) _mm256_stream_ps((ptr), (val)); else _mm256_storeu_ps((ptr), (val)); } while (0)
    const int Cout = ctx->Cout;
    /* the masked epilogue, 8 channels at a time: sign words (bits: bit c of the panel's 32 = (out_c < othr_c), no
     * float stored), a real shortcut (r: out + r * rg at the output's position, rg NULL: 1; two roundings), or a
     * partial panel; a full plain panel takes the unmasked stores below */
    if (bits || r || cn != NR) {
#pragma GCC unroll 6
        for (int m = 0; m < MR_; ++m) {
            const float* bs = bias[m];
            float* om = o + (int64_t)m * Cout;
            uint32_t word = 0;
#pragma GCC unroll 4
            for (int v = 0; v < 4; ++v) {
                const int rem = cn - 8 * v;
                if (rem <= 0) break;
                const __mmask8 mk = rem >= 8 ? (__mmask8)0xff : (__mmask8)((1u << rem) - 1u);
                __m256 y = CAT(ep8, SUFFIX)(c[m][v], bs + 8 * v, mul + 8 * v, add ? add + 8 * v : NULL, mk);
                if (bits) {
                    word |= (uint32_t)_mm256_mask_cmp_ps_mask(mk, y, _mm256_maskz_loadu_ps(mk, othr + 8 * v),
                                                              _CMP_LT_OQ) << (8 * v);
                    continue;
                }
                if (r) {
                    const __m256 xr = _mm256_maskz_loadu_ps(mk, r + (int64_t)m * Cout + 8 * v);
                    y = _mm256_add_ps(y, rg ? _mm256_mul_ps(xr, _mm256_maskz_loadu_ps(mk, rg + 8 * v)) : xr);
                }
                _mm256_mask_storeu_ps(om + 8 * v, mk, y);
            }
            if (bits) ob[m * obs] = word;
        }
        return;
    }
    const __m256 u0 = _mm256_loadu_ps(mul), u1 = _mm256_loadu_ps(mul + 8);
    const __m256 u2 = _mm256_loadu_ps(mul + 16), u3 = _mm256_loadu_ps(mul + 24);
    if (add) {
        const __m256 d0 = _mm256_loadu_ps(add), d1 = _mm256_loadu_ps(add + 8);
        const __m256 d2 = _mm256_loadu_ps(add + 16), d3 = _mm256_loadu_ps(add + 24);
#pragma GCC unroll 6
        for (int m = 0; m < MR_; ++m) {
            const float* bs = bias[m];
            float* om = o + (int64_t)m * Cout;
#define EP(v, u, d) \
    STORE8(om + 8 * v, _mm256_add_ps(_mm256_mul_ps(DOT8(c[m][v], _mm256_loadu_ps(bs + 8 * v)), u), d));
            EP(0, u0, d0) EP(1, u1, d1) EP(2, u2, d2) EP(3, u3, d3)
#undef EP
        }
    } else {
#pragma GCC unroll 6
        for (int m = 0; m < MR_; ++m) {
            const float* bs = bias[m];
            float* om = o + (int64_t)m * Cout;
#define EP(v, u) STORE8(om + 8 * v, _mm256_mul_ps(DOT8(c[m][v], _mm256_loadu_ps(bs + 8 * v)), u));
            EP(0, u0) EP(1, u1) EP(2, u2) EP(3, u3)
#undef EP
        }
    }
#undef STORE8
}
#undef DOT8

#define TILE_MR 6
#define TILE_BITS 1 /* this ISA's tiles can emit sign words (ob) */
#define TILE_SHORTCUT 1 /* and add a real shortcut (r, rg) */
static void CAT(tile, SUFFIX)(const CAT(tile_ctx, SUFFIX) * ctx, int nm, const uint64_t* a, const uint64_t* w,
                              const float* const* bias, const float* mul, const float* add, float* o, int cn,
                              int nts, const uint64_t* pf, uint32_t* ob, const float* othr, int64_t obs,
                              const float* r, const float* rg)
{
    /* nm, nts and the sign-word output as compile-time constants: one unrolled tile per (pixel count, store kind) */
#define TILE_CASES(NTS, B)                                                                                   \
    switch (nm) {                                                                                            \
    case 6: CAT(tile_mr, SUFFIX)(ctx, 6, a, w, bias, mul, add, o, cn, NTS, pf, ob, othr, obs, B, r, rg); return;  \
    case 5: CAT(tile_mr, SUFFIX)(ctx, 5, a, w, bias, mul, add, o, cn, NTS, pf, ob, othr, obs, B, r, rg); return;  \
    case 4: CAT(tile_mr, SUFFIX)(ctx, 4, a, w, bias, mul, add, o, cn, NTS, pf, ob, othr, obs, B, r, rg); return;  \
    case 3: CAT(tile_mr, SUFFIX)(ctx, 3, a, w, bias, mul, add, o, cn, NTS, pf, ob, othr, obs, B, r, rg); return;  \
    case 2: CAT(tile_mr, SUFFIX)(ctx, 2, a, w, bias, mul, add, o, cn, NTS, pf, ob, othr, obs, B, r, rg); return;  \
    default: CAT(tile_mr, SUFFIX)(ctx, 1, a, w, bias, mul, add, o, cn, NTS, pf, ob, othr, obs, B, r, rg); return; \
    }
    if (ob) TILE_CASES(0, 1)
    if (nts) TILE_CASES(1, 0)
    TILE_CASES(0, 0)
#undef TILE_CASES
}
#elif BNN_ISA == 1
/* AVX2 (no vector popcount).  One pixel x one panel of NR = 32 channels at a time: 8 vectors of 4 channels,
 * each 64-bit lane one channel.  The weights come nibble-split from the layer constants (per word: the low
 * nibbles of its bytes, then the high nibbles, each as a 0..15 byte), and the input word is split once per
 * pixel and tap, so that one (pixel, 4-channel) step is xor, xor, vpshufb, vpshufb, add, add: 6 operations
 * instead of the 8 of the plain nibble lookup (Mula et al. 2018), with the split of the input word shared
 * by the 8 vectors.  Byte accumulators (each step adds at most 8 to a byte) are summed into 64-bit lanes by
 * `vpsadbw` once per chunk of at most 31 steps.
 * Tile: up to AVX2_PB pixels of one output row.  When the whole reduction fits one chunk (T * Wg <= 31 words:
 * the 64- and 128-channel 3x3 layers) each pixel goes straight from its registers to the epilogue.  Longer
 * reductions run chunk by chunk, every pixel of the tile through one chunk before the next: the chunk's
 * weights (at most 31 x 512 bytes) stay in L1 and are reused by all the tile's pixels, instead of the whole
 * panel (36 KB for a 512-channel 3x3 layer, more than L1) being streamed from L2 once per pixel. */
#define AVX2_PB 8
#define TILE_MR AVX2_PB

/* the popcounts of steps (t, j), t0 <= t < t1, j0 <= j < j1, of one pixel: s[v] = 64-bit sums of channels
 * 4v..4v+3 (at most 31 steps) */
static inline __attribute__((always_inline)) void CAT(chunk, SUFFIX)(const CAT(tile_ctx, SUFFIX) * ctx,
                                                                   const uint64_t* a, const uint64_t* ws, int t0,
                                                                   int t1, int j0, int j1, __m256i* s)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i zero = _mm256_setzero_si256();
    const int Wg = ctx->Wg;
    __m256i c[8]; /* fixed size: after the unrolling, registers */
#pragma GCC unroll 8
    for (int v = 0; v < 8; ++v) c[v] = zero;
    for (int t = t0; t < t1; ++t) {
        const uint64_t* ap = a + SPLIT * ctx->tapoff[t];
        const uint64_t* wt = ws + ((int64_t)t * Wg + j0) * 2 * NR;
        for (int j = j0; j < j1; ++j, wt += 2 * NR) {
            /* low nibbles then high nibbles (split when the image was packed): few live registers, no spills */
            const __m256i lo = _mm256_set1_epi64x((long long)ap[2 * j]);
#pragma GCC unroll 8
            for (int v = 0; v < 8; ++v)
                c[v] = _mm256_add_epi8(c[v], _mm256_shuffle_epi8(lut, _mm256_xor_si256(
                                                 lo, _mm256_loadu_si256((const __m256i*)(wt + 4 * v)))));
            /* keep GCC from reassociating the two halves' sums (it then runs out of registers) */
#pragma GCC unroll 8
            for (int v = 0; v < 8; ++v) __asm__("" : "+x"(c[v]));
            const __m256i hi = _mm256_set1_epi64x((long long)ap[2 * j + 1]);
#pragma GCC unroll 8
            for (int v = 0; v < 8; ++v)
                c[v] = _mm256_add_epi8(c[v], _mm256_shuffle_epi8(lut, _mm256_xor_si256(
                                                 hi, _mm256_loadu_si256((const __m256i*)(wt + NR + 4 * v)))));
        }
    }
#pragma GCC unroll 8
    for (int v = 0; v < 8; ++v) s[v] = _mm256_sad_epu8(c[v], zero);
}

/* out = (bias - 2 acc) * mul + add for one pixel, 8 channels at a time (two roundings, like the torch path;
 * acc <= K < 2^23, so the 64-bit lanes are narrowed to 32 bits, and bias - 2 acc computed in float, exactly);
 * with rm, plus the real shortcut rm * rg (rg NULL: 1); with ob, the sign words instead: byte v / 8 of ob =
 * (out < othr) of channels v..v+7 */
static inline __attribute__((always_inline)) void CAT(epilogue, SUFFIX)(const __m256i* s, const float* bs,
                                                                      const float* mul, const float* add, float* om,
                                                                      int cn, uint8_t* ob, const float* othr,
                                                                      const float* rm, const float* rg)
{
#pragma GCC unroll 4
    for (int v = 0; v < NR; v += 8) {
        if (v >= cn) break;
        /* low dwords of the sums of channels v..v+3 (lanes 0..3), then of v+4..v+7 (lanes 4..7) */
        const __m256 sh = _mm256_shuffle_ps(_mm256_castsi256_ps(s[v / 4]), _mm256_castsi256_ps(s[v / 4 + 1]),
                                            _MM_SHUFFLE(2, 0, 2, 0));
        const __m256 acc =
            _mm256_cvtepi32_ps(_mm256_permute4x64_epi64(_mm256_castps_si256(sh), _MM_SHUFFLE(3, 1, 2, 0)));
        const __m256 acc2 = _mm256_add_ps(acc, acc); /* exact; bias - acc2 too (no FMA on this path: with "fma" in
                                                      * its target GCC made the nibble-table path 13 % slower) */
        const int rem = cn - v;
        if (rem >= 8) {
            __m256 y = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(bs + v), acc2), _mm256_loadu_ps(mul + v));
            if (add) y = _mm256_add_ps(y, _mm256_loadu_ps(add + v));
            if (rm) {
                const __m256 xr = _mm256_loadu_ps(rm + v);
                y = _mm256_add_ps(y, rg ? _mm256_mul_ps(xr, _mm256_loadu_ps(rg + v)) : xr);
            }
            if (ob) ob[v / 8] = (uint8_t)_mm256_movemask_ps(_mm256_cmp_ps(y, _mm256_loadu_ps(othr + v), _CMP_LT_OQ));
            else _mm256_storeu_ps(om + v, y);
        } else {
            const __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            __m256 y =
                _mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(bs + v, mk), acc2), _mm256_maskload_ps(mul + v, mk));
            if (add) y = _mm256_add_ps(y, _mm256_maskload_ps(add + v, mk));
            if (rm) {
                const __m256 xr = _mm256_maskload_ps(rm + v, mk);
                y = _mm256_add_ps(y, rg ? _mm256_mul_ps(xr, _mm256_maskload_ps(rg + v, mk)) : xr);
            }
            if (ob) {
                const int bits = _mm256_movemask_ps(_mm256_cmp_ps(y, _mm256_maskload_ps(othr + v, mk), _CMP_LT_OQ));
                ob[v / 8] = (uint8_t)(bits & ((1 << rem) - 1));
            }
            else _mm256_maskstore_ps(om + v, mk, y);
        }
    }
}

/* one pixel whose reduction fits one chunk: registers to the epilogue (a function of its own: inlined into
 * the tile's pixel loop it measured 15 % slower) */
static __attribute__((noinline)) void CAT(pixel, SUFFIX)(const CAT(tile_ctx, SUFFIX) * ctx, const uint64_t* a,
                                                         const uint64_t* ws, const float* bs, const float* mul,
                                                         const float* add, float* om, int cn, uint8_t* ob,
                                                         const float* othr, const float* rm, const float* rg)
{
    __m256i s[8];
    CAT(chunk, SUFFIX)(ctx, a, ws, 0, ctx->T, 0, ctx->Wg, s);
    CAT(epilogue, SUFFIX)(s, bs, mul, add, om, cn, ob, othr, rm, rg);
}

#define TILE_BITS 1 /* this ISA's tiles can emit sign words (ob) */
#define TILE_SHORTCUT 1
static void CAT(tile, SUFFIX)(const CAT(tile_ctx, SUFFIX) * ctx, int nm, const uint64_t* a, const uint64_t* ws,
                              const float* const* bias, const float* mul, const float* add, float* o, int cn,
                              int nts, const uint64_t* pf, uint32_t* ob, const float* othr, int64_t obs,
                              const float* r, const float* rg)
{
    (void)pf; /* only the AVX-512 tile prefetches the next item's weights */
    const int T = ctx->T, Wg = ctx->Wg, Cout = ctx->Cout;
    const int64_t ps = ctx->pstep;
    __m256i s[8];
    (void)nts;
    if (T * Wg <= 31) { /* one chunk: registers to the epilogue */
        for (int m = 0; m < nm; ++m)
            CAT(pixel, SUFFIX)(ctx, a + m * ps, ws, bias[m], mul, add, o + (int64_t)m * Cout, cn,
                               ob ? (uint8_t*)(ob + m * obs) : NULL, othr, r ? r + (int64_t)m * Cout : NULL, rg);
        return;
    }
    __m256i acc[AVX2_PB][8];
    for (int m = 0; m < nm; ++m)
#pragma GCC unroll 8
        for (int v = 0; v < 8; ++v) acc[m][v] = _mm256_setzero_si256();
    /* chunks of at most 31 steps: whole taps when a tap has at most 31 words, else 31-word parts of a tap */
    const int tpc = Wg <= 31 ? 31 / Wg : 1, jpc = Wg <= 31 ? Wg : 31;
    for (int t0 = 0; t0 < T; t0 += tpc) {
        const int t1 = t0 + tpc < T ? t0 + tpc : T;
        for (int j0 = 0; j0 < Wg; j0 += jpc) {
            const int j1 = j0 + jpc < Wg ? j0 + jpc : Wg;
            for (int m = 0; m < nm; ++m) {
                CAT(chunk, SUFFIX)(ctx, a + m * ps, ws, t0, t1, j0, j1, s);
#pragma GCC unroll 8
                for (int v = 0; v < 8; ++v) acc[m][v] = _mm256_add_epi64(acc[m][v], s[v]);
            }
        }
    }
    for (int m = 0; m < nm; ++m)
        CAT(epilogue, SUFFIX)(acc[m], bias[m], mul, add, o + (int64_t)m * Cout, cn,
                              ob ? (uint8_t*)(ob + m * obs) : NULL, othr, r ? r + (int64_t)m * Cout : NULL, rg);
}

/* ---- nibble-table path (bnn_kernel.c: tab_applies, tab_geometry) ---- */
/* the nibbles of one pixel's Cg channels, bit k of nibble q = (x[4q + k] < thr[4q + k]), to o[q * PS] */
static inline void CAT(tab_nibbles, SUFFIX)(const float* v, const float* thr, int Cg, uint8_t* o, int64_t PS)
{
    int b = 0;
    uint8_t* o1 = o + PS;
    if (thr) {
        for (; b + 8 <= Cg; b += 8, o += 2 * PS, o1 += 2 * PS) {
            const int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v + b), _mm256_loadu_ps(thr + b), _CMP_LT_OQ));
            *o = (uint8_t)(m & 15);
            *o1 = (uint8_t)(m >> 4);
        }
    } else {
        for (; b + 8 <= Cg; b += 8, o += 2 * PS, o1 += 2 * PS) {
            /* x < 0: the sign bits */
            const int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(v + b), _mm256_setzero_ps(), _CMP_LT_OQ));
            *o = (uint8_t)(m & 15);
            *o1 = (uint8_t)(m >> 4);
        }
    }
    o -= (int64_t)(b / 4) * PS; /* back to nibble 0 */
    for (; b < Cg; b += 4) {
        int m = 0;
        for (int k = 0; k < 4 && b + k < Cg; ++k) m |= (v[b + k] < (thr ? thr[b + k] : 0.0f)) << k;
        o[(b / 4) * PS] = (uint8_t)m;
    }
}

/* one phase row (image n, row phase fr, row rr of the phase) of the planes of every nibble position */
static void CAT(tab_pack_row, SUFFIX)(const conv_args* p, const tab_geom* g, uint8_t* img, int64_t it)
{
    const int sh = p->sh, sw = p->sw, Q = g->Q, Cg = p->Cg, Hp = p->Hs + 2 * p->ph, Wp = p->Ws + 2 * p->pw;
    const int n = (int)(it / ((int64_t)sh * g->Hps)), rem = (int)(it % ((int64_t)sh * g->Hps));
    const int fr = rem / g->Hps, rr = rem % g->Hps, r = rr * sh + fr, i = r - p->ph;
    uint8_t* base = img + (int64_t)n * Q * g->PS + (int64_t)fr * sw * g->PH + (int64_t)rr * g->Wps;
    if (r >= Hp || i < 0 || i >= p->Hs) {
        for (int q = 0; q < Q; ++q)
            for (int fc = 0; fc < sw; ++fc) memset(base + q * g->PS + fc * g->PH, 0x80, (size_t)g->Wps);
        return;
    }
    /* the input row: sign words (nibble q of a pixel is bits 4q..4q+3 of its words), or floats */
    const uint64_t* wrow = p->xw ? p->xw + ((int64_t)n * p->H + (int64_t)i * p->uh) * p->W * p->Wg : NULL;
    const float* xrow = p->xw ? NULL : p->x + ((int64_t)n * p->H + (int64_t)i * p->uh) * p->W * Cg;
    const int64_t xstep = (int64_t)p->uw * Cg;
    /* the pixels in memory order */
    for (int c = 0; c < g->Wps * sw; ++c) {
        const int j = c - p->pw;
        uint8_t* o = base + (c % sw) * g->PH + c / sw;
        if (c >= Wp || j < 0 || j >= p->Ws) {
            for (int q = 0; q < Q; ++q) o[q * g->PS] = 0x80;
            continue;
        }
        if (wrow) {
            /* byte k of the words (little endian) holds bits 8k..8k+7: nibbles 2k and 2k + 1 */
            const uint8_t* bp = (const uint8_t*)(wrow + (int64_t)j * p->uw * p->Wg);
            int q = 0;
            for (; q + 2 <= Q; q += 2) {
                o[q * g->PS] = bp[q >> 1] & 15;
                o[(q + 1) * g->PS] = bp[q >> 1] >> 4;
            }
            if (q < Q) o[q * g->PS] = bp[q >> 1] & 15;
            continue;
        }
        if (j + 12 < p->Ws) { /* the float input is usually cold: fetched 12 pixels ahead */
            const char* pf = (const char*)(xrow + (j + 12) * xstep);
            for (int b = 0; b < Cg * 4; b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
        }
        CAT(tab_nibbles, SUFFIX)(xrow + j * xstep, p->thr, Cg, o, g->PS);
    }
}

/* one tile: nv <= 4 vectors of 16 positions (from a) x the 4 channels of a quad (tables tb), steps (t, q) of
 * taps t0..t1, added into the int16 sums buf of the quad: [pair][16 positions][ch 2j: 0-7 | 2j+1: 0-7][8-15] */
static inline __attribute__((always_inline)) void CAT(tab_tile, SUFFIX)(const uint8_t* a, const uint8_t* tb,
                                                                      const int64_t* toff, int t0, int t1, int q0,
                                                                      int q1, int Q, int64_t PS, int16_t* d0,
                                                                      int first, const int nv)
{
    const __m256i z = _mm256_setzero_si256();
    __m256i c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
    for (int t = t0; t < t1; ++t) {
        const uint8_t* at = a + toff[t] + q0 * PS;
        const uint8_t* wt = tb + ((int64_t)t * Q + q0) * 64;
        for (int q = q0; q < q1; ++q, at += PS, wt += 64) {
            const __m256i w0 = _mm256_loadu_si256((const __m256i*)wt);
            const __m256i w1 = _mm256_loadu_si256((const __m256i*)(wt + 32));
            const __m256i i0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)at));
            c00 = _mm256_add_epi8(c00, _mm256_shuffle_epi8(w0, i0));
            c10 = _mm256_add_epi8(c10, _mm256_shuffle_epi8(w1, i0));
            if (nv > 1) {
                const __m256i i1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(at + 16)));
                c01 = _mm256_add_epi8(c01, _mm256_shuffle_epi8(w0, i1));
                c11 = _mm256_add_epi8(c11, _mm256_shuffle_epi8(w1, i1));
            }
            if (nv > 2) {
                const __m256i i2 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(at + 32)));
                c02 = _mm256_add_epi8(c02, _mm256_shuffle_epi8(w0, i2));
                c12 = _mm256_add_epi8(c12, _mm256_shuffle_epi8(w1, i2));
            }
            if (nv > 3) {
                const __m256i i3 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(at + 48)));
                c03 = _mm256_add_epi8(c03, _mm256_shuffle_epi8(w0, i3));
                c13 = _mm256_add_epi8(c13, _mm256_shuffle_epi8(w1, i3));
            }
        }
    }
    const __m256i cs[8] = {c00, c01, c02, c03, c10, c11, c12, c13};
#pragma GCC unroll 8
    for (int v = 0; v < 8; ++v) {
        if (v % 4 >= nv) continue;
        int16_t* d = d0 + ((int64_t)(v / 4) * TAB_RB + 16 * (v % 4)) * 2;
        const __m256i lo = _mm256_unpacklo_epi8(cs[v], z), hi = _mm256_unpackhi_epi8(cs[v], z);
        if (first) {
            _mm256_store_si256((__m256i*)d, lo);
            _mm256_store_si256((__m256i*)(d + 16), hi);
        } else {
            _mm256_store_si256((__m256i*)d, _mm256_add_epi16(_mm256_load_si256((const __m256i*)d), lo));
            _mm256_store_si256((__m256i*)(d + 16), _mm256_add_epi16(_mm256_load_si256((const __m256i*)(d + 16)), hi));
        }
    }
}

/* one work item: positions p0..p1 (whole vectors of 16) of image n x the 32 channels of panel pan.  For each
 * quad of 4 channels and each chunk of taps (at most 63 steps: the byte sums of lookups <= 4 cannot overflow),
 * every tile of 64 positions runs the chunk in registers (8 byte accumulators: 2 channel pairs x 4 vectors of
 * 16 positions) and adds it into the int16 sums in buf; then the epilogue turns the sums of 8 positions x 8
 * channels into floats, transposes them to channels last and stores the positions that exist. */
static inline __attribute__((always_inline)) void CAT(tab_item_x, SUFFIX)(
    const conv_args* p, const tab_geom* g, const int64_t* toff, const int32_t* tv, const uint8_t* tabs,
    const uint8_t* img, int n, int64_t p0, int64_t p1, int pan, int16_t* buf, const int RES, const int BITS)
{
    const int T = p->KH * p->KW, Q = g->Q;
    /* chunks of at most 63 steps: whole taps when a tap has at most 63 nibbles, else equal parts of one tap */
    const int tpc = Q <= 63 ? 63 / Q : 1, nqc = (Q + 62) / 63, qpc = (Q + nqc - 1) / nqc;
    const int64_t PS = g->PS;
    const int np = (int)(p1 - p0);
    const uint8_t* a0 = img + (int64_t)n * Q * PS + p0;
    for (int quad = 0; quad < 8; ++quad) {
        const uint8_t* tb = tabs + ((int64_t)pan * 8 + quad) * T * Q * 64;
        for (int t0 = 0; t0 < T; t0 += tpc) {
            const int t1 = t0 + tpc < T ? t0 + tpc : T;
            for (int q0 = 0; q0 < Q; q0 += qpc) {
                const int q1 = q0 + qpc < Q ? q0 + qpc : Q, first = t0 == 0 && q0 == 0;
                for (int ts = 0; ts < np; ts += TAB_POS) {
                    int16_t* d0 = buf + ((int64_t)quad * 2 * TAB_RB + ts) * 2;
                    const uint8_t* a = a0 + ts;
                    switch (np - ts >= TAB_POS ? 4 : (np - ts) / 16) {
                    case 4: CAT(tab_tile, SUFFIX)(a, tb, toff, t0, t1, q0, q1, Q, PS, d0, first, 4); break;
                    case 3: CAT(tab_tile, SUFFIX)(a, tb, toff, t0, t1, q0, q1, Q, PS, d0, first, 3); break;
                    case 2: CAT(tab_tile, SUFFIX)(a, tb, toff, t0, t1, q0, q1, Q, PS, d0, first, 2); break;
                    default: CAT(tab_tile, SUFFIX)(a, tb, toff, t0, t1, q0, q1, Q, PS, d0, first, 1); break;
                    }
                }
            }
        }
    }
    /* epilogue: out = float(Tv * Cg - 2 acc) * mul + add (two roundings, like the torch path) */
    const int Cout = p->G * p->CoutG, c0 = pan * NR, OW = p->OW, Wps = g->Wps;
    const int cn = p->CoutG - c0 < NR ? p->CoutG - c0 : NR;
    float mulv[NR], addv[NR], thrv[NR], gainv[NR];
    for (int c = 0; c < NR; ++c) {
        mulv[c] = c < cn ? p->mul[c0 + c] : 0.0f;
        addv[c] = c < cn && p->add ? p->add[c0 + c] : 0.0f;
        thrv[c] = c < cn && p->ow ? p->othr[c0 + c] : 0.0f; /* 0 < 0 is false: no bit past cn */
        gainv[c] = c < cn && p->rgain ? p->rgain[c0 + c] : 0.0f;
    }
    /* with p->res, a real shortcut at the output's positions (times gainv when p->rgain) */
    const float* const rbase = RES ? p->res + (int64_t)n * p->OH * OW * Cout + c0 : NULL;
    /* with p->ow, the sign words instead of the floats: one byte per (position, 8 channels) */
    const int64_t obs = 8 * (int64_t)((Cout + 63) / 64); /* bytes per output pixel */
    uint8_t* const bbase = BITS ? (uint8_t*)p->ow + (int64_t)n * p->OH * OW * obs + c0 / 8 : NULL;
    const int has_add = p->add != NULL;
    const __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(cn % 8), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    float* const obase = p->out + (int64_t)n * p->OH * OW * Cout + c0;
    const int64_t pend = (p1 < g->npos ? p1 : g->npos) - p0;
    int oh = (int)(p0 / Wps), ow = (int)(p0 % Wps);
    for (int64_t pos = 0; pos < pend; pos += 8) {
        float* dst[8];
        const float* rdst[8];
        uint8_t* bdst[8];
        /* the 8 positions exist and lie on one output row (the usual case): consecutive outputs */
        const int run = pos + 8 <= pend && ow + 8 <= OW;
        for (int i = 0; i < 8; ++i) {
            const int here = pos + i < pend && ow < OW;
            dst[i] = here ? obase + ((int64_t)oh * OW + ow) * Cout : NULL;
            bdst[i] = here && bbase ? bbase + ((int64_t)oh * OW + ow) * obs : NULL;
            rdst[i] = here && rbase ? rbase + ((int64_t)oh * OW + ow) * Cout : NULL;
            if (++ow == Wps) { ow = 0; ++oh; }
        }
        const __m256i tvv = _mm256_loadu_si256((const __m256i*)(tv + p0 + pos));
        const int16_t* s0 = buf + (pos / 16) * 32 + (pos % 16) / 8 * 16;
        for (int cg = 0; cg * 8 < cn; ++cg) {
            __m256 r[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; ++i) {
                const int c = cg * 8 + i;
                const __m256i a = _mm256_cvtepi16_epi32(
                    _mm_load_si128((const __m128i*)(s0 + (int64_t)(c / 2) * TAB_RB * 2 + (c & 1) * 8)));
                const __m256 d = _mm256_cvtepi32_ps(_mm256_sub_epi32(tvv, _mm256_add_epi32(a, a)));
                r[i] = _mm256_mul_ps(d, _mm256_broadcast_ss(mulv + c));
                if (has_add) r[i] = _mm256_add_ps(r[i], _mm256_broadcast_ss(addv + c));
            }
            const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
            const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
            const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
            const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
            const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
            const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
            const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
            const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
            __m256 o[8];
            o[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
            o[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
            o[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
            o[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
            o[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
            o[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
            o[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
            o[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
            if (rbase) {
                const __m256 gv = _mm256_loadu_ps(gainv + cg * 8);
                for (int i = 0; i < 8; ++i) {
                    if (!rdst[i]) continue;
                    const __m256 xr = cn - cg * 8 >= 8 ? _mm256_loadu_ps(rdst[i] + cg * 8)
                                                       : _mm256_maskload_ps(rdst[i] + cg * 8, mk);
                    o[i] = _mm256_add_ps(o[i], p->rgain ? _mm256_mul_ps(xr, gv) : xr);
                }
            }
            if (bbase) {
                const __m256 th = _mm256_loadu_ps(thrv + cg * 8);
                for (int i = 0; i < 8; ++i)
                    if (bdst[i]) bdst[i][cg] = (uint8_t)_mm256_movemask_ps(_mm256_cmp_ps(o[i], th, _CMP_LT_OQ));
            } else if (run && cn - cg * 8 >= 8) {
                float* d = dst[0] + cg * 8;
#pragma GCC unroll 8
                for (int i = 0; i < 8; ++i) _mm256_storeu_ps(d + (int64_t)i * Cout, o[i]);
            } else if (cn - cg * 8 >= 8) {
                for (int i = 0; i < 8; ++i)
                    if (dst[i]) _mm256_storeu_ps(dst[i] + cg * 8, o[i]);
            } else {
                for (int i = 0; i < 8; ++i)
                    if (dst[i]) _mm256_maskstore_ps(dst[i] + cg * 8, mk, o[i]);
            }
        }
    }
}

/* one work item, its epilogue specialized (compile-time flags): plain, a real shortcut added, or sign words out */
static void CAT(tab_item, SUFFIX)(const conv_args* p, const tab_geom* g, const int64_t* toff, const int32_t* tv,
                                  const uint8_t* tabs, const uint8_t* img, int n, int64_t p0, int64_t p1, int pan,
                                  int16_t* buf)
{
    if (p->ow) CAT(tab_item_x, SUFFIX)(p, g, toff, tv, tabs, img, n, p0, p1, pan, buf, 0, 1);
    else if (p->res) CAT(tab_item_x, SUFFIX)(p, g, toff, tv, tabs, img, n, p0, p1, pan, buf, 1, 0);
    else CAT(tab_item_x, SUFFIX)(p, g, toff, tv, tabs, img, n, p0, p1, pan, buf, 0, 0);
}

/* the whole conv on the nibble-table path: (1) the planes, (2) the items (image, 256 positions, panel) */
static void CAT(bconv_tab, SUFFIX)(const conv_args* p, const int64_t* toff)
{
    tab_geom g;
    tab_geometry(p, &g, NULL);
    const int T = p->KH * p->KW, npan = (p->CoutG + NR - 1) / NR;
    const int32_t* tv = (const int32_t*)(toff + T);
    const uint8_t* tabs = (const uint8_t*)(tv + (g.nposr + 1) / 2 * 2);
    uint8_t* img = (uint8_t*)p->a;
    const int64_t rows = (int64_t)p->N * p->sh * g.Hps, nrb = (g.nposr + TAB_RB - 1) / TAB_RB;
    const int64_t items = (int64_t)p->N * nrb * npan, planes = (int64_t)p->N * g.Q * g.PS;
    const int64_t tbytes = (int64_t)npan * 8 * T * g.Q * 64;
    int nt = p->nthreads;
    if (items < nt) nt = (int)items;
#pragma omp parallel num_threads(nt)
    {
#pragma omp single nowait
        memset(img + planes, 0x80, (size_t)(g.bytes - planes)); /* read by the last tiles' dropped positions */
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) CAT(tab_pack_row, SUFFIX)(p, &g, img, r);
        int16_t buf[16 * TAB_RB * 2] __attribute__((aligned(32)));
#pragma omp for schedule(static) nowait /* the region's end waits for the items */
        for (int64_t it = 0; it < items; ++it) {
            /* panel-major when the tables outgrow L2 (a panel's tables then stay in L2 over all the images),
             * else panels fastest (the outputs of a position block are written in one pass) */
            int pan = (int)(it % npan), n = (int)(it / npan / nrb);
            int64_t p0 = it / npan % nrb * TAB_RB;
            if (tbytes > PANEL_MAJOR_BYTES) {
                pan = (int)(it / ((int64_t)p->N * nrb));
                n = (int)(it / nrb % p->N);
                p0 = it % nrb * TAB_RB;
            }
            const int64_t p1 = p0 + TAB_RB < g.nposr ? p0 + TAB_RB : g.nposr;
            CAT(tab_item, SUFFIX)(p, &g, toff, tv, tabs, img, n, p0, p1, pan, buf);
        }
    }
}
#else
#define TILE_MR 1
#define TILE_BITS 0
#define TILE_SHORTCUT 0
static void CAT(tile, SUFFIX)(const CAT(tile_ctx, SUFFIX) * ctx, int nm, const uint64_t* a, const uint64_t* w,
                              const float* const* bias, const float* mul, const float* add, float* o, int cn,
                              int nts, const uint64_t* pf, uint32_t* ob, const float* othr, int64_t obs,
                              const float* r, const float* rg)
{
    (void)pf; /* only the AVX-512 tile prefetches the next item's weights */
    (void)ob, (void)othr, (void)obs, (void)r, (void)rg; /* sign words and shortcut: finish_rows */
    int64_t acc[NR];
    (void)nts;
    const int T = ctx->T, Wg = ctx->Wg;
    (void)nm;
    for (int n = 0; n < NR; ++n) acc[n] = 0;
    for (int t = 0; t < T; ++t) {
        const uint64_t* a0 = a + ctx->tapoff[t];
        for (int j = 0; j < Wg; ++j) {
            uint64_t b = a0[j];
            for (int n = 0; n < NR; ++n) acc[n] += __builtin_popcountll(b ^ w[n]);
            w += NR;
        }
    }
    const float* bs = bias[0];
    if (add) {
        for (int n = 0; n < cn; ++n) {
            float d = bs[n] - 2.0f * (float)acc[n]; /* exact: integers below 2^24 */
            float y = d * mul[n];
            o[n] = y + add[n];
        }
    } else {
        for (int n = 0; n < cn; ++n) {
            float d = bs[n] - 2.0f * (float)acc[n];
            o[n] = d * mul[n];
        }
    }
}
#endif

/* ---------------------------------------------------------------------------------------------- */
/* driver: one OpenMP region per call.
 *   x:    float32 channels-last input [N, H, W, G * Cg]; the conv sees the subsampled image
 *         Hs x Ws with pixel (i, j) = x[n, i * uh, j * uw] (uh = uw = 1 except for a 1x1 unpadded
 *         strided conv, which then runs with stride 1: only the pixels it reads are packed)
 *   a:    scratch for the padded bit image [N, Hs + 2 ph, Ws + 2 pw, G, Wg] words, [.., G, Wg, 2] on AVX2
 *         (each word nibble-split: its low nibbles, then its high nibbles, as 0..15 bytes)
 *   w:    packed weight [G, CB, T, Wg, NR] words (CB = ceil(CoutG / NR), T = KH * KW)
 *   out:  float32 [N, OH, OW, G * CoutG] (channels last); out = float(dot) * mul[c] + add[c]
 *   consts: the layer constants (bnn_kernel.c), or NULL to compute them for this call
 *   xw:   or the input as sign words [N, H, W, G * Wg] (then x is not read); ow: or NULL, the output's sign words
 *   res:  or NULL, a real shortcut [N, OH, OW, G * CoutG] added to out (times rgain[c] when not NULL)
 * Phases: (1) pack the padded image (from x, or copy it from xw), (2) the tiles, statically scheduled over
 * (image, output row, group, panel), (3) with res: the shortcut, with ow: the output's sign words.  */
static void CAT(bconv, SUFFIX)(const conv_args* p, const int64_t* consts)
{
    const int N = p->N, Hs = p->Hs, Ws = p->Ws, G = p->G, Cg = p->Cg, Wg = p->Wg, CoutG = p->CoutG;
    const int OH = p->OH, OW = p->OW, KH = p->KH, KW = p->KW, T = KH * KW;
    const int CB = (CoutG + NR - 1) / NR, Cout = G * CoutG, C = G * Cg;
    const int Hp = Hs + 2 * p->ph, Wp = Ws + 2 * p->pw;
    const int64_t rs = (int64_t)G * Wg * SPLIT; /* words per packed pixel */
    const int npan = G * CB;
    (void)Cg;

    /* the layer constants (tap offsets, pixel classes, bias table, split weights): given, or made here */
    int64_t* own = NULL;
    if (!consts) {
        int nR0, nC0;
        const int64_t words = consts_layout(p, BNN_ISA, &nR0, &nC0, NULL, NULL, NULL);
        own = words < 0 ? NULL : (int64_t*)malloc(sizeof(int64_t) * (size_t)words);
        if (!own || consts_fill(p, BNN_ISA, own, p->nthreads)) {
            free(own);
            p->status[0] = -1;
            return;
        }
        consts = own;
    }
    const int nR = (int)consts[1], nC = (int)consts[2];
    const int64_t* tapoff = consts + CONST_HDR;
    const int64_t* rid = tapoff + T;
    const int64_t* cid = rid + OH;
    const float* btab = (const float*)(cid + OW);
    const uint64_t* wsplit = (const uint64_t*)(cid + OW + (int64_t)nR * nC * npan * NR / 2); /* AVX2 */
    (void)wsplit;
#if BNN_ISA == 1
    if (consts[4]) { /* the constants carry nibble tables (tab_applies when they were made), in the split's place */
        CAT(bconv_tab, SUFFIX)(p, (const int64_t*)wsplit);
        free(own);
        return;
    }
#endif

    const int64_t pack_rows = (int64_t)N * Hp;
    const int64_t items = (int64_t)N * OH * npan;
    const int64_t pstep = (int64_t)p->sw * rs;
    /* work items panel-major (a thread runs every row of a panel before the next panel), or row-major (the rows'
     * outputs written in one pass).  AVX2: panel-major when the split weights (2 x 4.5 KB per 64 input channels
     * and panel) outgrow L2, so each panel comes from L3 once per call, not once per row.  AVX-512: when the
     * weights outweigh the bit image (the deep layers at small batches), so each thread reads only its own
     * panels, once, and keeps each in L1 across the rows. */
    const int pmajor = BNN_ISA == 1   ? (int64_t)npan * T * Wg * 2 * NR * 8 > PANEL_MAJOR_BYTES
                       : BNN_ISA == 2 ? (int64_t)npan * T * Wg * NR > pack_rows * Wp * rs
                                      : 0;
    CAT(tile_ctx, SUFFIX) ctx;
    ctx.tapoff = tapoff;
    ctx.T = T;
    ctx.Wg = Wg;
    ctx.Cout = Cout;
    ctx.pstep = pstep;

    int nt = p->nthreads;
    /* streaming stores when each thread's share of the output exceeds half its L2 (and is 32-byte aligned) */
    const int64_t out_bytes = (int64_t)N * OH * OW * Cout * 4;
    const int nts = BNN_ISA == 2 && !p->ow && !p->res &&
                    out_bytes > ((int64_t)1 << 20) * (p->nthreads > 0 ? p->nthreads : 1) &&
                    (Cout % 8) == 0 && (((uintptr_t)p->out) & 31) == 0;
    /* sign words out straight from the tiles where they can write them (32-channel panels at 32-bit offsets) */
    const int tile_bits = TILE_BITS && p->ow && !p->res && (G == 1 || CoutG % NR == 0);
    const int64_t obs = 2 * (int64_t)((Cout + 63) / 64); /* uint32 per output pixel */
    if (items < 2 * nt && pack_rows < 2 * nt) nt = 1;
#pragma omp parallel num_threads(nt)
    {
        /* (1) padded bit image: border words 0, interior packed signs */
#pragma omp for schedule(static)
        for (int64_t r = 0; r < pack_rows; ++r) {
            const int n = (int)(r / Hp), i = (int)(r % Hp) - p->ph;
            uint64_t* orow = p->a + r * Wp * rs;
            if (i < 0 || i >= Hs) {
                memset(orow, 0, sizeof(uint64_t) * (size_t)(Wp * rs));
                continue;
            }
            if (p->pw) {
                memset(orow, 0, sizeof(uint64_t) * (size_t)(p->pw * rs));
                memset(orow + (int64_t)(p->pw + Ws) * rs, 0, sizeof(uint64_t) * (size_t)(p->pw * rs));
            }
            uint64_t* op = orow + (int64_t)p->pw * rs;
            if (p->xw) { /* sign words in (G * Wg per pixel): copied, nibble-split on AVX2 */
                const int64_t nw = (int64_t)G * Wg;
                const uint64_t* wrow = p->xw + ((int64_t)n * p->H + (int64_t)i * p->uh) * p->W * nw;
#if SPLIT == 2
                for (int j = 0; j < Ws; ++j) {
                    const uint64_t* wp = wrow + (int64_t)j * p->uw * nw;
                    for (int64_t k = 0; k < nw; ++k) {
                        op[j * rs + 2 * k] = wp[k] & 0x0f0f0f0f0f0f0f0full;
                        op[j * rs + 2 * k + 1] = (wp[k] >> 4) & 0x0f0f0f0f0f0f0f0full;
                    }
                }
#else
                if (p->uw == 1) /* the row's pixels are contiguous on both sides (rs == nw): one copy */
                    memcpy(op, wrow, sizeof(uint64_t) * (size_t)(Ws * nw));
                else
                    for (int j = 0; j < Ws; ++j)
                        for (int64_t k = 0; k < nw; ++k) op[j * rs + k] = wrow[(int64_t)j * p->uw * nw + k];
#endif
                continue;
            }
            const float* xrow = p->x + ((int64_t)n * p->H + (int64_t)i * p->uh) * p->W * C;
            const int64_t xstep = (int64_t)p->uw * C;
            /* no software prefetch: the hardware's streams the rows (a prefetch of 8 pixels ahead measured
             * 0.5 us slower per 64 x 56 x 56 input, warm or cold) */
            for (int j = 0; j < Ws; ++j) {
                CAT(packpix, SUFFIX)(xrow + j * xstep, p->thr, op + j * rs, G, Cg, Wg);
#if SPLIT == 2
                /* nibble-split in place, last word first: word k -> (its low nibbles, its high nibbles) */
                for (int64_t k = (int64_t)G * Wg - 1; k >= 0; --k) {
                    const uint64_t v = op[j * rs + k];
                    op[j * rs + 2 * k] = v & 0x0f0f0f0f0f0f0f0full;
                    op[j * rs + 2 * k + 1] = (v >> 4) & 0x0f0f0f0f0f0f0f0full;
                }
#endif
            }
        }
        /* (2) tiles (no barrier of their own: the region's end, or the one before (3), waits for them) */
        const float* bptr[TILE_MR];
#pragma omp for schedule(static) nowait
        for (int64_t it = 0; it < items; ++it) {
            int pan = (int)(it % npan);
            int64_t row = it / npan; /* n * OH + oh */
            if (pmajor) {
                pan = (int)(it / ((int64_t)N * OH));
                row = it % ((int64_t)N * OH);
            }
            const int oh = (int)(row % OH), n = (int)(row / OH);
            const int g = pan / CB, cb = pan % CB;
            int cn = CoutG - cb * NR;
            if (cn > NR) cn = NR;
            const int c0 = g * CoutG + cb * NR;
#if BNN_ISA == 1
            const uint64_t* wp = wsplit + (int64_t)pan * T * Wg * 2 * NR;
#else
            const uint64_t* wp = p->w + (int64_t)pan * T * Wg * NR;
#endif
            const uint64_t* arow = p->a + (((int64_t)n * Hp + (int64_t)oh * p->sh) * Wp) * rs + (int64_t)g * Wg * SPLIT;
            const float* brow = btab + ((int64_t)rid[oh] * nC * npan + pan) * NR;
            const int64_t bcs = (int64_t)npan * NR;
            float* orow = p->out + row * OW * Cout + c0;
            const float* mul = p->mul + c0;
            const float* add = p->add ? p->add + c0 : NULL;
            /* the first tile of a row also prefetches the next panel when the next item needs it (row-major:
             * always, the first panel for the next row; panel-major: at a panel's last row) */
            const uint64_t* pf = BNN_ISA == 2 && (!pmajor || row == (int64_t)N * OH - 1)
                                     ? p->w + (int64_t)((pan + 1) % npan) * T * Wg * NR : NULL;
            /* sign words from the tiles: 32 bits per (pixel, panel), at uint32 c0 / 32 of the pixel's words */
            uint32_t* obrow = tile_bits ? (uint32_t*)p->ow + row * OW * obs + c0 / NR : NULL;
            const float* othr = tile_bits ? p->othr + c0 : NULL;
            /* the shortcut at the output's positions (the same shape), added by the tiles where they can */
            const float* rrow = TILE_SHORTCUT && p->res ? p->res + row * OW * Cout + c0 : NULL;
            const float* rg = rrow && p->rgain ? p->rgain + c0 : NULL;
            for (int ow = 0; ow < OW; ow += TILE_MR) {
                const int nm = OW - ow < TILE_MR ? OW - ow : TILE_MR;
                for (int m = 0; m < nm; ++m) bptr[m] = brow + cid[ow + m] * bcs;
                CAT(tile, SUFFIX)(&ctx, nm, arow + ow * pstep, wp, bptr, mul, add, orow + (int64_t)ow * Cout, cn, nts,
                                  ow == 0 ? pf : NULL, obrow ? obrow + ow * obs : NULL, othr, obs,
                                  rrow ? rrow + (int64_t)ow * Cout : NULL, rg);
            }
        }
        /* (3) the real shortcut and the output's sign words, where the tiles did not make them */
        const int res_rows = p->res && !TILE_SHORTCUT;
        if (res_rows || (p->ow && !tile_bits)) { /* the same condition on every thread */
#pragma omp barrier
            CAT(finish_rows, SUFFIX)(p, res_rows, p->ow && !tile_bits);
        }
#if BNN_ISA == 2
        if (nts) _mm_sfence();
#endif
    }
    free(own);
}

#undef TILE_MR
#undef TILE_BITS
#undef TILE_SHORTCUT
#undef SPLIT
#undef CAT
#undef CAT_
