/* Binary convolution kernels, instantiated once per ISA by bnn_kernel.c
 * (which defines SUFFIX and BNN_ISA before including this).
 *
 * Arithmetic (REFERENCE.md section 5): with +1 -> bit 0 and -1 -> bit 1,
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
 * table per call, read by the epilogue  out = float(bias - 2 acc) * mul + add.
 */
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

/* ---------------------------------------------------------------------------------------------- */
/* sign packing of one input pixel: C = G * Cg floats -> G * Wg words                               */
/* bit = 1 (value -1) where x < thr[c] (thr = -bias of the RSign shift; 0 when thr is NULL).        */
static inline void CAT(packpix, SUFFIX)(const float* xs, const float* thr, uint64_t* op, int G, int Cg, int Wg)
{
#if BNN_ISA == 2
    if ((Cg & 63) == 0) {
        const int nw = G * Wg;
        if (thr) {
            for (int j = 0; j < nw; ++j) {
                const float* v = xs + 64 * j;
                const float* t = thr + 64 * j;
                uint64_t m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(v), _mm512_loadu_ps(t), _CMP_LT_OQ);
                uint64_t m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 16), _mm512_loadu_ps(t + 16), _CMP_LT_OQ);
                uint64_t m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 32), _mm512_loadu_ps(t + 32), _CMP_LT_OQ);
                uint64_t m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 48), _mm512_loadu_ps(t + 48), _CMP_LT_OQ);
                op[j] = m0 | (m1 << 16) | (m2 << 32) | (m3 << 48);
            }
        } else {
            const __m512 z = _mm512_setzero_ps();
            for (int j = 0; j < nw; ++j) {
                const float* v = xs + 64 * j;
                uint64_t m0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(v), z, _CMP_LT_OQ);
                uint64_t m1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 16), z, _CMP_LT_OQ);
                uint64_t m2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 32), z, _CMP_LT_OQ);
                uint64_t m3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(v + 48), z, _CMP_LT_OQ);
                op[j] = m0 | (m1 << 16) | (m2 << 32) | (m3 << 48);
            }
        }
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

/* ---------------------------------------------------------------------------------------------- */
/* tile: MR consecutive output pixels of one row x one panel of NR output channels.                */
/*   a:     packed word of pixel 0, tap 0 (group g applied); pixel m is at a + m * pstep          */
/*   w:     weight panel [T, Wg, NR]                                                              */
/*   bias:  per pixel, int64 [NR] of the pixel's class                                            */
/*   o:     output of pixel 0 (channel c0); pixel m at o + m * Cout; cn valid channels            */
typedef struct {
    const int64_t* tapoff;
    int T, Wg, Cout;
    int64_t pstep;
} CAT(tile_ctx, SUFFIX);

#if BNN_ISA == 2
static inline __attribute__((always_inline)) void CAT(tile_mr, SUFFIX)(
    const CAT(tile_ctx, SUFFIX) * ctx, const int MR_, const uint64_t* a, const uint64_t* w,
    const int64_t* const* bias, const float* mul, const float* add, float* o, int cn, const int nts)
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
    /* epilogue: out = float(bias - 2 acc) * mul + add (two roundings, like the torch path); nts: streaming
     * (non-temporal) stores for outputs much larger than the caches, which then skip the read-for-ownership */
