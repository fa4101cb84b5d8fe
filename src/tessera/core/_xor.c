/*
 * Tessera's compiled kernels.  The GF(2^61 - 1) kernels are described further down
 * (tessera/core/m61.py uses them).  The plane-XOR kernel runs a straight-line XOR program (see
 * tessera/core/bitslice.py) over whole bit-planes, a cache-sized chunk of every plane
 * at a time, with the GIL released.
 *
 * numpy runs each XOR of a program over a whole plane (128 KiB for a 1 MiB block), so
 * every step streams its operands through the cache again and costs one Python call.
 * Here all steps of the program run on CHUNK words of every plane before moving on:
 * temporaries stay in L1, inputs are read once and outputs written once.
 *
 * run(steps, outputs, ninputs, ntemps, planes_in, planes_out)
 *   steps      bytes: int32 triples (dst, a, b), registers as in XorProgram
 *   outputs    bytes: int32 per output plane, the register holding it or -1 (zero)
 *   ninputs    number of input planes (registers 0 .. ninputs-1)
 *   ntemps     number of scratch registers (ninputs .. ninputs+ntemps-1)
 *   planes_in  sequence of ninputs contiguous buffers of equal length (multiple of 8)
 *   planes_out sequence of len(outputs) writable buffers of that length, not aliasing
 *              the inputs
 *
 * A register that ends up holding an output lives in that output's buffer for the
 * whole program (XorProgram's allocation never reuses it afterwards); the other
 * temporaries live in a per-call scratch area of CHUNK words each.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 256 /* words (2 KiB) of every plane per pass */

typedef uint64_t vec4 __attribute__((vector_size(32)));

static inline void
xor_words(uint64_t *restrict_dst, const uint64_t *a, const uint64_t *b, Py_ssize_t n)
{
    /* dst may equal a or b: every vector is loaded before it is stored. */
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        vec4 x0, y0, x1, y1;
        memcpy(&x0, a + i, 32);
        memcpy(&y0, b + i, 32);
        memcpy(&x1, a + i + 4, 32);
        memcpy(&y1, b + i + 4, 32);
        x0 ^= y0;
        x1 ^= y1;
        memcpy(restrict_dst + i, &x0, 32);
        memcpy(restrict_dst + i + 4, &x1, 32);
    }
    for (; i < n; i++)
        restrict_dst[i] = a[i] ^ b[i];
}

typedef struct {
    const int32_t *steps;
    Py_ssize_t nsteps;
    const int32_t *outputs;
    Py_ssize_t noutputs;
    Py_ssize_t nregs;
    uint64_t **base;  /* per register: buffer start, or scratch slot */
    char *shifted;    /* per register: 1 if base moves with the chunk offset */
    uint64_t **ptr;   /* per register: pointer for the current chunk */
    uint64_t **outs;  /* per output */
    int32_t *owner;   /* per output: 1 if its register lives in its buffer */
    Py_ssize_t words;
} program_t;

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void
run_chunks(program_t *p)
{
    for (Py_ssize_t off = 0; off < p->words; off += CHUNK) {
        Py_ssize_t cw = p->words - off < CHUNK ? p->words - off : CHUNK;
        for (Py_ssize_t r = 0; r < p->nregs; r++)
            p->ptr[r] = p->shifted[r] ? p->base[r] + off : p->base[r];
        for (Py_ssize_t s = 0; s < p->nsteps; s++) {
            const int32_t *st = p->steps + 3 * s;
            xor_words(p->ptr[st[0]], p->ptr[st[1]], p->ptr[st[2]], cw);
        }
        for (Py_ssize_t o = 0; o < p->noutputs; o++) {
            int32_t sig = p->outputs[o];
            if (sig < 0)
                memset(p->outs[o] + off, 0, (size_t)cw * 8);
            else if (!p->owner[o])
                memcpy(p->outs[o] + off, p->ptr[sig], (size_t)cw * 8);
        }
    }
}

