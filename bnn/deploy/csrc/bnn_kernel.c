/* bnn.deploy._kernel: xnor-popcount kernels for packed binary layers.
 *
 * Plain C, no libtorch: the Python side passes raw pointers (tensor.data_ptr())
 * of contiguous CPU tensors.  One code path per ISA (AVX-512 VPOPCNTDQ, AVX2,
 * scalar) is compiled through `#pragma GCC target` and chosen at run time with
 * __builtin_cpu_supports.  One call = one OpenMP region: sign-packing of the
 * input into a zero-bordered bit image, then register-blocked xnor-popcount
 * tiles (6 pixels x 32 channels on AVX-512) with the per-channel scale/shift
 * folded into the tile's epilogue, statically scheduled over output rows.  On
 * AVX2, stride-1 layers with few weights per output position run the nibble-
 * table path (16 output positions x 2 channels per vpshufb, see tab_applies).
 * Built with -ffp-contract=off so that `dot * mul + add` rounds exactly like
 * the pure-torch path (bnn/deploy/functional.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <time.h>
#include <math.h>
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define BNN_X86 1
#include <immintrin.h>
#else
#define BNN_X86 0
#endif

/* Python's build flags include -fwrapv, which keeps GCC from simplifying the index arithmetic of the
 * inner loops (10-20% slower tiles); this code has no signed overflow, so turn it back off. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-wrapv")
#endif

#define NR 32 /* output channels per weight panel (format version 1) */

typedef struct {
    const float* x;
    const float* thr;
    uint64_t* a;
    const uint64_t* w;
    const float* mul;
    const float* add;
    float* out;
    const uint64_t* xw; /* the input as sign words [N, H, W, G * Wg] (a previous layer's output words), or NULL */
    uint64_t* ow;       /* the output's sign words [N, OH, OW, ceil(G * CoutG / 64)] (bit = out < othr[c]), or NULL */
    const float* othr;
    const float* res;   /* a real shortcut added to the output (out += res * rgain[c]; rgain NULL: 1), or NULL */
    const float* rgain;
    int N, H, W, uh, uw, Hs, Ws, G, Cg, Wg, CoutG, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, nthreads;
    int* status;
} conv_args;

/* ---------------------------------------------------------------------------------------------- */
/* Per-layer constants of one conv geometry for one code path ("layer constants", computed once by
 * bconv_constants and cached by the caller, or on every call when the caller passes none).  int64 words:
 *   [0] total words, [1] nR, [2] nC, [3] geometry fingerprint, [4] 1 when the nibble tables follow (AVX2),
 *   [5] the ISA they were made for (0 scalar, 1 AVX2, 2 AVX-512: bconv runs them on that path only),
 *   tapoff [T]                 word offset of each tap in the padded bit image,
 *   rid [OH], cid [OW]         pixel class of each output row / column,
 *   btab [nR, nC, npan, NR]    bias = Tv * Cg + 2 * (popcount of the weights on padded taps), per class, as
 *                              float32, two per word (bias <= 2K: exact for K = T * Cg < 2^23, so the
 *                              epilogue's bias - 2 float(acc) is the exact integer dot),
 *   AVX2 only, either          wsplit [npan, T, Wg, 2, NR] the weight words nibble-split (low nibbles, then high
 *                              nibbles) for the xor tiles,
 *   or                         the nibble tables (tab_consts_words) where that path applies.
 * The scalar and AVX-512 tiles read the packed weight itself, so their constants are a few kilobytes; the AVX2
 * ones carry one rearranged copy of the weight (twice its words: the split), or the tables.
 * The valid taps of an output pixel are a product of an interval of kernel rows and an interval of kernel
 * columns, so the pixel classes are the distinct (row interval, column interval) pairs. */
#define CONST_HDR 6

static int64_t geom_fingerprint(const conv_args* p)
{
    const int v[] = {p->H, p->W, p->uh, p->uw, p->Hs, p->Ws, p->G, p->Cg, p->Wg, p->CoutG, p->OH, p->OW,
                     p->KH, p->KW, p->sh, p->sw, p->ph, p->pw, p->dh, p->dw};
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); ++i) h = (h ^ (uint64_t)(uint32_t)v[i]) * 1099511628211ull;
    return (int64_t)(h >> 1);
}

