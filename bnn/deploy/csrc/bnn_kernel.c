/* bnn.deploy._kernel: xnor-popcount kernels for packed binary layers.
 *
 * Plain C, no libtorch: the Python side passes raw pointers (tensor.data_ptr())
 * of contiguous CPU tensors.  One code path per ISA (AVX-512 VPOPCNTDQ, AVX2,
 * scalar) is compiled through `#pragma GCC target` and chosen at run time with
 * __builtin_cpu_supports.  One call = one OpenMP region: sign-packing of the
 * input into a zero-bordered bit image, then register-blocked xnor-popcount
 * tiles (6 pixels x 32 channels on AVX-512) with the per-channel scale/shift
 * folded into the tile's epilogue, statically scheduled over output rows.
 * Built with -ffp-contract=off so that `dot * mul + add` rounds exactly like
 * the pure-torch path (bnn/deploy/functional.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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
    int N, H, W, uh, uw, Hs, Ws, G, Cg, Wg, CoutG, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, nthreads;
    int* status;
} conv_args;

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
#pragma GCC target("avx2,popcnt,avx512f,avx512dq,avx512bw,avx512vl,avx512vpopcntdq")
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

/* bconv(x, thr, a, w, mul, add, out, N, H, W, uh, uw, Hs, Ws, G, Cg, Wg, CoutG, OH, OW, KH, KW, sh, sw, ph, pw,
 *       dh, dw, isa, nthreads): x float32 [N, H, W, G*Cg] channels last, thr float32 [G*Cg] or 0, a int64 scratch
 *       of N*(Hs+2ph)*(Ws+2pw)*G*Wg words, w packed weight [G, CB, KH*KW, Wg, NR], out float32 [N, OH, OW, G*CoutG] */
static PyObject* py_bconv(PyObject* self, PyObject* args)
{
    unsigned long long x, thr, a, w, mul, add, out;
    conv_args p;
    int isa, status = 0;
    if (!PyArg_ParseTuple(args, "KKKKKKKiiiiiiiiiiiiiiiiiiiiiii", &x, &thr, &a, &w, &mul, &add, &out, &p.N, &p.H, &p.W,
                          &p.uh, &p.uw, &p.Hs, &p.Ws, &p.G, &p.Cg, &p.Wg, &p.CoutG, &p.OH, &p.OW, &p.KH, &p.KW, &p.sh,
                          &p.sw, &p.ph, &p.pw, &p.dh, &p.dw, &isa, &p.nthreads))
        return NULL;
    isa = pick_isa(isa);
    if (isa < 0) { PyErr_SetString(PyExc_ValueError, "bnn kernel: ISA not available on this CPU"); return NULL; }
    if (p.nthreads < 1) p.nthreads = 1;
    p.x = (const float*)x;
    p.thr = (const float*)thr;
    p.a = (uint64_t*)a;
    p.w = (const uint64_t*)w;
    p.mul = (const float*)mul;
    p.add = (const float*)add;
    p.out = (float*)out;
    p.status = &status;
    Py_BEGIN_ALLOW_THREADS
#if HAVE_SIMD
    if (isa == 2) bconv_avx512(&p);
    else if (isa == 1) bconv_avx2(&p);
    else
#endif
        bconv_scalar(&p);
    Py_END_ALLOW_THREADS
    if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"isas", py_isas, METH_NOARGS, "ISAs usable on this CPU, slowest first."},
    {"bconv", py_bconv, METH_VARARGS, "Sign-pack a channels-last float32 input and run the xnor-popcount conv."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_kernel", "bnn packed-inference kernels", -1, methods};

PyMODINIT_FUNC PyInit__kernel(void)
{
#if HAVE_SIMD
    __builtin_cpu_init();
    isa_ok[1] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    isa_ok[2] = isa_ok[1] && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                __builtin_cpu_supports("avx512vpopcntdq");
#endif
    PyObject* m = PyModule_Create(&moddef);
    if (m) PyModule_AddIntConstant(m, "NR", NR);
    return m;
}
