/*
 * Tessera's compiled plane-XOR kernel: runs a straight-line XOR program (see
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

static PyMethodDef methods[] = {
    {"run", xor_run, METH_VARARGS,
     "run(steps, outputs, ninputs, ntemps, planes_in, planes_out): apply an XOR program."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tessera.core._xor",
    "Compiled plane-XOR kernel (see tessera.core.bitslice).", -1, methods,
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