/* classes of one axis: ids[o] = class of output o, cls = (lo, hi) pairs; returns the number of classes */
static int axis_classes(int O, int S, int P, int D, int K, int I, int64_t* ids, int* cls)
{
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
        if (ids) ids[o] = f;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* Nibble-table path (AVX2, groups = 1, few weights per output position: tab_applies).
 * With the input split into nibbles (4 input channels), popcount(a XOR w) of one nibble is a function of a
 * alone once w is fixed: a 16-entry table per (output channel, tap, nibble position), which `vpshufb` applies
 * to 16 output positions at once (one byte each).  One (16 positions x 2 channels) step is then vpshufb + add,
 * with no xor and no per-position broadcast: 2 operations per 128 binary MACs against 3 for the
 * nibble-split xor path.  Layout of the padded input ("planes"): per image and nibble position q, one byte
 * per padded pixel, the pixels split into stride phases (padded row r -> phase r % sh, row r / sh; the same
 * for columns) so that every tap of a strided conv reads consecutive bytes.  Output positions are flattened
 * over the phase plane, p = oh * Wps + ow (the columns ow >= OW are computed and dropped), so one tap of 16
 * consecutive positions is one 16-byte load.  Border pixels hold 0x80, for which `vpshufb` returns 0: a
 * padded tap contributes nothing and dot = Tv * Cg - 2 * acc, with Tv the valid taps of the position.
 * Tables: [npan][8 quads of 4 channels][T][Q][2 pairs][2 channels][16 bytes], Q = ceil(Cg / 4). */
#define TAB_MAXQ 128 /* nibble positions per tap: at most 512 input channels */
#define TAB_POS 64   /* output positions per tile: 4 vectors of 16 (the last tile of a row block: 1 to 4) */
#define TAB_RB 256   /* output positions per work item (their int16 sums stay in L1) */
#define PANEL_MAJOR_BYTES (256 << 10) /* AVX2 weights (split or tables) beyond this: work items panel-major */

typedef struct {
    int Q, Hps, Wps, nph;
    int64_t PH, PS;     /* bytes per phase plane, per nibble plane (all phases) */
    int64_t npos, nposr; /* flattened output positions, rounded up to whole vectors of 16 */
    int64_t bytes;       /* scratch bytes: the planes of all images and the slack the last tiles read */
} tab_geom;

/* Whether a conv geometry's layer constants carry nibble tables (and its calls then run them).  Measured on a
 * shared Zen 3 with cold caches (a float conv between calls, as in a network): stride-1 3x3 layers with at most
 * 128 input channels and the 1x1 convs gain a little to 16 %; strided 3x3 layers (phase planes, 16 x the bytes
 * of the split weights) and 256-channel 14x14 layers lose.  So by default: stride 1 (a strided 1x1 conv runs
 * with stride 1 on the pixels it reads) and at most 640 bytes of a panel's tables (8 T Q 64) per output position
 * of an image (up to the 256 positions of a work item).  BNN_NIBBLE_TABLES=0 / 1 in the environment when the
 * constants are made: never / wherever the path can run (tests, comparisons).  The int16 sums hold at most
 * T * Cg. */
static int tab_possible(const conv_args* p)
{
    const int64_t T = (int64_t)p->KH * p->KW, Q = (p->Cg + 3) / 4;
    return p->G == 1 && Q <= TAB_MAXQ && T * 4 * Q <= 32767 && p->sh <= 4 && p->sw <= 4;
}

static int tab_applies(const conv_args* p)
{
    const int64_t T = (int64_t)p->KH * p->KW, Q = (p->Cg + 3) / 4, pos = (int64_t)p->OH * p->OW;
    if (!tab_possible(p)) return 0;
    const char* env = getenv("BNN_NIBBLE_TABLES");
    if (env && env[0] == '0') return 0;
    if (env && env[0] == '1') return 1;
    return p->sh == 1 && p->sw == 1 && 8 * T * Q * 64 <= 640 * (pos < TAB_RB ? pos : TAB_RB);
}

/* the geometry, and the tap offsets (bytes, when toff is given) */
static void tab_geometry(const conv_args* p, tab_geom* g, int64_t* toff)
{
    const int Hp = p->Hs + 2 * p->ph, Wp = p->Ws + 2 * p->pw;
    g->Q = (p->Cg + 3) / 4;
    g->Hps = (Hp + p->sh - 1) / p->sh;
    g->Wps = (Wp + p->sw - 1) / p->sw;
    g->nph = p->sh * p->sw;
    g->PH = (int64_t)g->Hps * g->Wps;
    g->PS = g->nph * g->PH;
    g->npos = (int64_t)(p->OH - 1) * g->Wps + p->OW;
    g->nposr = (g->npos + 15) / 16 * 16;
    int64_t maxoff = 0;
    for (int kh = 0; kh < p->KH; ++kh)
        for (int kw = 0; kw < p->KW; ++kw) {
            const int rh = kh * p->dh, rw = kw * p->dw;
            const int64_t o = ((int64_t)(rh % p->sh) * p->sw + rw % p->sw) * g->PH + (int64_t)(rh / p->sh) * g->Wps +
                              rw / p->sw;
            if (toff) toff[kh * p->KW + kw] = o;
            if (o > maxoff) maxoff = o;
        }
    const int64_t planes = (int64_t)p->N * g->Q * g->PS, last_read = planes - g->PS + maxoff + g->nposr;
    g->bytes = (last_read > planes ? last_read : planes) + 32;
}

/* int64 words of the scratch the kernel needs (the bit image, or the planes of the nibble-table path wherever
 * that path could run: the scratch does not depend on how the constants were made) */
static int64_t scratch_words(const conv_args* p)
{
    int64_t w = 2 * (int64_t)p->N * (p->Hs + 2 * p->ph) * (p->Ws + 2 * p->pw) * p->G * p->Wg;
    if (tab_possible(p)) {
        tab_geom g;
        tab_geometry(p, &g, NULL);
        if ((g.bytes + 7) / 8 > w) w = (g.bytes + 7) / 8;
    }
    return w;
}

/* words of the nibble-table constants (after the split weights): toff [T], Tv * Cg per flattened position
 * (int32 [nposr]), the tables (bytes [npan, 8, T, Q, 2, 2, 16]); 0 when the path does not apply */
static int64_t tab_consts_words(const conv_args* p)
{
    if (!tab_applies(p)) return 0;
    tab_geom g;
    tab_geometry(p, &g, NULL);
    const int64_t T = (int64_t)p->KH * p->KW, npan = (p->CoutG + NR - 1) / NR;
    return T + (g.nposr + 1) / 2 + npan * 8 * T * g.Q * 64 / 8;
}

/* words of the nibble-split weights in the constants of code path `isa` (AVX2 xor tiles only) */
static int64_t split_words(const conv_args* p, int isa)
{
    if (isa != 1 || tab_applies(p)) return 0;
    return (int64_t)p->G * ((p->CoutG + NR - 1) / NR) * p->KH * p->KW * p->Wg * 2 * NR;
}

/* words of the constants of code path `isa`; *nR, *nC and the classes when the arrays are given; -1 when out
 * of memory */
static int64_t consts_layout(const conv_args* p, int isa, int* nR, int* nC, int64_t* rid, int64_t* cid, int** rcls)
{
    int* cls = (int*)malloc(sizeof(int) * 2 * (size_t)(p->OH + p->OW));
    if (!cls) return -1;
    *nR = axis_classes(p->OH, p->sh, p->ph, p->dh, p->KH, p->Hs, rid, cls);
    *nC = axis_classes(p->OW, p->sw, p->pw, p->dw, p->KW, p->Ws, cid, cls + 2 * p->OH);
    if (rcls) *rcls = cls;
    else free(cls);
    const int64_t T = (int64_t)p->KH * p->KW, npan = (int64_t)p->G * ((p->CoutG + NR - 1) / NR);
    return CONST_HDR + T + p->OH + p->OW + (int64_t)*nR * *nC * npan * NR / 2 + split_words(p, isa) +
           (isa == 1 ? tab_consts_words(p) : 0);
}

static int64_t pop64(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (int64_t)((x * 0x0101010101010101ull) >> 56);
}

/* fill the constants of code path `isa` (c must hold consts_layout words); 0, or -1 when out of memory */
static int consts_fill(const conv_args* p, int isa, int64_t* c, int nthreads)
{
    int nR, nC, *rcls = NULL;
    const int T = p->KH * p->KW, Wg = p->Wg, Cg = p->Cg, KH = p->KH, KW = p->KW;
    const int npan = p->G * ((p->CoutG + NR - 1) / NR);
    int64_t* tapoff = c + CONST_HDR;
    int64_t* rid = tapoff + T;
    int64_t* cid = rid + p->OH;
    const int64_t total = consts_layout(p, isa, &nR, &nC, rid, cid, &rcls);
    if (total < 0) return -1;
    int* ccls = rcls + 2 * p->OH;
    float* btab = (float*)(cid + p->OW);
    uint64_t* wsplit = (uint64_t*)(cid + p->OW + (int64_t)nR * nC * npan * NR / 2);
    int64_t* wpop = (int64_t*)malloc(sizeof(int64_t) * (size_t)npan * T * NR);
    if (!wpop) { free(rcls); return -1; }
    c[0] = total; c[1] = nR; c[2] = nC; c[3] = geom_fingerprint(p);
    c[4] = isa == 1 && tab_consts_words(p) > 0; c[5] = isa;
    const int split = split_words(p, isa) > 0;
    const int64_t rs = (int64_t)p->G * Wg, Wp = p->Ws + 2 * p->pw;
    for (int kh = 0; kh < KH; ++kh)
        for (int kw = 0; kw < KW; ++kw) tapoff[kh * KW + kw] = ((int64_t)kh * p->dh * Wp + (int64_t)kw * p->dw) * rs;
    const int64_t nwt = (int64_t)npan * T;
    const int nt = nwt * Wg * NR > (1 << 14) ? nthreads : 1;
#pragma omp parallel num_threads(nt)
    {
        /* per-tap weight popcounts [npan, T, NR] and the nibble-split weights */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < nwt; ++i) {
            const uint64_t* wi = p->w + i * Wg * NR;
            uint64_t* si = wsplit + i * Wg * 2 * NR;
            int64_t* q = wpop + i * NR;
            for (int n = 0; n < NR; ++n) q[n] = 0;
            for (int j = 0; j < Wg; ++j)
                for (int n = 0; n < NR; ++n) {
                    const uint64_t v = wi[j * NR + n];
                    q[n] += pop64(v);
                    if (!split) continue;
                    si[j * 2 * NR + n] = v & 0x0f0f0f0f0f0f0f0full;
                    si[j * 2 * NR + NR + n] = (v >> 4) & 0x0f0f0f0f0f0f0f0full;
                }
        }
        /* bias table [nR, nC, npan, NR] = Tv * Cg + 2 * sum of wpop over the padded taps */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < (int64_t)nR * nC * npan; ++i) {
            const int pan = (int)(i % npan), rc = (int)(i / npan), cc = rc % nC, rr = rc / nC;
            const int rlo = rcls[2 * rr], rhi = rcls[2 * rr + 1], clo = ccls[2 * cc], chi = ccls[2 * cc + 1];
            int64_t q[NR];
            const int tv = (rhi >= rlo ? rhi - rlo + 1 : 0) * (chi >= clo ? chi - clo + 1 : 0);
            for (int n = 0; n < NR; ++n) q[n] = (int64_t)tv * Cg;
            if (tv != T)
                for (int kh = 0; kh < KH; ++kh)
                    for (int kw = 0; kw < KW; ++kw) {
                        if (kh >= rlo && kh <= rhi && kw >= clo && kw <= chi) continue;
                        const int64_t* wq = wpop + ((int64_t)pan * T + kh * KW + kw) * NR;
                        for (int n = 0; n < NR; ++n) q[n] += 2 * wq[n];
                    }
            for (int n = 0; n < NR; ++n) btab[i * NR + n] = (float)q[n];
        }
        if (c[4]) {
            /* nibble tables: byte v of the table of (channel, tap, nibble q) = popcount(v XOR weight nibble) */
            tab_geom g;
            tab_geometry(p, &g, NULL);
            const int Q = g.Q;
            int64_t* toff = (int64_t*)wsplit; /* the tables take the place of the split weights */
            int32_t* tv = (int32_t*)(toff + T);
            uint8_t* tabs = (uint8_t*)(tv + (g.nposr + 1) / 2 * 2);
#pragma omp single
            {
                tab_geometry(p, &g, toff);
                for (int64_t q = 0; q < g.nposr; ++q) {
                    const int oh = (int)(q / g.Wps), ow = (int)(q % g.Wps);
                    int32_t v = 0;
                    if (q < g.npos && ow < p->OW) {
                        const int rr = (int)rid[oh], cc = (int)cid[ow];
                        const int rlo = rcls[2 * rr], rhi = rcls[2 * rr + 1], clo = ccls[2 * cc], chi = ccls[2 * cc + 1];
                        v = (rhi >= rlo ? rhi - rlo + 1 : 0) * (chi >= clo ? chi - clo + 1 : 0) * Cg;
                    }
                    tv[q] = v;
                }
                if (g.nposr & 1) tv[g.nposr] = 0;
            }
#pragma omp for schedule(static)
            for (int64_t i = 0; i < (int64_t)npan * 8 * T; ++i) {
                const int t = (int)(i % T), quad = (int)(i / T % 8), pan = (int)(i / T / 8);
                uint8_t* tb = tabs + i * Q * 64;
                for (int q = 0; q < Q; ++q)
                    for (int k = 0; k < 4; ++k) {
                        const int n = quad * 4 + k; /* pair k / 2, lane k % 2 */
                        const uint64_t wv = p->w[(((int64_t)pan * T + t) * Wg + q / 16) * NR + n];
                        const int nib = (int)((wv >> (4 * (q % 16))) & 15);
                        for (int v = 0; v < 16; ++v) tb[q * 64 + k * 16 + v] = (uint8_t)pop64((uint64_t)(v ^ nib));
                    }
            }
        }
    }
    free(wpop);
    free(rcls);
    return 0;
}