static int
get_planes(PyObject *seq, Py_ssize_t count, Py_buffer *views, int writable,
           Py_ssize_t *length)
{
    PyObject *fast = PySequence_Fast(seq, "planes must be a sequence");
    if (fast == NULL)
        return -1;
    if (PySequence_Fast_GET_SIZE(fast) != count) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "plane counts do not match the program");
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (PyObject_GetBuffer(items[i], &views[i], flags) < 0) {
            for (Py_ssize_t j = 0; j < i; j++)
                PyBuffer_Release(&views[j]);
            Py_DECREF(fast);
            return -1;
        }
        if (*length < 0)
            *length = views[i].len;
        if (views[i].len != *length || views[i].len % 8) {
            for (Py_ssize_t j = 0; j <= i; j++)
                PyBuffer_Release(&views[j]);
            Py_DECREF(fast);
            PyErr_SetString(PyExc_ValueError,
                            "planes must all have one length, a multiple of 8 bytes");
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

static PyObject *
xor_run(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer steps_buf, outputs_buf;
    Py_ssize_t ninputs, ntemps;
    PyObject *in_seq, *out_seq;
    if (!PyArg_ParseTuple(args, "y*y*nnOO", &steps_buf, &outputs_buf, &ninputs, &ntemps,
                          &in_seq, &out_seq))
        return NULL;

    PyObject *result = NULL;
    Py_buffer *views = NULL;
    Py_ssize_t nin_views = 0, nout_views = 0;
    void *mem = NULL;
    uint64_t *scratch = NULL;
    Py_ssize_t nsteps = steps_buf.len / 12;
    Py_ssize_t noutputs = outputs_buf.len / 4;
    Py_ssize_t nregs = ninputs + ntemps;

    if (steps_buf.len % 12 || outputs_buf.len % 4 || ninputs < 1 || ntemps < 0) {
        PyErr_SetString(PyExc_ValueError, "malformed program");
        goto done;
    }
    const int32_t *steps = (const int32_t *)steps_buf.buf;
    const int32_t *outputs = (const int32_t *)outputs_buf.buf;
    for (Py_ssize_t s = 0; s < 3 * nsteps; s++) {
        if (steps[s] < 0 || steps[s] >= nregs || (s % 3 == 0 && steps[s] < ninputs)) {
            PyErr_SetString(PyExc_ValueError, "program register out of range");
            goto done;
        }
    }
    for (Py_ssize_t o = 0; o < noutputs; o++) {
        if (outputs[o] < -1 || outputs[o] >= nregs) {
            PyErr_SetString(PyExc_ValueError, "program output out of range");
            goto done;
        }
    }

    views = PyMem_Calloc((size_t)(ninputs + noutputs), sizeof(Py_buffer));
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t length = -1;
    if (get_planes(in_seq, ninputs, views, 0, &length) < 0)
        goto done;
    nin_views = ninputs;
    if (get_planes(out_seq, noutputs, views + ninputs, 1, &length) < 0)
        goto done;
    nout_views = noutputs;

    size_t regs = (size_t)nregs;
    size_t outs = (size_t)(noutputs ? noutputs : 1);
    mem = PyMem_Calloc(1, regs * (2 * sizeof(uint64_t *) + 1) +
                               outs * (sizeof(uint64_t *) + sizeof(int32_t)) + 64);
    if (mem == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    program_t p;
    p.steps = steps;
    p.nsteps = nsteps;
    p.outputs = outputs;
    p.noutputs = noutputs;
    p.nregs = nregs;
    p.words = length < 0 ? 0 : length / 8;
    p.base = (uint64_t **)mem;
    p.ptr = p.base + regs;
    p.outs = p.ptr + regs;
    p.owner = (int32_t *)(p.outs + outs);
    p.shifted = (char *)(p.owner + outs);

    if (ntemps) {
        scratch = aligned_alloc(64, (size_t)ntemps * CHUNK * 8);
        if (scratch == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    for (Py_ssize_t r = 0; r < ninputs; r++) {
        p.base[r] = (uint64_t *)views[r].buf;
        p.shifted[r] = 1;
    }
    for (Py_ssize_t t = 0; t < ntemps; t++) {
        p.base[ninputs + t] = scratch + t * CHUNK;
        p.shifted[ninputs + t] = 0;
    }
    for (Py_ssize_t o = 0; o < noutputs; o++) {
        p.outs[o] = (uint64_t *)views[ninputs + o].buf;
        int32_t sig = outputs[o];
        p.owner[o] = 0;
        if (sig >= ninputs && !p.shifted[sig]) {
            /* The first output held in a temporary register owns it. */
            p.base[sig] = p.outs[o];
            p.shifted[sig] = 1;
            p.owner[o] = 1;
        }
    }

    Py_BEGIN_ALLOW_THREADS
    run_chunks(&p);
    Py_END_ALLOW_THREADS

    result = Py_NewRef(Py_None);

done:
    for (Py_ssize_t i = 0; i < nin_views; i++)
        PyBuffer_Release(&views[i]);
    for (Py_ssize_t i = 0; i < nout_views; i++)
        PyBuffer_Release(&views[ninputs + i]);
    PyMem_Free(views);
    PyMem_Free(mem);
    free(scratch);
    PyBuffer_Release(&steps_buf);
    PyBuffer_Release(&outputs_buf);
    return result;
}

/*
 * GF(2^61 - 1) kernels (see tessera/core/m61.py): Shamir splits, element-wise products
 * and matrix products of uint64 field elements with 128-bit accumulation, GIL released.
 * Inputs must hold values below p (never checked: a larger value gives a wrong result,
 * never a crash); every buffer is C-contiguous uint64.
 */
#define M61 ((uint64_t)0x1FFFFFFFFFFFFFFFULL)
#define M61_FOLD 32 /* sums of 32 products below 2^122 stay below 2^127 */

typedef unsigned __int128 u128;

static inline uint64_t
m61_reduce(u128 x)
{
    /* x = a 2^122 + b 2^61 + c, and 2^61 = 1 (mod p) */
    uint64_t c = (uint64_t)x & M61;
    u128 y = x >> 61;
    uint64_t b = (uint64_t)y & M61;
    uint64_t a = (uint64_t)(y >> 61);
    uint64_t r = a + b + c;
    r = (r & M61) + (r >> 61);
    return r >= M61 ? r - M61 : r;
}

static inline uint64_t
m61_signed(int64_t v)
{
    /* v mod p in [0, p) for any int64 v */
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    m = (m & M61) + (m >> 61);
    m = m >= M61 ? m - M61 : m;
    return (v < 0 && m) ? M61 - m : m;
}

static int
u64_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    if (view->len % 8) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s must hold whole uint64 values", what);
        return -1;
    }
    return 0;
}

static PyObject *
m61_share(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *secret_obj, *coeff_obj, *out_obj;
    Py_ssize_t t;
    if (!PyArg_ParseTuple(args, "OOnO", &secret_obj, &coeff_obj, &t, &out_obj))
        return NULL;
    Py_buffer sv, cv, ov;
    if (u64_buffer(secret_obj, &sv, 0, "secret") < 0)
        return NULL;
    if (u64_buffer(coeff_obj, &cv, 0, "coeffs") < 0) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    if (u64_buffer(out_obj, &ov, 1, "out") < 0) {
        PyBuffer_Release(&sv);
        PyBuffer_Release(&cv);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t size = sv.len / 8;
    if (t < 0 || size == 0 || cv.len / 8 != t * size || ov.len % (8 * size)) {
        PyErr_SetString(PyExc_ValueError, "m61_share: buffer sizes do not fit");
        goto done;
    }
    Py_ssize_t parties = ov.len / (8 * size);
    const int64_t *s = sv.buf;
    const uint64_t *c = cv.buf;
    uint64_t *out = ov.buf;
    uint64_t bad = 0; /* a coefficient that masks to p itself: not uniform, redraw */
    Py_BEGIN_ALLOW_THREADS
    if (t == 1) {
        /* f(x + 1) = f(x) + c: one modular addition per share */
        for (Py_ssize_t k = 0; k < size; k++) {
            uint64_t v = m61_signed(s[k]), ck = c[k] & M61;
            bad |= ck == M61;
            for (Py_ssize_t i = 0; i < parties; i++) {
                v += ck;
                v = v >= M61 ? v - M61 : v;
                out[i * size + k] = v;
            }
        }
    } else {
        for (Py_ssize_t j = 0; j < t * size; j++)
            bad |= (c[j] & M61) == M61;
        for (Py_ssize_t i = 0; i < parties; i++) {
            uint64_t x = (uint64_t)(i + 1);
            uint64_t *row = out + i * size;
            for (Py_ssize_t k = 0; k < size; k++) {
                uint64_t acc = 0;
                for (Py_ssize_t j = t - 1; j >= 0; j--)
                    acc = m61_reduce((u128)(acc + (c[j * size + k] & M61)) * x);
                row[k] = m61_reduce((u128)acc + m61_signed(s[k]));
            }
        }
    }
    Py_END_ALLOW_THREADS
    result = PyBool_FromLong(!bad);
done:
    PyBuffer_Release(&sv);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&ov);
    return result;
}

static PyObject *
m61_mul(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *a_obj, *b_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOO", &a_obj, &b_obj, &out_obj))
        return NULL;
    Py_buffer av, bv, ov;
    if (u64_buffer(a_obj, &av, 0, "a") < 0)
        return NULL;
    if (u64_buffer(b_obj, &bv, 0, "b") < 0) {
        PyBuffer_Release(&av);
        return NULL;
    }
    if (u64_buffer(out_obj, &ov, 1, "out") < 0) {
        PyBuffer_Release(&av);
        PyBuffer_Release(&bv);
        return NULL;
    }
    PyObject *result = NULL;
    if (av.len != bv.len || av.len != ov.len) {
        PyErr_SetString(PyExc_ValueError, "m61_mul: buffer sizes differ");
        goto done;
    }
    Py_ssize_t n = av.len / 8;
    const uint64_t *a = av.buf, *b = bv.buf;
    uint64_t *out = ov.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < n; k++)
        out[k] = m61_reduce((u128)a[k] * b[k]);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&av);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&ov);
    return result;
}