#define STORE8(ptr, val) do { if (nts) _mm256_stream_ps((ptr), (val)); else _mm256_storeu_ps((ptr), (val)); } while (0)
    const int Cout = ctx->Cout;
    if (cn == NR) {
        const __m256 u0 = _mm256_loadu_ps(mul), u1 = _mm256_loadu_ps(mul + 8);
        const __m256 u2 = _mm256_loadu_ps(mul + 16), u3 = _mm256_loadu_ps(mul + 24);
        if (add) {
            const __m256 d0 = _mm256_loadu_ps(add), d1 = _mm256_loadu_ps(add + 8);
            const __m256 d2 = _mm256_loadu_ps(add + 16), d3 = _mm256_loadu_ps(add + 24);
#pragma GCC unroll 6
            for (int m = 0; m < MR_; ++m) {
                const int64_t* bs = bias[m];
                float* om = o + (int64_t)m * Cout;
#define EP(v, u, d)                                                                                          \
    STORE8(om + 8 * v,                                                                                       \
                     _mm256_add_ps(_mm256_mul_ps(_mm512_cvtepi64_ps(_mm512_sub_epi64(                         \
                                                     _mm512_loadu_si512((const void*)(bs + 8 * v)),         \
                                                     _mm512_add_epi64(c[m][v], c[m][v]))),                   \
                                                 u),                                                         \
                                   d));
                EP(0, u0, d0) EP(1, u1, d1) EP(2, u2, d2) EP(3, u3, d3)
#undef EP
            }
        } else {
#pragma GCC unroll 6
            for (int m = 0; m < MR_; ++m) {
                const int64_t* bs = bias[m];
                float* om = o + (int64_t)m * Cout;
#define EP(v, u)                                                                                             \
    STORE8(om + 8 * v, _mm256_mul_ps(_mm512_cvtepi64_ps(_mm512_sub_epi64(                           \
                                                   _mm512_loadu_si512((const void*)(bs + 8 * v)),           \
                                                   _mm512_add_epi64(c[m][v], c[m][v]))),                     \
                                               u));
                EP(0, u0) EP(1, u1) EP(2, u2) EP(3, u3)
#undef EP
            }
        }
        return;
    }
#pragma GCC unroll 6
    for (int m = 0; m < MR_; ++m) {
        const int64_t* bs = bias[m];
        float* om = o + (int64_t)m * Cout;
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
            int rem = cn - 8 * v;
            if (rem <= 0) break;
            __mmask8 mk = rem >= 8 ? (__mmask8)0xff : (__mmask8)((1u << rem) - 1u);
            __m256 d = _mm512_cvtepi64_ps(
                _mm512_sub_epi64(_mm512_loadu_si512((const void*)(bs + 8 * v)), _mm512_add_epi64(c[m][v], c[m][v])));
            __m256 y = _mm256_mul_ps(d, _mm256_maskz_loadu_ps(mk, mul + 8 * v));
            if (add) y = _mm256_add_ps(y, _mm256_maskz_loadu_ps(mk, add + 8 * v));
            _mm256_mask_storeu_ps(om + 8 * v, mk, y);
        }
    }
#undef STORE8
}