/* scalar */
#define SUFFIX _scalar
#define BNN_ISA 0
#include "bconv_tmpl.h"
#undef SUFFIX
#undef BNN_ISA

#if BNN_X86 && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")
#define SUFFIX _avx2
#define BNN_ISA 1
#include "bconv_tmpl.h"
#undef SUFFIX
#undef BNN_ISA
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,popcnt,avx512f,avx512dq,avx512bw,avx512vl,avx512vpopcntdq")
#define SUFFIX _avx512
#define BNN_ISA 2
#include "bconv_tmpl.h"
#undef SUFFIX
#undef BNN_ISA
#pragma GCC pop_options
#define HAVE_SIMD 1
#else
#define HAVE_SIMD 0
#endif

static int isa_ok[3] = {1, 0, 0};

static int pick_isa(int isa)
{
    if (isa < 0) return isa_ok[2] ? 2 : (isa_ok[1] ? 1 : 0);
    if (isa > 2 || !isa_ok[isa]) return -1;
    return isa;
}

static PyObject* py_isas(PyObject* self, PyObject* args)
{
    PyObject* l = PyList_New(0);
    const char* names[3] = {"scalar", "avx2", "avx512"};
    for (int i = 0; i < 3; ++i)
        if (isa_ok[i]) {
            PyObject* s = PyUnicode_FromString(names[i]);
            PyList_Append(l, s);
            Py_DECREF(s);
        }
    return l;
}