static void
m61_matmul_run(const uint64_t *a, const uint64_t *b, uint64_t *out, u128 *acc,
               Py_ssize_t g, Py_ssize_t inner, Py_ssize_t k)
{
    for (Py_ssize_t n = 0; n < inner; n++) {
        const uint64_t *brow = b + n * k;
        for (Py_ssize_t r = 0; r < g; r++) {
            uint64_t x = a[r * inner + n];
            if (!x)
                continue; /* selections and one-hots are mostly zero */
            u128 *arow = acc + r * k;
            for (Py_ssize_t j = 0; j < k; j++)
                arow[j] += (u128)x * brow[j];
        }
        if ((n + 1) % M61_FOLD == 0)
            for (Py_ssize_t i = 0; i < g * k; i++)
                acc[i] = m61_reduce(acc[i]);
    }
    for (Py_ssize_t i = 0; i < g * k; i++)
        out[i] = m61_reduce(acc[i]);
}

static PyObject *
m61_matmul(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *a_obj, *b_obj, *out_obj;
    Py_ssize_t g, inner, k;
    if (!PyArg_ParseTuple(args, "OOOnnn", &a_obj, &b_obj, &out_obj, &g, &inner, &k))
        return NULL;
    Py_buffer av, bv, ov;
    if (u64_buffer(a_obj, &av, 0, "a") < 0)
        return NULL;
    if (u64_buffer(b_obj, &bv, 0, "b") < 0) {
        PyBuffer_Release(&av);
        return NULL;
    }
    if (u64_buffer(out_obj, &ov, 1, "out") < 0) {
        PyBuffer_Release(&av);
        PyBuffer_Release(&bv);
        return NULL;
    }
    PyObject *result = NULL;
    u128 *acc = NULL;
    if (g < 0 || inner < 0 || k < 0 || av.len / 8 != g * inner || bv.len / 8 != inner * k ||
        ov.len / 8 != g * k) {
        PyErr_SetString(PyExc_ValueError, "m61_matmul: buffer sizes do not fit the shapes");
        goto done;
    }
    acc = PyMem_Calloc((size_t)(g * k > 0 ? g * k : 1), sizeof(u128));
    if (acc == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const uint64_t *a = av.buf, *b = bv.buf;
    uint64_t *out = ov.buf;
    Py_BEGIN_ALLOW_THREADS
    m61_matmul_run(a, b, out, acc, g, inner, k);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(acc);
    PyBuffer_Release(&av);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&ov);
    return result;
}

