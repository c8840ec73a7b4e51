/* Binary convolution / packing kernels, instantiated once per ISA by
 * bnn_kernel.c (which defines SUFFIX, BNN_ISA and MR before including this).
 *
 * Arithmetic (REFERENCE.md section 5): with +1 -> bit 0 and -1 -> bit 1,
 * dot(a, w) = K - 2 * popcount(a XOR w) over the K valid bits.  Taps that fall
 * in the zero padding of the fake-binarized conv contribute 0: the kernel
 * reads a row of zero words there (so it adds popcount(w) for that tap) and
 * then subtracts the per-tap weight popcount and leaves the tap out of K.
 */
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

/* ---- micro kernel: acc[MR][NR] = sum_t sum_j popcount(a[t][m][j] ^ w[t][j][n]) ---- */
#if BNN_ISA == 2
static void CAT(micro, SUFFIX)(const uint64_t* const* ap, int T, int Wg, const uint64_t* w, int64_t* acc)
{
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00;
    __m512i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512i c20 = c00, c21 = c00, c22 = c00, c23 = c00;
    __m512i c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    for (int t = 0; t < T; ++t) {
        const uint64_t *a0 = ap[4 * t], *a1 = ap[4 * t + 1], *a2 = ap[4 * t + 2], *a3 = ap[4 * t + 3];
        for (int j = 0; j < Wg; ++j) {
            __m512i w0 = _mm512_loadu_si512((const void*)(w));
            __m512i w1 = _mm512_loadu_si512((const void*)(w + 8));
            __m512i w2 = _mm512_loadu_si512((const void*)(w + 16));
            __m512i w3 = _mm512_loadu_si512((const void*)(w + 24));
            w += NR;
            __m512i b;
#define ROW(r, ar)                                                                  \
            b = _mm512_set1_epi64((long long)ar[j]);                                \
            c##r##0 = _mm512_add_epi64(c##r##0, _mm512_popcnt_epi64(_mm512_xor_si512(b, w0))); \
            c##r##1 = _mm512_add_epi64(c##r##1, _mm512_popcnt_epi64(_mm512_xor_si512(b, w1))); \
            c##r##2 = _mm512_add_epi64(c##r##2, _mm512_popcnt_epi64(_mm512_xor_si512(b, w2))); \
            c##r##3 = _mm512_add_epi64(c##r##3, _mm512_popcnt_epi64(_mm512_xor_si512(b, w3)));
            ROW(0, a0) ROW(1, a1) ROW(2, a2) ROW(3, a3)
#undef ROW
        }
    }
#define ST(r)                                                        \
    _mm512_storeu_si512((void*)(acc + r * NR), c##r##0);             \
    _mm512_storeu_si512((void*)(acc + r * NR + 8), c##r##1);         \
    _mm512_storeu_si512((void*)(acc + r * NR + 16), c##r##2);        \
    _mm512_storeu_si512((void*)(acc + r * NR + 24), c##r##3);
    ST(0) ST(1) ST(2) ST(3)
#undef ST
}
#elif BNN_ISA == 1
/* AVX2 has no vector popcount: nibble lookup with vpshufb, bytes summed by vpsadbw. */
static void CAT(micro, SUFFIX)(const uint64_t* const* ap, int T, int Wg, const uint64_t* w, int64_t* acc)
{
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    __m256i c[8];
    for (int v = 0; v < 8; ++v) c[v] = zero;
    for (int t = 0; t < T; ++t) {
        const uint64_t* a0 = ap[t];
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
}
#else
static void CAT(micro, SUFFIX)(const uint64_t* const* ap, int T, int Wg, const uint64_t* w, int64_t* acc)
{
    for (int n = 0; n < NR; ++n) acc[n] = 0;
    for (int t = 0; t < T; ++t) {
        const uint64_t* a0 = ap[t];
        for (int j = 0; j < Wg; ++j) {
            uint64_t b = a0[j];
            for (int n = 0; n < NR; ++n) acc[n] += __builtin_popcountll(b ^ w[n]);
            w += NR;
        }
    }
}
#endif

/* ---- binary convolution driver ----
 * a:   packed input  [N, H, W, G, Wg] words (channels last)
 * w:   packed weight [G, CB, T, Wg, NR] words (CB = ceil(CoutG / NR), T = KH * KW)
 * out: float32 [N, OH, OW, G * CoutG] (channels last); out = dot * mul[c] + add[c]
 */
static void CAT(bconv, SUFFIX)(const conv_args* p)
{
    const int64_t npix = (int64_t)p->N * p->OH * p->OW;
    const int64_t ntiles = (npix + MR - 1) / MR;
    const int T = p->KH * p->KW, Wg = p->Wg, G = p->G, CoutG = p->CoutG;
    const int CB = (CoutG + NR - 1) / NR;
    const int Cout = G * CoutG;
    const int64_t rowstride = (int64_t)G * Wg; /* words per input pixel */
    /* per-tap popcount of the weights, for the padding correction: [G, CB, T, NR] */
    int64_t* wpop = (int64_t*)malloc(sizeof(int64_t) * (size_t)G * CB * T * NR);
    uint64_t* zrow = (uint64_t*)calloc((size_t)(Wg > 0 ? Wg : 1), sizeof(uint64_t));
    if (!wpop || !zrow) { free(wpop); free(zrow); p->status[0] = -1; return; }
    for (int64_t i = 0; i < (int64_t)G * CB * T; ++i)
        for (int n = 0; n < NR; ++n) {
            int64_t s = 0;
            const uint64_t* wi = p->w + i * Wg * NR + n;
            for (int j = 0; j < Wg; ++j) s += __builtin_popcountll(wi[j * NR]);
            wpop[i * NR + n] = s;
        }

#pragma omp parallel num_threads(p->nthreads)
    {
        const uint64_t** ap = (const uint64_t**)malloc(sizeof(uint64_t*) * (size_t)T * MR);
        uint8_t* valid = (uint8_t*)malloc((size_t)T * MR);
        int64_t* tapoff = (int64_t*)malloc(sizeof(int64_t) * (size_t)T);
        int64_t acc[MR * NR];
        int kval[MR];
        int64_t corr[NR];
        for (int kh = 0; kh < p->KH; ++kh)
            for (int kw = 0; kw < p->KW; ++kw)
                tapoff[kh * p->KW + kw] = ((int64_t)kh * p->dh * p->W + (int64_t)kw * p->dw) * rowstride;
#pragma omp for schedule(static)
        for (int64_t tile = 0; tile < ntiles; ++tile) {
            int64_t pix0 = tile * MR;
            int nm = (int)((npix - pix0) < MR ? (npix - pix0) : MR);
            /* coordinates of the tile's pixels, stepped from one division */
            int pw_[MR], ph_[MR], pn_[MR];
            {
                int ow = (int)(pix0 % p->OW);
                int64_t r = pix0 / p->OW;
                int oh = (int)(r % p->OH);
                int n = (int)(r / p->OH);
                for (int m = 0; m < MR; ++m) {
                    pw_[m] = ow; ph_[m] = oh; pn_[m] = n;
                    if (++ow == p->OW) { ow = 0; if (++oh == p->OH) { oh = 0; ++n; } }
                }
            }
            for (int g = 0; g < G; ++g) {
                /* input row pointers for every tap of every pixel of the tile */
                for (int m = 0; m < MR; ++m) {
                    if (m >= nm) {
                        kval[m] = T;
                        for (int t = 0; t < T; ++t) { ap[t * MR + m] = zrow; valid[t * MR + m] = 1; }
                        continue;
                    }
                    const int ih0 = ph_[m] * p->sh - p->ph, iw0 = pw_[m] * p->sw - p->pw;
                    const uint64_t* base = p->a + (int64_t)pn_[m] * p->H * p->W * rowstride + (int64_t)g * Wg;
                    if (ih0 >= 0 && ih0 + (p->KH - 1) * p->dh < p->H && iw0 >= 0 && iw0 + (p->KW - 1) * p->dw < p->W) {
                        const uint64_t* b0 = base + ((int64_t)ih0 * p->W + iw0) * rowstride;
                        kval[m] = T;
                        for (int t = 0; t < T; ++t) { ap[t * MR + m] = b0 + tapoff[t]; valid[t * MR + m] = 1; }
                        continue;
                    }
                    kval[m] = 0;
                    for (int kh = 0; kh < p->KH; ++kh) {
                        int ih = ih0 + kh * p->dh;
                        for (int kw = 0; kw < p->KW; ++kw) {
                            int iw = iw0 + kw * p->dw;
                            int t = kh * p->KW + kw;
                            if (ih >= 0 && ih < p->H && iw >= 0 && iw < p->W) {
                                ap[t * MR + m] = base + ((int64_t)ih * p->W + iw) * rowstride;
                                valid[t * MR + m] = 1;
                                kval[m] += 1;
                            } else {
                                ap[t * MR + m] = zrow;
                                valid[t * MR + m] = 0;
                            }
                        }
                    }
                }
                for (int cb = 0; cb < CB; ++cb) {
                    const uint64_t* wp = p->w + (((int64_t)g * CB + cb) * T) * Wg * NR;
                    CAT(micro, SUFFIX)(ap, T, Wg, wp, acc);
                    int cn = CoutG - cb * NR;
                    if (cn > NR) cn = NR;
                    const int c0 = g * CoutG + cb * NR;
                    const float* mul = p->mul + c0;
                    const float* add = p->add ? p->add + c0 : NULL;
                    for (int m = 0; m < nm; ++m) {
                        int64_t K = (int64_t)kval[m] * p->Cg;
                        for (int n = 0; n < NR; ++n) corr[n] = 0;
                        if (kval[m] != T) {
                            for (int t = 0; t < T; ++t)
                                if (!valid[t * MR + m]) {
                                    const int64_t* wq = wpop + ((((int64_t)g * CB + cb) * T) + t) * NR;
                                    for (int n = 0; n < NR; ++n) corr[n] += wq[n];
                                }
                        }
                        float* o = p->out + (pix0 + m) * Cout + c0;
                        const int64_t* am = acc + m * NR;
#if BNN_ISA == 2
                        {
                            const __m512i Kv = _mm512_set1_epi64(K);
                            for (int v = 0; v < NR / 8; ++v) {
                                int rem = cn - 8 * v;
                                if (rem <= 0) break;
                                __mmask8 mk = rem >= 8 ? (__mmask8)0xff : (__mmask8)((1u << rem) - 1u);
                                __m512i s = _mm512_sub_epi64(_mm512_loadu_si512((const void*)(am + 8 * v)),
                                                             _mm512_loadu_si512((const void*)(corr + 8 * v)));
                                __m256 d = _mm512_cvtepi64_ps(_mm512_sub_epi64(Kv, _mm512_slli_epi64(s, 1)));
                                __m256 y = _mm256_mul_ps(d, _mm256_maskz_loadu_ps(mk, mul + 8 * v));
                                if (add) y = _mm256_add_ps(y, _mm256_maskz_loadu_ps(mk, add + 8 * v));
                                _mm256_mask_storeu_ps(o + 8 * v, mk, y);
                            }
                            continue;
                        }
#endif
                        if (add) {
                            for (int n = 0; n < cn; ++n) {
                                float d = (float)(K - 2 * (am[n] - corr[n]));
                                float y = d * mul[n];
                                o[n] = y + add[n];
                            }
                        } else {
                            for (int n = 0; n < cn; ++n) {
                                float d = (float)(K - 2 * (am[n] - corr[n]));
                                o[n] = d * mul[n];
                            }
                        }
                    }
                }
            }
        }
        free(ap);
        free(valid);
        free(tapoff);
    }
    free(wpop);
    free(zrow);
}

/* ---- sign packing of a channels-last float32 tensor [npix, G * Cg] -> [npix, G, Wg] words ----
 * bit = 1 (value -1) where x < thr[c] (thr = -bias of the RSign shift; 0 when thr is NULL). */
static void CAT(packsign, SUFFIX)(const float* x, const float* thr, uint64_t* out, int64_t npix, int G, int Cg,
                                  int Wg, int nthreads)
{
    const int C = G * Cg;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t p = 0; p < npix; ++p) {
        const float* xp = x + p * C;
        uint64_t* op = out + p * (int64_t)G * Wg;
        for (int g = 0; g < G; ++g) {
            for (int j = 0; j < Wg; ++j) {
                int c0 = j * 64;
                int cn = Cg - c0 < 64 ? Cg - c0 : 64;
                const float* xs = xp + g * Cg + c0;
                const float* ts = thr ? thr + g * Cg + c0 : NULL;
                uint64_t bits = 0;
                int b = 0;
#if BNN_ISA == 2
                for (; b + 16 <= cn; b += 16) {
                    __m512 v = _mm512_loadu_ps(xs + b);
                    __m512 th = ts ? _mm512_loadu_ps(ts + b) : _mm512_setzero_ps();
                    bits |= (uint64_t)_mm512_cmp_ps_mask(v, th, _CMP_LT_OQ) << b;
                }
#elif BNN_ISA == 1
                for (; b + 8 <= cn; b += 8) {
                    __m256 v = _mm256_loadu_ps(xs + b);
                    __m256 th = ts ? _mm256_loadu_ps(ts + b) : _mm256_setzero_ps();
                    bits |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, th, _CMP_LT_OQ)) << b;
                }
#endif
                for (; b < cn; ++b) bits |= (uint64_t)(xs[b] < (ts ? ts[b] : 0.0f)) << b;
                op[g * Wg + j] = bits;
            }
        }
    }
}

#undef CAT
#undef CAT_