#define CONV_INTS "iiiiiiiiiiiiiiiiiiiii"
#define CONV_INT_ARGS(p)                                                                                        \
    &p.N, &p.H, &p.W, &p.uh, &p.uw, &p.Hs, &p.Ws, &p.G, &p.Cg, &p.Wg, &p.CoutG, &p.OH, &p.OW, &p.KH, &p.KW,      \
        &p.sh, &p.sw, &p.ph, &p.pw, &p.dh, &p.dw

/* The integer arguments of one conv geometry, checked and packed once (bconv_geometry) for every bconv call. */
typedef struct {
    conv_args p;          /* the integers; the pointers are set per call */
    int64_t scratch;      /* scratch_words(&p) */
    int64_t fingerprint;  /* geom_fingerprint(&p): the layer constants must carry it */
} conv_geometry;

/* bconv_geometry(N, H, W, uh, uw, Hs, Ws, G, Cg, Wg, CoutG, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw) -> bytes: the
 * geometry argument of bconv */
static PyObject* py_bconv_geometry(PyObject* self, PyObject* args)
{
    conv_geometry g;
    memset(&g, 0, sizeof(g));
    if (!PyArg_ParseTuple(args, CONV_INTS, CONV_INT_ARGS(g.p))) return NULL;
    g.scratch = scratch_words(&g.p);
    g.fingerprint = geom_fingerprint(&g.p);
    return PyBytes_FromStringAndSize((const char*)&g, sizeof(g));
}