static PyObject *
m61_matmul_nt(PyObject *self, PyObject *args)
{
    /* out (g x k) = a (g x inner) @ bt (k x inner)^T mod p: dot products of rows */
    (void)self;
    PyObject *a_obj, *b_obj, *out_obj;
    Py_ssize_t g, inner, k;
    if (!PyArg_ParseTuple(args, "OOOnnn", &a_obj, &b_obj, &out_obj, &g, &inner, &k))
        return NULL;
    Py_buffer av, bv, ov;
    if (u64_buffer(a_obj, &av, 0, "a") < 0)
        return NULL;
    if (u64_buffer(b_obj, &bv, 0, "bt") < 0) {
        PyBuffer_Release(&av);
        return NULL;
    }
    if (u64_buffer(out_obj, &ov, 1, "out") < 0) {
        PyBuffer_Release(&av);
        PyBuffer_Release(&bv);
        return NULL;
    }
    PyObject *result = NULL;
    if (g < 0 || inner < 0 || k < 0 || av.len / 8 != g * inner || bv.len / 8 != k * inner ||
        ov.len / 8 != g * k) {
        PyErr_SetString(PyExc_ValueError, "m61_matmul_nt: buffer sizes do not fit the shapes");
        goto done;
    }
    const uint64_t *a = av.buf, *b = bv.buf;
    uint64_t *out = ov.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < g; r++) {
        const uint64_t *x = a + r * inner;
        for (Py_ssize_t c = 0; c < k; c++) {
            const uint64_t *y = b + c * inner;
            u128 acc0 = 0, acc1 = 0;
            uint64_t total = 0;
            Py_ssize_t n = 0;
            while (n < inner) {
                Py_ssize_t stop = inner - n < 2 * M61_FOLD ? inner : n + 2 * M61_FOLD;
                for (; n + 1 < stop; n += 2) {
                    acc0 += (u128)x[n] * y[n];
                    acc1 += (u128)x[n + 1] * y[n + 1];
                }
                if (n < stop) {
                    acc0 += (u128)x[n] * y[n];
                    n++;
                }
                total = m61_reduce((u128)total + m61_reduce(acc0) + m61_reduce(acc1));
                acc0 = acc1 = 0;
            }
            out[r * k + c] = total;
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&av);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&ov);
    return result;
}

