/*
 * service._hotpath: the per-frame audio kernels of the mu-law call path, compiled.
 *
 * Why: numpy's per-call overhead dominates on a 20 ms frame (160 samples); these two types do the
 * arithmetic of the numpy reference in service/audio/resample.py in one C call per frame, which the
 * benchmark (load_tests/bench_audio.py; docs/audio.md, "Why the kernels are compiled") shows pays:
 *
 *   CallerToModel.process(mulaw) -> bytes       mu-law 8 kHz -> PCM16 LE 24 kHz
 *   ModelToCaller.process(pcm16_24k) -> bytes   PCM16 LE 24 kHz -> mu-law 8 kHz
 *   Resampler(up, down, coeffs).process(int16)  any of the four rate changes on int16 samples, for
 *                                               the A-law and L16 paths (codecs.py)
 *
 * Only trusted, fixed-size arithmetic lives here: no parsing, no base64 (JSON is orjson's job and
 * base64 is binascii's, in Python).
 *
 * Bit-exact with the numpy reference (the tests compare them on random streams and chunkings): the
 * filter coefficients, the mu-law tables and the rounding come from Python (``install``), the
 * coefficients lie on a 2**-20 grid and the inputs are integers, so every product and partial sum is
 * exact in double precision (docs/audio.md, "Exact arithmetic") and the summation order does not
 * matter. Rounding is clip to [-32768, 32767], then round half to even, as numpy's rint.
 *
 * Guarantees: ordered; nothing held back by the up-sampler; the down-sampler carries an incomplete
 * 3-sample group (at most 2 samples) and an odd trailing byte to the next call; chunked output equals
 * one-shot output. Not thread-safe (one object per call direction, used from one thread, under the
 * GIL). Memory per object: fixed history (28 or 88 doubles) plus scratch buffers that grow to the
 * largest chunk seen (~40 bytes per input sample).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define TAPS 87
#define FACTOR 3
#define UP_BRANCH 29 /* taps per polyphase branch of the interpolator */
#define UP_HIST (UP_BRANCH - 1)
#define DOWN_HIST TAPS /* 3 * 29: keeps groups aligned on phase arrays; the oldest 3 are unused */

static double up_coeff[FACTOR][UP_BRANCH]; /* up_coeff[k][lag] = c[3 * lag + k], c = quantised 3h */
static double down_coeff[TAPS];            /* quantised h */
static double ulaw_decode[256];
static uint8_t ulaw_encode[65536]; /* indexed by the int16 bit pattern */
static int installed = 0;

/* The two filter loops get an AVX2 clone picked at load time on x86-64 glibc (gcc/clang ifunc); the
 * results are identical, since every sum is exact (see above). */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && defined(__GLIBC__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* ---------------------------------------------------------------------------------------------- */

static int
grow(double **buffer, Py_ssize_t *capacity, Py_ssize_t needed)
{
    if (needed <= *capacity) {
        return 0;
    }
    Py_ssize_t size = needed < 2 * *capacity ? 2 * *capacity : needed;
    double *fresh = PyMem_Realloc(*buffer, (size_t)size * sizeof(double));
    if (fresh == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buffer = fresh;
    *capacity = size;
    return 0;
}

/* Clip to int16, then round half to even (numpy: minimum, maximum, rint). Adding and subtracting
 * 1.5 * 2**52 rounds any |v| < 2**51 to an integer in the current rounding mode, which is
 * round-half-even unless someone changed it (numpy's rint uses the same mode). Needs strict IEEE
 * arithmetic: built without -ffast-math (setup.py). */
static inline int16_t
to_int16(double v)
{
    const double magic = 6755399441055744.0;
    if (v > 32767.0) {
        v = 32767.0;
    }
    else if (v < -32768.0) {
        v = -32768.0;
    }
    return (int16_t)((v + magic) - magic); /* not folded: IEEE semantics forbid it without fast-math */
}

/* ---------------------------------------------------------------------------------------------- */
/* CallerToModel: mu-law 8 kHz -> PCM16 24 kHz, y[3t + k] = sum_lag c[3 lag + k] x[t - lag]       */

typedef struct {
    PyObject_HEAD
    double *work; /* [UP_HIST history samples | new samples] */
    Py_ssize_t work_cap;
    double *acc; /* FACTOR * n accumulators, phase-major */
    Py_ssize_t acc_cap;
} UpObject;

static int
up_init(UpObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":CallerToModel", kwlist)) {
        return -1;
    }
    if (!installed) {
        PyErr_SetString(PyExc_RuntimeError, "service._hotpath.install() has not been called");
        return -1;
    }
    if (grow(&self->work, &self->work_cap, UP_HIST + 160) < 0 || grow(&self->acc, &self->acc_cap, FACTOR * 160) < 0) {
        return -1;
    }
    memset(self->work, 0, UP_HIST * sizeof(double));
    return 0;
}