/* bconv(geometry, x, thr, a, a_words, w, mul, add, out, consts, xw, ow, othr, res, rgain, isa, nthreads), a
 * vectorcall (no argument tuple: a packed layer's call at batch 1 is a few microseconds):
 *   geometry: bytes of bconv_geometry; x float32 [N, H, W, G*Cg] channels last, thr float32 [G*Cg] or 0;
 *   a int64 scratch of a_words >= bconv_scratch() words; w packed weight [G, CB, KH*KW, Wg, NR];
 *   out float32 [N, OH, OW, G*CoutG]; consts: the layer constants of this geometry (bconv_constants) or 0;
 *   xw: the input as sign words [N, H, W, G*Wg] instead of x (then x and thr are not read), or 0;
 *   ow: int64 [N, OH, OW, ceil(G*CoutG / 64)] for the output's sign words, bit c = (out[c] < othr[c]) with othr
 *   float32 [G*CoutG], or 0;
 *   res: float32 [N, OH, OW, G*CoutG] added to the output (a real shortcut), times rgain float32 [G*CoutG] when
 *   rgain is not 0, or 0.  Pointers are ints (torch's data_ptr()). */
#define BCONV_NPTR 14 /* x .. rgain */
static PyObject* py_bconv(PyObject* self, PyObject* const* args, Py_ssize_t nargs)
{
    if (nargs != BCONV_NPTR + 3) {
        PyErr_Format(PyExc_TypeError, "bnn kernel: bconv takes %d arguments, got %zd", BCONV_NPTR + 3, nargs);
        return NULL;
    }
    if (!PyBytes_Check(args[0]) || PyBytes_GET_SIZE(args[0]) != (Py_ssize_t)sizeof(conv_geometry)) {
        PyErr_SetString(PyExc_TypeError, "bnn kernel: bconv's first argument must come from bconv_geometry()");
        return NULL;
    }
    conv_geometry g;
    memcpy(&g, PyBytes_AS_STRING(args[0]), sizeof(g));
    unsigned long long v[BCONV_NPTR];
    for (int i = 0; i < BCONV_NPTR; ++i) {
        v[i] = PyLong_AsUnsignedLongLong(args[1 + i]);
        if (v[i] == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    }
    int isa = (int)PyLong_AsLong(args[BCONV_NPTR + 1]);
    const int nthreads = (int)PyLong_AsLong(args[BCONV_NPTR + 2]);
    if (PyErr_Occurred()) return NULL;
    conv_args p = g.p;
    int status = 0;
    p.x = (const float*)v[0];
    p.thr = (const float*)v[1];
    p.a = (uint64_t*)v[2];
    const long long a_words = (long long)v[3];
    p.w = (const uint64_t*)v[4];
    p.mul = (const float*)v[5];
    p.add = (const float*)v[6];
    p.out = (float*)v[7];
    const int64_t* c = (const int64_t*)v[8];
    p.xw = (const uint64_t*)v[9];
    p.ow = (uint64_t*)v[10];
    p.othr = (const float*)v[11];
    p.res = (const float*)v[12];
    p.rgain = (const float*)v[13];
    p.nthreads = nthreads < 1 ? 1 : nthreads;
    p.status = &status;
    if (p.ow && !p.othr) {
        PyErr_SetString(PyExc_ValueError, "bnn kernel: output sign words need their thresholds (othr)");
        return NULL;
    }
    if (p.ow && p.res) {
        PyErr_SetString(PyExc_ValueError, "bnn kernel: output sign words and a real shortcut cannot be combined");
        return NULL;
    }
    if (a_words < g.scratch) {
        PyErr_SetString(PyExc_ValueError, "bnn kernel: the scratch is smaller than bconv_scratch() words");
        return NULL;
    }
    isa = pick_isa(isa);
    if (isa < 0) { PyErr_SetString(PyExc_ValueError, "bnn kernel: ISA not available on this CPU"); return NULL; }
    if (c && c[3] != g.fingerprint) {
        PyErr_SetString(PyExc_ValueError, "bnn kernel: the layer constants were made for another input shape");
        return NULL;
    }
    if (c && c[5] != isa) {
        static const char* names[3] = {"scalar", "avx2", "avx512"};
        PyErr_Format(PyExc_ValueError, "bnn kernel: the layer constants were made for the %s path, this call runs %s",
                     c[5] >= 0 && c[5] <= 2 ? names[c[5]] : "?", names[isa]);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
#if HAVE_SIMD
    if (isa == 2) bconv_avx512(&p, c);
    else if (isa == 1) bconv_avx2(&p, c);
    else
#endif
        bconv_scalar(&p, c);
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* bconv_scratch(N, H, ..., dw) -> int64 words of the scratch bconv needs for this geometry */
static PyObject* py_bconv_scratch(PyObject* self, PyObject* args)
{
    conv_args p;
    memset(&p, 0, sizeof(p));
    if (!PyArg_ParseTuple(args, CONV_INTS, CONV_INT_ARGS(p))) return NULL;
    return PyLong_FromLongLong((long long)scratch_words(&p));
}

/* bconv_tiles(N, H, ..., dw, isa) -> the name of the tiles bconv runs for this geometry on this ISA */
static PyObject* py_bconv_tiles(PyObject* self, PyObject* args)
{
    conv_args p;
    int isa;
    memset(&p, 0, sizeof(p));
    if (!PyArg_ParseTuple(args, CONV_INTS "i", CONV_INT_ARGS(p), &isa)) return NULL;
    isa = pick_isa(isa);
    if (isa < 0) { PyErr_SetString(PyExc_ValueError, "bnn kernel: ISA not available on this CPU"); return NULL; }
    const char* name = isa == 2 ? "avx512-vpopcntq" : isa == 0 ? "scalar-popcnt"
                       : tab_applies(&p) ? "avx2-nibble-table" : "avx2-nibble-xor";
    return PyUnicode_FromString(name);
}

/* bconv_constants(w, consts, N, H, ..., dw, isa, nthreads[, words]) -> words: with consts = 0 only the size in
 * int64 words, else fills the layer constants of this geometry and weight for code path isa (-1: the best) into
 * consts, a buffer of `words` words */
static PyObject* py_bconv_constants(PyObject* self, PyObject* args)
{
    unsigned long long w, consts;
    conv_args p;
    int isa;
    memset(&p, 0, sizeof(p));
    long long have = -1;
    if (!PyArg_ParseTuple(args, "KK" CONV_INTS "ii|L", &w, &consts, CONV_INT_ARGS(p), &isa, &p.nthreads, &have))
        return NULL;
    isa = pick_isa(isa);
    if (isa < 0) { PyErr_SetString(PyExc_ValueError, "bnn kernel: ISA not available on this CPU"); return NULL; }
    p.w = (const uint64_t*)w;
    int nR, nC;
    const int64_t words = consts_layout(&p, isa, &nR, &nC, NULL, NULL, NULL);
    if (words < 0) return PyErr_NoMemory();
    if (consts && have != words) { /* the layout depends on BNN_NIBBLE_TABLES: sized and filled alike, or refused */
        PyErr_SetString(PyExc_ValueError, "bnn kernel: the constants buffer does not have bconv_constants() words");
        return NULL;
    }
    if (consts) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = consts_fill(&p, isa, (int64_t*)consts, p.nthreads < 1 ? 1 : p.nthreads);
        Py_END_ALLOW_THREADS
        if (rc) return PyErr_NoMemory();
    }
    return PyLong_FromLongLong((long long)words);
}

#include "ceiling.h"
#include "qconv.h"

/* qconv_constants(words, consts, Cout, Cin, T) -> bytes: with consts = 0 only the size */
static PyObject* py_qconv_constants(PyObject* self, PyObject* args)
{
    unsigned long long w, c;
    int Cout, Cin, T;
    if (!PyArg_ParseTuple(args, "KKiii", &w, &c, &Cout, &Cin, &T)) return NULL;
    if (c) qconv_consts_fill((const uint64_t*)w, Cout, Cin, T, (uint8_t*)c);
    return PyLong_FromLongLong((long long)qconv_consts_bytes(Cout, Cin, T));
}

/* qconv(x, step, qmin, qmax, consts, mul, add, out, N, H, W, Cin, Cout, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw,
 *       isa, nthreads): x float32 channels last [N, H, W, Cin], out float32 [N, OH, OW, Cout] */
static PyObject* py_qconv(PyObject* self, PyObject* args)
{
    unsigned long long x, c, mul, add, out;
    qconv_args p;
    int isa, rc;
    if (!PyArg_ParseTuple(args, "KfiiKKKKiiiiiiiiiiiiiiiii", &x, &p.step, &p.qmin, &p.qmax, &c, &mul, &add, &out,
                          &p.N, &p.H, &p.W, &p.Cin, &p.Cout, &p.OH, &p.OW, &p.KH, &p.KW, &p.sh, &p.sw, &p.ph, &p.pw,
                          &p.dh, &p.dw, &isa, &p.nthreads))
        return NULL;
    isa = pick_isa(isa);
    if (isa < 0) { PyErr_SetString(PyExc_ValueError, "bnn kernel: ISA not available on this CPU"); return NULL; }
    if (p.qmin < -128 || p.qmax > 127) { PyErr_SetString(PyExc_ValueError, "qconv: codes must fit in 8 bits"); return NULL; }
    if (p.nthreads < 1) p.nthreads = 1;
    p.x = (const float*)x;
    p.w = (const int8_t*)c;
    p.corr = (const int32_t*)((const uint8_t*)c + (int64_t)QCB8(p.Cout) * p.KH * p.KW * ((p.Cin + 3) / 4) * 32);
    p.mul = (const float*)mul;
    p.add = (const float*)add;
    p.out = (float*)out;
    Py_BEGIN_ALLOW_THREADS
    rc = qconv_run(&p, isa);
    Py_END_ALLOW_THREADS
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* popcount_ceiling(method, nwords, reps, nthreads) -> (seconds, checksum): every thread runs the method's loop
 * (ceiling.h) on its own two arrays of nwords words; seconds is the CPU time of the slowest thread (the time
 * it ran: other processes sharing the cores do not lower the figure). */
static PyObject* py_popcount_ceiling(PyObject* self, PyObject* args)
{
    int method, nwords, reps, nt;
    if (!PyArg_ParseTuple(args, "iiii", &method, &nwords, &reps, &nt)) return NULL;
#if HAVE_CEILING
    static const int needs[4] = {1, 1, 1, 2}; /* method -> ISA it needs */
    if (method < 0 || method > 3 || !isa_ok[needs[method]]) {
        PyErr_SetString(PyExc_ValueError, "popcount_ceiling: method not available on this CPU");
        return NULL;
    }
    if (nwords < 64 || nwords % 64 || reps < 1 || nt < 1) {
        PyErr_SetString(PyExc_ValueError, "popcount_ceiling: nwords must be a positive multiple of 64");
        return NULL;
    }
    double secs = 0.0;
    uint64_t check = 0;
    int fail = 0;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(nt) reduction(+ : check) reduction(max : secs) reduction(| : fail)
    {
        uint64_t* buf = (uint64_t*)aligned_alloc(64, sizeof(uint64_t) * 2 * (size_t)nwords);
        if (!buf) fail = 1;
        else {
            uint64_t s = 0x9e3779b97f4a7c15ull;
            for (int i = 0; i < 2 * nwords; ++i) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; buf[i] = s; }
            const uint64_t *a = buf, *b = buf + nwords;
#pragma omp barrier
            struct timespec t0, t1;
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
            if (method == 0) check += ceil_scalar(a, b, nwords, reps);
            else if (method == 1) check += ceil_lut(a, b, nwords, reps);
            else if (method == 2) check += ceil_hs(a, b, nwords, reps);
            else check += ceil_avx512(a, b, nwords, reps);
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
            secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
            free(buf);
        }
    }
    Py_END_ALLOW_THREADS
    if (fail) return PyErr_NoMemory();
    return Py_BuildValue("dK", secs, (unsigned long long)check);
#else
    PyErr_SetString(PyExc_ValueError, "popcount_ceiling: x86 only");
    return NULL;
#endif
}

static PyMethodDef methods[] = {
    {"popcount_ceiling", py_popcount_ceiling, METH_VARARGS,
     "(method, nwords, reps, nthreads) -> (seconds, checksum): xor+popcount throughput loop, in L1."},
    {"isas", py_isas, METH_NOARGS, "ISAs usable on this CPU, slowest first."},
    {"bconv", (PyCFunction)(void (*)(void))py_bconv, METH_FASTCALL,
     "Sign-pack a channels-last float32 input and run the xnor-popcount conv."},
    {"bconv_geometry", py_bconv_geometry, METH_VARARGS, "The packed integer arguments of bconv for a conv geometry."},
    {"qconv", py_qconv, METH_VARARGS, "int8-input, 1-bit-weight conv of a channels-last float32 input."},
    {"qconv_constants", py_qconv_constants, METH_VARARGS, "Size of, or fill, the int8 conv's layer constants."},
    {"bconv_tiles", py_bconv_tiles, METH_VARARGS, "Name of the tiles bconv runs for a conv geometry and ISA."},
    {"bconv_scratch", py_bconv_scratch, METH_VARARGS, "int64 words of scratch bconv needs for a conv geometry."},
    {"bconv_constants", py_bconv_constants, METH_VARARGS, "Size of, or fill, the layer constants of a conv geometry."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_kernel", "bnn packed-inference kernels", -1, methods};

PyMODINIT_FUNC PyInit__kernel(void)
{
#if HAVE_SIMD
    __builtin_cpu_init();
    isa_ok[1] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    isa_ok[2] = isa_ok[1] && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx512f") &&
                __builtin_cpu_supports("avx512dq") &&
                __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                __builtin_cpu_supports("avx512vpopcntdq");
    qconv_vnni_ok = isa_ok[2] && __builtin_cpu_supports("avx512vnni");
#endif
    PyObject* m = PyModule_Create(&moddef);
    if (m) PyModule_AddIntConstant(m, "NR", NR);
    return m;
}
