/* bnn.deploy._kernel: xnor-popcount kernels for packed binary layers.
 *
 * Plain C, no libtorch: the Python side passes raw pointers (tensor.data_ptr())
 * of contiguous CPU tensors.  One code path per ISA (AVX-512 VPOPCNTDQ, AVX2,
 * scalar) is compiled through `#pragma GCC target` and chosen at run time with
 * __builtin_cpu_supports.  OpenMP parallelises over tiles of output pixels.
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

#define NR 32 /* output channels per weight panel (format version 1) */

typedef struct {
    const uint64_t* a;
    const uint64_t* w;
    const float* mul;
    const float* add;
    float* out;
    int N, H, W, G, Cg, Wg, CoutG, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, nthreads;
    int* status;
} conv_args;

/* scalar */
#define SUFFIX _scalar
#define BNN_ISA 0
#define MR 1
#include "bconv_tmpl.h"
#undef SUFFIX
#undef BNN_ISA
#undef MR

#if BNN_X86 && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")
#define SUFFIX _avx2
#define BNN_ISA 1
#define MR 1
#include "bconv_tmpl.h"
#undef SUFFIX
#undef BNN_ISA
#undef MR
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,popcnt,avx512f,avx512dq,avx512bw,avx512vl,avx512vpopcntdq")
#define SUFFIX _avx512
#define BNN_ISA 2
#define MR 4
#include "bconv_tmpl.h"
#undef SUFFIX
#undef BNN_ISA
#undef MR
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

/* pack_sign(x, thr, out, npix, G, Cg, Wg, isa, nthreads) */
static PyObject* py_pack_sign(PyObject* self, PyObject* args)
{
    unsigned long long x, thr, out;
    long long npix;
    int G, Cg, Wg, isa, nt;
    if (!PyArg_ParseTuple(args, "KKKLiiiii", &x, &thr, &out, &npix, &G, &Cg, &Wg, &isa, &nt)) return NULL;
    isa = pick_isa(isa);
    if (isa < 0) { PyErr_SetString(PyExc_ValueError, "bnn kernel: ISA not available on this CPU"); return NULL; }
    if (nt < 1) nt = 1;
    Py_BEGIN_ALLOW_THREADS
#if HAVE_SIMD
    if (isa == 2) packsign_avx512((const float*)x, (const float*)thr, (uint64_t*)out, npix, G, Cg, Wg, nt);
    else if (isa == 1) packsign_avx2((const float*)x, (const float*)thr, (uint64_t*)out, npix, G, Cg, Wg, nt);
    else
#endif
        packsign_scalar((const float*)x, (const float*)thr, (uint64_t*)out, npix, G, Cg, Wg, nt);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* bconv(a, w, mul, add, out, N, H, W, G, Cg, Wg, CoutG, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, isa, nthreads) */
static PyObject* py_bconv(PyObject* self, PyObject* args)
{
    unsigned long long a, w, mul, add, out;
    conv_args p;
    int isa, status = 0;
    if (!PyArg_ParseTuple(args, "KKKKKiiiiiiiiiiiiiiiiiii", &a, &w, &mul, &add, &out, &p.N, &p.H, &p.W, &p.G, &p.Cg,
                          &p.Wg, &p.CoutG, &p.OH, &p.OW, &p.KH, &p.KW, &p.sh, &p.sw, &p.ph, &p.pw, &p.dh, &p.dw, &isa,
                          &p.nthreads))
        return NULL;
    isa = pick_isa(isa);
    if (isa < 0) { PyErr_SetString(PyExc_ValueError, "bnn kernel: ISA not available on this CPU"); return NULL; }
    if (p.nthreads < 1) p.nthreads = 1;
    p.a = (const uint64_t*)a;
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
    {"pack_sign", py_pack_sign, METH_VARARGS, "Pack signs of a channels-last float32 tensor into uint64 words."},
    {"bconv", py_bconv, METH_VARARGS, "xnor-popcount binary convolution on packed words."},
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