static void
up_dealloc(UpObject *self)
{
    PyMem_Free(self->work);
    PyMem_Free(self->acc);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* acc[t] = sum_lag c[lag] * w[UP_HIST + t - lag]. With GCC/Clang vector types, blocks of 16 outputs
 * keep their accumulators in registers across all 29 taps; the tail is done one output at a time. */
#if defined(__GNUC__)
typedef double v4d __attribute__((vector_size(32)));
#endif

VECTOR_CLONES static void
up_branch(double *restrict acc, const double *restrict w, const double *restrict c, Py_ssize_t n)
{
    Py_ssize_t t0 = 0;
#if defined(__GNUC__)
    for (; t0 + 16 <= n; t0 += 16) { /* four independent add chains hide the add latency */
        v4d a0 = {0.0, 0.0, 0.0, 0.0}, a1 = a0, a2 = a0, a3 = a0;
        const double *x = w + UP_HIST + t0;
        for (int lag = 0; lag < UP_BRANCH; lag++) {
            const v4d ck = {c[lag], c[lag], c[lag], c[lag]};
            v4d x0, x1, x2, x3;
            memcpy(&x0, x - lag, sizeof x0); /* unaligned loads */
            memcpy(&x1, x - lag + 4, sizeof x1);
            memcpy(&x2, x - lag + 8, sizeof x2);
            memcpy(&x3, x - lag + 12, sizeof x3);
            a0 += ck * x0;
            a1 += ck * x1;
            a2 += ck * x2;
            a3 += ck * x3;
        }
        memcpy(acc + t0, &a0, sizeof a0);
        memcpy(acc + t0 + 4, &a1, sizeof a1);
        memcpy(acc + t0 + 8, &a2, sizeof a2);
        memcpy(acc + t0 + 12, &a3, sizeof a3);
    }
#endif
    for (; t0 < n; t0++) {
        double sum = 0.0;
        for (int lag = 0; lag < UP_BRANCH; lag++) {
            sum += c[lag] * w[UP_HIST + t0 - lag];
        }
        acc[t0] = sum;
    }
}

/* Filter n new mu-law samples; leaves 3n int16 samples in order in `out` and advances the history. */
static int
up_run(UpObject *self, const uint8_t *mulaw, Py_ssize_t n, int16_t *out)
{
    if (grow(&self->work, &self->work_cap, UP_HIST + n) < 0 || grow(&self->acc, &self->acc_cap, FACTOR * n) < 0) {
        return -1;
    }
    double *w = self->work;
    for (Py_ssize_t t = 0; t < n; t++) {
        w[UP_HIST + t] = ulaw_decode[mulaw[t]];
    }
    for (int k = 0; k < FACTOR; k++) {
        up_branch(self->acc + k * n, w, up_coeff[k], n);
    }
    for (Py_ssize_t t = 0; t < n; t++) {
        out[FACTOR * t] = to_int16(self->acc[t]);
        out[FACTOR * t + 1] = to_int16(self->acc[n + t]);
        out[FACTOR * t + 2] = to_int16(self->acc[2 * n + t]);
    }
    memmove(w, w + n, UP_HIST * sizeof(double));
    return 0;
}

static void
store_le(int16_t *samples, Py_ssize_t count)
{
#if PY_BIG_ENDIAN
    for (Py_ssize_t i = 0; i < count; i++) {
        uint16_t v = (uint16_t)samples[i];
        samples[i] = (int16_t)((v >> 8) | (v << 8));
    }
#else
    (void)samples;
    (void)count;
#endif
}

static PyObject *
up_process(UpObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Py_ssize_t n = view.len;
    PyObject *result = PyBytes_FromStringAndSize(NULL, 2 * FACTOR * n);
    if (result != NULL && n > 0) {
        int16_t *out = (int16_t *)PyBytes_AS_STRING(result);
        if (up_run(self, (const uint8_t *)view.buf, n, out) < 0) {
            Py_CLEAR(result);
        }
        else {
            store_le(out, FACTOR * n);
        }
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
up_reset(UpObject *self, PyObject *Py_UNUSED(ignored))
{
    memset(self->work, 0, UP_HIST * sizeof(double));
    Py_RETURN_NONE;
}

static PyObject *
up_held_back(UpObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(0);
}

static PyMethodDef up_methods[] = {
    {"process", (PyCFunction)up_process, METH_O,
     "process(mulaw) -> bytes: PCM16 little-endian 24 kHz, 6x the input length."},
    {"reset", (PyCFunction)up_reset, METH_NOARGS, "Forget the history (back to silence)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef up_getset[] = {
    {"held_back", (getter)up_held_back, NULL, "Input samples not yet in any output (always 0).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject UpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "service._hotpath.CallerToModel",
    .tp_doc = "Inbound hot path: mu-law 8 kHz -> PCM16 LE 24 kHz (compiled; see resample.NumpyCallerToModel).",
    .tp_basicsize = sizeof(UpObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, /* resample.py adds process_b64 in Python */
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)up_init,
    .tp_dealloc = (destructor)up_dealloc,
    .tp_methods = up_methods,
    .tp_getset = up_getset,
};

/* ---------------------------------------------------------------------------------------------- */
/* ModelToCaller: PCM16 24 kHz -> mu-law 8 kHz, y[n] = sum_i h[i] x[3n + 2 - i]                    */

typedef struct {
    PyObject_HEAD
    double *work; /* [DOWN_HIST history | pending (0..2) | new samples] */
    Py_ssize_t work_cap;
    double *phase; /* the work buffer de-interleaved into 3 phases, then the accumulators */
    Py_ssize_t phase_cap;
    int pending;
    int has_odd;
    uint8_t odd;
} DownObject;

static int
down_init(DownObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, ":ModelToCaller", kwlist)) {
        return -1;
    }
    if (!installed) {
        PyErr_SetString(PyExc_RuntimeError, "service._hotpath.install() has not been called");
        return -1;
    }
    if (grow(&self->work, &self->work_cap, DOWN_HIST + 2 + 2400) < 0) {
        return -1;
    }
    memset(self->work, 0, (DOWN_HIST + 2) * sizeof(double));
    self->pending = 0;
    self->has_odd = 0;
    return 0;
}

static void
down_dealloc(DownObject *self)
{
    PyMem_Free(self->work);
    PyMem_Free(self->phase);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* acc[g] += sum_q h[3q + s] * x[g - q] over one phase: contiguous and independent over g. */
VECTOR_CLONES static void
down_phase(double *restrict acc, const double *restrict x, int s, Py_ssize_t groups)
{
    for (int q = 0; q < TAPS / FACTOR; q++) {
        const double cq = down_coeff[FACTOR * q + s];
        const double *restrict xq = x - q;
        for (Py_ssize_t g = 0; g < groups; g++) {
            acc[g] += cq * xq[g];
        }
    }
}

static PyObject *
down_process(DownObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const uint8_t *bytes = (const uint8_t *)view.buf;
    Py_ssize_t nbytes = view.len;
    Py_ssize_t nsamples = (nbytes + self->has_odd) / 2;
    Py_ssize_t total = self->pending + nsamples;
    Py_ssize_t groups = total / FACTOR;
    PyObject *result = NULL;
    if (grow(&self->work, &self->work_cap, DOWN_HIST + total) < 0) {
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, groups);
    if (result == NULL) {
        goto done;
    }
    double *w = self->work;
    double *slot = w + DOWN_HIST + self->pending;
    Py_ssize_t at = 0;
    Py_ssize_t s = 0;
    if (self->has_odd && nbytes > 0) {
        slot[s++] = (double)(int16_t)(uint16_t)(self->odd | ((uint16_t)bytes[0] << 8));
        at = 1;
        self->has_odd = 0;
    }
    for (; at + 1 < nbytes; at += 2) {
        slot[s++] = (double)(int16_t)(uint16_t)(bytes[at] | ((uint16_t)bytes[at + 1] << 8));
    }
    if (at < nbytes) {
        self->odd = bytes[at];
        self->has_odd = 1;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    if (groups > 0) {
        /* Group g's newest sample is w[DOWN_HIST + 3g + 2] = w[3(g + 29) + 2]; tap i = 3q + s reads
         * w[3(g + 29 - q) + 2 - s] = phase (2 - s) at index g + 29 - q. Loops over g are contiguous
         * and independent, so the compiler vectorises them. */
        const Py_ssize_t span = groups + DOWN_HIST / FACTOR; /* phase samples needed */
        if (grow(&self->phase, &self->phase_cap, 4 * span) < 0) {
            Py_CLEAR(result);
            goto done;
        }
        double *p0 = self->phase, *p1 = p0 + span, *p2 = p1 + span, *acc = p2 + span;
        for (Py_ssize_t j = 0; j < span; j++) {
            p0[j] = w[FACTOR * j];
            p1[j] = w[FACTOR * j + 1];
            p2[j] = w[FACTOR * j + 2];
        }
        for (Py_ssize_t g = 0; g < groups; g++) {
            acc[g] = 0.0;
        }
        const double *phases[FACTOR] = {p2, p1, p0}; /* indexed by s */
        for (int s = 0; s < FACTOR; s++) {
            down_phase(acc, phases[s] + DOWN_HIST / FACTOR, s, groups);
        }
        for (Py_ssize_t g = 0; g < groups; g++) {
            out[g] = ulaw_encode[(uint16_t)to_int16(acc[g])];
        }
    }
    Py_ssize_t used = FACTOR * groups;
    self->pending = (int)(total - used);
    memmove(w, w + used, (DOWN_HIST + (size_t)self->pending) * sizeof(double));
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
down_reset(DownObject *self, PyObject *Py_UNUSED(ignored))
{
    memset(self->work, 0, (DOWN_HIST + 2) * sizeof(double));
    self->pending = 0;
    self->has_odd = 0;
    Py_RETURN_NONE;
}

static PyObject *
down_held_back(DownObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->pending);
}

static PyMethodDef down_methods[] = {
    {"process", (PyCFunction)down_process, METH_O,
     "process(pcm16_24k) -> bytes: mu-law 8 kHz; after B input bytes in total, B // 6 bytes out."},
    {"reset", (PyCFunction)down_reset, METH_NOARGS, "Barge-in: drop history, incomplete group and odd byte."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef down_getset[] = {
    {"held_back", (getter)down_held_back, NULL, "24 kHz samples received but not yet in any output (0..2).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DownType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "service._hotpath.ModelToCaller",
    .tp_doc = "Outbound hot path: PCM16 LE 24 kHz -> mu-law 8 kHz (compiled; see resample.NumpyModelToCaller).",
    .tp_basicsize = sizeof(DownObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)down_init,
    .tp_dealloc = (destructor)down_dealloc,
    .tp_methods = down_methods,
    .tp_getset = down_getset,
};



/* ---------------------------------------------------------------------------------------------- */
/* Resampler: the generic "up by L, FIR, down by M" on int16 (service.audio.resample.Resampler):    */
/* y[j] = sum_r c[p + L r] x[q - r], p = pos % L, q = pos / L, pos = j M + M - 1. Used for the other */
/* carrier codecs (A-law, L16 at 8 and 16 kHz), where numpy does the table lookups around it.       */

#define MAX_FACTOR 8
#define MAX_TAPS 512

typedef struct {
    PyObject_HEAD
    int up, down, branch_len;
    double *branches; /* [p * branch_len + r] = c[p + up * r] */
    double *work;     /* [branch_len - 1 history | new samples] */
    Py_ssize_t work_cap;
    long long rel; /* position (at the up-sampled rate) of the next output, relative to the next input */
} RatObject;

static int
rat_init(RatObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"up", "down", "coeffs", NULL};
    int up, down;
    Py_buffer view;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiy*:Resampler", kwlist, &up, &down, &view)) {
        return -1;
    }
    Py_ssize_t taps = view.len / (Py_ssize_t)sizeof(double);
    if (up < 1 || down < 1 || up > MAX_FACTOR || down > MAX_FACTOR || taps < 1 || taps > MAX_TAPS ||
        view.len % (Py_ssize_t)sizeof(double) != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "Resampler: 1 <= up, down <= 8 and 1..512 float64 coefficients");
        return -1;
    }
    int branch_len = (int)((taps + up - 1) / up);
    PyMem_Free(self->branches);
    self->branches = PyMem_Calloc((size_t)up * (size_t)branch_len, sizeof(double));
    if (self->branches == NULL) {
        PyBuffer_Release(&view);
        PyErr_NoMemory();
        return -1;
    }
    const double *c = (const double *)view.buf;
    for (Py_ssize_t i = 0; i < taps; i++) {
        self->branches[(i % up) * branch_len + i / up] = c[i];
    }
    PyBuffer_Release(&view);
    self->up = up;
    self->down = down;
    self->branch_len = branch_len;
    if (grow(&self->work, &self->work_cap, branch_len - 1 + 960) < 0) {
        return -1;
    }
    memset(self->work, 0, (size_t)(branch_len - 1) * sizeof(double));
    self->rel = down - 1;
    return 0;
}

static void
rat_dealloc(RatObject *self)
{
    PyMem_Free(self->branches);
    PyMem_Free(self->work);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
rat_process(RatObject *self, PyObject *arg)
{
    if (self->branches == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Resampler not initialised");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (view.len % 2 != 0) {
        PyErr_SetString(PyExc_ValueError, "Resampler.process: int16 samples (an even number of bytes)");
        goto done;
    }
    const Py_ssize_t n = view.len / 2;
    const int hist = self->branch_len - 1;
    const long long span = (long long)n * self->up;
    const Py_ssize_t count = self->rel < span ? (Py_ssize_t)((span - self->rel + self->down - 1) / self->down) : 0;
    if (grow(&self->work, &self->work_cap, hist + n) < 0) {
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, 2 * count);
    if (result == NULL) {
        goto done;
    }
    double *w = self->work;
    const int16_t *x = (const int16_t *)view.buf; /* native byte order, as numpy's int16 */
    for (Py_ssize_t t = 0; t < n; t++) {
        int16_t v;
        memcpy(&v, x + t, sizeof v);
        w[hist + t] = (double)v;
    }
    int16_t *out = (int16_t *)PyBytes_AS_STRING(result);
    long long rel = self->rel;
    for (Py_ssize_t j = 0; j < count; j++, rel += self->down) {
        const Py_ssize_t q = (Py_ssize_t)(rel / self->up);
        const double *c = self->branches + (rel % self->up) * self->branch_len;
        const double *xq = w + hist + q;
        double sum = 0.0;
        for (int r = 0; r < self->branch_len; r++) {
            sum += c[r] * xq[-r];
        }
        out[j] = to_int16(sum);
    }
    self->rel = rel - span;
    if (n > 0) {
        memmove(w, w + n, (size_t)hist * sizeof(double));
    }
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
rat_reset(RatObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->work != NULL) {
        memset(self->work, 0, (size_t)(self->branch_len - 1) * sizeof(double));
    }
    self->rel = self->down - 1;
    Py_RETURN_NONE;
}

static PyObject *
rat_held_back(RatObject *self, void *Py_UNUSED(closure))
{
    /* the newest input used so far is floor((rel - down) / up) relative to the next input */
    long long last = self->rel - self->down;
    long long newest = last >= 0 ? last / self->up : -((-last + self->up - 1) / self->up);
    return PyLong_FromLongLong(-1 - newest);
}

static PyMethodDef rat_methods[] = {
    {"process", (PyCFunction)rat_process, METH_O,
     "process(int16_native) -> bytes: every int16 output the input completes (native byte order)."},
    {"reset", (PyCFunction)rat_reset, METH_NOARGS, "Back to silence: history and phase as new."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef rat_getset[] = {
    {"held_back", (getter)rat_held_back, NULL, "Input samples received but not yet used by any output.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RatType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "service._hotpath.Resampler",
    .tp_doc = "Resampler(up, down, coeffs): streaming rational resampler on int16 (see resample.Resampler).",
    .tp_basicsize = sizeof(RatObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, /* resample.py wraps it for numpy arrays */
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)rat_init,
    .tp_dealloc = (destructor)rat_dealloc,
    .tp_methods = rat_methods,
    .tp_getset = rat_getset,
};

/* ---------------------------------------------------------------------------------------------- */

static int
read_doubles(PyObject *obj, double *dst, Py_ssize_t count, const char *what)
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view.len != count * (Py_ssize_t)sizeof(double)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd float64 values", what, count);
        PyBuffer_Release(&view);
        return -1;
    }
    memcpy(dst, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return 0;
}

static PyObject *
hotpath_install(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *up_obj, *down_obj, *decode_obj, *encode_obj;
    if (!PyArg_ParseTuple(args, "OOOO:install", &up_obj, &down_obj, &decode_obj, &encode_obj)) {
        return NULL;
    }
    double up[TAPS];
    double decode[256];
    Py_buffer encode;
    if (read_doubles(up_obj, up, TAPS, "up coefficients") < 0 ||
        read_doubles(down_obj, down_coeff, TAPS, "down coefficients") < 0 ||
        read_doubles(decode_obj, decode, 256, "mu-law decode table") < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(encode_obj, &encode, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (encode.len != 65536) {
        PyBuffer_Release(&encode);
        PyErr_SetString(PyExc_ValueError, "mu-law encode table: expected 65536 bytes");
        return NULL;
    }
    memcpy(ulaw_encode, encode.buf, 65536);
    PyBuffer_Release(&encode);
    for (int i = 0; i < TAPS; i++) {
        up_coeff[i % FACTOR][i / FACTOR] = up[i];
    }
    memcpy(ulaw_decode, decode, sizeof(decode));
    installed = 1;
    Py_RETURN_NONE;
}

static PyMethodDef hotpath_methods[] = {
    {"install", hotpath_install, METH_VARARGS,
     "install(up_coeffs, down_coeffs, ulaw_decode_f64, ulaw_encode_u8): the tables, once, from Python "
     "(87 + 87 + 256 float64 values as bytes, 65536 bytes)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef hotpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "service._hotpath",
    .m_doc = "Compiled per-frame audio kernels of the call bridge (bit-exact with service.audio.resample).",
    .m_size = -1,
    .m_methods = hotpath_methods,
};

PyMODINIT_FUNC
PyInit__hotpath(void)
{
    if (PyType_Ready(&UpType) < 0 || PyType_Ready(&DownType) < 0 || PyType_Ready(&RatType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&hotpath_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "CallerToModel", (PyObject *)&UpType) < 0 ||
        PyModule_AddObjectRef(module, "ModelToCaller", (PyObject *)&DownType) < 0 ||
        PyModule_AddObjectRef(module, "Resampler", (PyObject *)&RatType) < 0 ||
        PyModule_AddIntConstant(module, "TAPS", TAPS) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