#define TILE_MR 6
static void CAT(tile, SUFFIX)(const CAT(tile_ctx, SUFFIX) * ctx, int nm, const uint64_t* a, const uint64_t* w,
                              const int64_t* const* bias, const float* mul, const float* add, float* o, int cn,
                              int nts)
{
    if (nts) {
        switch (nm) {
        case 6: CAT(tile_mr, SUFFIX)(ctx, 6, a, w, bias, mul, add, o, cn, 1); return;
        case 5: CAT(tile_mr, SUFFIX)(ctx, 5, a, w, bias, mul, add, o, cn, 1); return;
        case 4: CAT(tile_mr, SUFFIX)(ctx, 4, a, w, bias, mul, add, o, cn, 1); return;
        case 3: CAT(tile_mr, SUFFIX)(ctx, 3, a, w, bias, mul, add, o, cn, 1); return;
        case 2: CAT(tile_mr, SUFFIX)(ctx, 2, a, w, bias, mul, add, o, cn, 1); return;
        default: CAT(tile_mr, SUFFIX)(ctx, 1, a, w, bias, mul, add, o, cn, 1); return;
        }
    }
    switch (nm) {
    case 6: CAT(tile_mr, SUFFIX)(ctx, 6, a, w, bias, mul, add, o, cn, 0); break;
    case 5: CAT(tile_mr, SUFFIX)(ctx, 5, a, w, bias, mul, add, o, cn, 0); break;
    case 4: CAT(tile_mr, SUFFIX)(ctx, 4, a, w, bias, mul, add, o, cn, 0); break;
    case 3: CAT(tile_mr, SUFFIX)(ctx, 3, a, w, bias, mul, add, o, cn, 0); break;
    case 2: CAT(tile_mr, SUFFIX)(ctx, 2, a, w, bias, mul, add, o, cn, 0); break;
    default: CAT(tile_mr, SUFFIX)(ctx, 1, a, w, bias, mul, add, o, cn, 0); break;
    }
}
#else
#define TILE_MR 1
static void CAT(tile, SUFFIX)(const CAT(tile_ctx, SUFFIX) * ctx, int nm, const uint64_t* a, const uint64_t* w,
                              const int64_t* const* bias, const float* mul, const float* add, float* o, int cn,
                              int nts)
{
    int64_t acc[NR];
    (void)nts;
    const int T = ctx->T, Wg = ctx->Wg;
    (void)nm;
#if BNN_ISA == 1
    /* AVX2 has no vector popcount: nibble lookup with vpshufb, bytes summed by vpsadbw. */
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    __m256i c[8];
    for (int v = 0; v < 8; ++v) c[v] = zero;
    for (int t = 0; t < T; ++t) {
        const uint64_t* a0 = a + ctx->tapoff[t];
        for (int j = 0; j < Wg; ++j) {
            __m256i b = _mm256_set1_epi64x((long long)a0[j]);
            for (int v = 0; v < 8; ++v) {
                __m256i x = _mm256_xor_si256(b, _mm256_loadu_si256((const __m256i*)(w + 4 * v)));
                __m256i lo = _mm256_and_si256(x, low);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
                __m256i cnt = _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
                c[v] = _mm256_add_epi64(c[v], _mm256_sad_epu8(cnt, zero));
            }
            w += NR;
        }
    }
    for (int v = 0; v < 8; ++v) _mm256_storeu_si256((__m256i*)(acc + 4 * v), c[v]);
#else
    for (int n = 0; n < NR; ++n) acc[n] = 0;
    for (int t = 0; t < T; ++t) {
        const uint64_t* a0 = a + ctx->tapoff[t];
        for (int j = 0; j < Wg; ++j) {
            uint64_t b = a0[j];
            for (int n = 0; n < NR; ++n) acc[n] += __builtin_popcountll(b ^ w[n]);
            w += NR;
        }
    }
#endif
    const int64_t* bs = bias[0];
    if (add) {
        for (int n = 0; n < cn; ++n) {
            float d = (float)(bs[n] - 2 * acc[n]);
            float y = d * mul[n];
            o[n] = y + add[n];
        }
    } else {
        for (int n = 0; n < cn; ++n) {
            float d = (float)(bs[n] - 2 * acc[n]);
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
 *   a:    scratch for the padded bit image [N, Hs + 2 ph, Ws + 2 pw, G, Wg] words
 *   w:    packed weight [G, CB, T, Wg, NR] words (CB = ceil(CoutG / NR), T = KH * KW)
 *   out:  float32 [N, OH, OW, G * CoutG] (channels last); out = float(dot) * mul[c] + add[c]
 * Phases: (1) pack the padded image and the per-tap weight popcounts, (2) the bias table of the
 * pixel classes, (3) the tiles, statically scheduled over (image, output row, group, panel).   */
static void CAT(bconv, SUFFIX)(const conv_args* p)
{
    const int N = p->N, Hs = p->Hs, Ws = p->Ws, G = p->G, Cg = p->Cg, Wg = p->Wg, CoutG = p->CoutG;
    const int OH = p->OH, OW = p->OW, KH = p->KH, KW = p->KW, T = KH * KW;
    const int CB = (CoutG + NR - 1) / NR, Cout = G * CoutG, C = G * Cg;
    const int Hp = Hs + 2 * p->ph, Wp = Ws + 2 * p->pw;
    const int64_t rs = (int64_t)G * Wg; /* words per packed pixel */
    const int npan = G * CB;

    /* pixel classes: the valid kernel rows of output row oh form an interval [lo, hi] */
    int* rid = (int*)malloc(sizeof(int) * (size_t)(OH + OW));
    int* cid = rid + OH;
    int* rcls = (int*)malloc(sizeof(int) * 2 * (size_t)(OH + OW)); /* (lo, hi) pairs: rows then cols */
    int64_t* tapoff = (int64_t*)malloc(sizeof(int64_t) * (size_t)T);
    int64_t* wpop = (int64_t*)malloc(sizeof(int64_t) * (size_t)npan * T * NR);
    if (!rid || !rcls || !tapoff || !wpop) {
        free(rid); free(rcls); free(tapoff); free(wpop);
        p->status[0] = -1;
        return;
    }
    int nR = 0, nC = 0;
    int* ccls = rcls + 2 * OH;
    for (int pass = 0; pass < 2; ++pass) {
        const int O = pass ? OW : OH, S = pass ? p->sw : p->sh, P = pass ? p->pw : p->ph;
        const int D = pass ? p->dw : p->dh, K = pass ? KW : KH, I = pass ? Ws : Hs;
        int* ids = pass ? cid : rid;
        int* cls = pass ? ccls : rcls;
        int n = 0;
        for (int o = 0; o < O; ++o) {
            int lo = K, hi = -1;
            for (int k = 0; k < K; ++k) {
                int i = o * S - P + k * D;
                if (i >= 0 && i < I) { if (k < lo) lo = k; hi = k; }
            }
            int f = 0;
            while (f < n && !(cls[2 * f] == lo && cls[2 * f + 1] == hi)) ++f;
            if (f == n) { cls[2 * n] = lo; cls[2 * n + 1] = hi; ++n; }
            ids[o] = f;
        }
        if (pass) nC = n; else nR = n;
    }
    int64_t* btab = (int64_t*)malloc(sizeof(int64_t) * (size_t)nR * nC * npan * NR);
    if (!btab) {
        free(rid); free(rcls); free(tapoff); free(wpop);
        p->status[0] = -1;
        return;
    }
    for (int kh = 0; kh < KH; ++kh)
        for (int kw = 0; kw < KW; ++kw)
            tapoff[kh * KW + kw] = ((int64_t)kh * p->dh * Wp + (int64_t)kw * p->dw) * rs;

    const int64_t pack_rows = (int64_t)N * Hp;
    const int64_t items = (int64_t)N * OH * npan;
    const int64_t pstep = (int64_t)p->sw * rs;
    CAT(tile_ctx, SUFFIX) ctx;
    ctx.tapoff = tapoff;
    ctx.T = T;
    ctx.Wg = Wg;
    ctx.Cout = Cout;
    ctx.pstep = pstep;

    int nt = p->nthreads;
    /* streaming stores when each thread's share of the output exceeds half its L2 (and is 32-byte aligned) */
    const int64_t out_bytes = (int64_t)N * OH * OW * Cout * 4;
    const int nts = BNN_ISA == 2 && out_bytes > ((int64_t)1 << 20) * (p->nthreads > 0 ? p->nthreads : 1) &&
                    (Cout % 8) == 0 && (((uintptr_t)p->out) & 31) == 0;
    if (items < 2 * nt && pack_rows < 2 * nt) nt = 1;
#pragma omp parallel num_threads(nt)
    {
        /* (1a) padded bit image: border words 0, interior packed signs */
#pragma omp for schedule(static) nowait
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
            const float* xrow = p->x + ((int64_t)n * p->H + (int64_t)i * p->uh) * p->W * C;
            uint64_t* op = orow + (int64_t)p->pw * rs;
            const int64_t xstep = (int64_t)p->uw * C;
            for (int j = 0; j < Ws; ++j) {
#if BNN_ISA == 2
                /* the input is usually cold (written by the previous layer): fetch 8 pixels ahead */
                if (j + 8 < Ws) {
                    const char* pf = (const char*)(xrow + (j + 8) * xstep);
                    for (int b = 0; b < C * 4; b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
                }
#endif
                CAT(packpix, SUFFIX)(xrow + j * xstep, p->thr, op + j * rs, G, Cg, Wg);
            }
        }
        /* (1b) per-tap weight popcounts [G, CB, T, NR] */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < (int64_t)npan * T; ++i) {
            const uint64_t* wi = p->w + i * Wg * NR;
            int64_t* q = wpop + i * NR;
            for (int n = 0; n < NR; ++n) q[n] = 0;
            for (int j = 0; j < Wg; ++j)
                for (int n = 0; n < NR; ++n) q[n] += __builtin_popcountll(wi[j * NR + n]);
        }
        /* (2) bias table [nR, nC, G, CB, NR] = Tv * Cg + 2 * sum of wpop over padded taps */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < (int64_t)nR * nC * npan; ++i) {
            const int pan = (int)(i % npan), rc = (int)(i / npan), cc = rc % nC, rr = rc / nC;
            const int rlo = rcls[2 * rr], rhi = rcls[2 * rr + 1], clo = ccls[2 * cc], chi = ccls[2 * cc + 1];
            int64_t* q = btab + i * NR;
            const int tv = (rhi >= rlo ? rhi - rlo + 1 : 0) * (chi >= clo ? chi - clo + 1 : 0);
            for (int n = 0; n < NR; ++n) q[n] = (int64_t)tv * Cg;
            if (tv == T) continue;
            for (int kh = 0; kh < KH; ++kh)
                for (int kw = 0; kw < KW; ++kw) {
                    if (kh >= rlo && kh <= rhi && kw >= clo && kw <= chi) continue;
                    const int64_t* wq = wpop + ((int64_t)pan * T + kh * KW + kw) * NR;
                    for (int n = 0; n < NR; ++n) q[n] += 2 * wq[n];
                }
        }
        /* (3) tiles */
        const int64_t* bptr[TILE_MR];
#pragma omp for schedule(static)
        for (int64_t it = 0; it < items; ++it) {
            const int pan = (int)(it % npan);
            const int64_t row = it / npan; /* n * OH + oh */
            const int oh = (int)(row % OH), n = (int)(row / OH);
            const int g = pan / CB, cb = pan % CB;
            int cn = CoutG - cb * NR;
            if (cn > NR) cn = NR;
            const int c0 = g * CoutG + cb * NR;
            const uint64_t* wp = p->w + (int64_t)pan * T * Wg * NR;
            const uint64_t* arow = p->a + (((int64_t)n * Hp + (int64_t)oh * p->sh) * Wp) * rs + (int64_t)g * Wg;
            const int64_t* brow = btab + ((int64_t)rid[oh] * nC * npan + pan) * NR;
            const int64_t bcs = (int64_t)npan * NR;
            float* orow = p->out + row * OW * Cout + c0;
            const float* mul = p->mul + c0;
            const float* add = p->add ? p->add + c0 : NULL;
            for (int ow = 0; ow < OW; ow += TILE_MR) {
                const int nm = OW - ow < TILE_MR ? OW - ow : TILE_MR;
                for (int m = 0; m < nm; ++m) bptr[m] = brow + cid[ow + m] * bcs;
                CAT(tile, SUFFIX)(&ctx, nm, arow + ow * pstep, wp, bptr, mul, add, orow + (int64_t)ow * Cout, cn, nts);
            }
        }
#if BNN_ISA == 2
        if (nts) _mm_sfence();
#endif
    }
    free(rid);
    free(rcls);
    free(tapoff);
    free(wpop);
    free(btab);
}

#undef TILE_MR
#undef CAT
#undef CAT_