static PyObject *
m61_axpy(PyObject *self, PyObject *args)
{
    /* acc = acc + w * x mod p, element-wise, in place (w below p) */
    (void)self;
    PyObject *acc_obj, *x_obj;
    unsigned long long w;
    if (!PyArg_ParseTuple(args, "OOK", &acc_obj, &x_obj, &w))
        return NULL;
    Py_buffer av, xv;
    if (u64_buffer(acc_obj, &av, 1, "acc") < 0)
        return NULL;
    if (u64_buffer(x_obj, &xv, 0, "x") < 0) {
        PyBuffer_Release(&av);
        return NULL;
    }
    PyObject *result = NULL;
    if (av.len != xv.len || w >= M61) {
        PyErr_SetString(PyExc_ValueError, "m61_axpy: sizes differ or w is not below p");
        goto done;
    }
    Py_ssize_t n = av.len / 8;
    uint64_t *acc = av.buf;
    const uint64_t *x = xv.buf;
    uint64_t ww = (uint64_t)w;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        acc[i] = m61_reduce((u128)x[i] * ww + acc[i]);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&av);
    PyBuffer_Release(&xv);
    return result;
}

static PyMethodDef methods[] = {
    {"run", xor_run, METH_VARARGS,
     "run(steps, outputs, ninputs, ntemps, planes_in, planes_out): apply an XOR program."},
    {"m61_share", m61_share, METH_VARARGS,
     "m61_share(secret, coeffs, t, out): Shamir shares in GF(2^61 - 1) of int64 secrets "
     "(any sign), row i = f(i+1), coefficients masked to 61 bits; False if one masked to p "
     "(out is then garbage: redraw)."},
    {"m61_mul", m61_mul, METH_VARARGS,
     "m61_mul(a, b, out): out = a * b mod 2^61 - 1, element-wise."},
    {"m61_matmul", m61_matmul, METH_VARARGS,
     "m61_matmul(a, b, out, g, inner, k): out (g x k) = a (g x inner) @ b mod 2^61 - 1."},
    {"m61_matmul_nt", m61_matmul_nt, METH_VARARGS,
     "m61_matmul_nt(a, bt, out, g, inner, k): out (g x k) = a @ bt.T mod 2^61 - 1."},
    {"m61_axpy", m61_axpy, METH_VARARGS,
     "m61_axpy(acc, x, w): acc = acc + w * x mod 2^61 - 1, in place."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tessera.core._xor",
    "Compiled kernels: plane XOR (tessera.core.bitslice), GF(2^61 - 1) (tessera.core.m61).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__xor(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "CHUNK_WORDS", CHUNK) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
