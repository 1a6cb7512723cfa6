/*
 * cloudfree._median: the masked median kernel of cloudfree.median, compiled; the two passes
 * over a window's observation states that make its input (see "The median's inputs" below);
 * the 2 x 2 mean that puts the outlier decision's 10 m reference bands on its 20 m grid.
 *
 * Same algorithm as the numpy path (see cloudfree/median.py): invalid observations are
 * filled, in scene order, alternately with 0 and 65535, so the median of the valid values
 * sits at fixed sorted positions; a pruned selection network (built and verified in Python,
 * passed here as bytes) computes only those order statistics; even counts take the mean of
 * the two middle values rounded half to even.
 *
 * Pixels are processed in blocks of BLOCK along the flattened (H*W) axis. One block's wires
 * (S x BLOCK int16, 16 KiB at S = 64) stay in L1; every comparator is a fixed-length loop
 * over the block that the compiler turns into SIMD min/max. Values are biased by 0x8000 so
 * the signed 16-bit min/max of baseline x86-64 (SSE2 pminsw/pmaxsw) order them as unsigned.
 *
 * Deliberately small surface, for Lambda:
 *  - the limited C API (abi3) and the buffer protocol only: no numpy headers, one binary for
 *    CPython 3.11+;
 *  - no pthreads (glibc 2.34 moved pthread_create to a new symbol version that Amazon Linux 2's
 *    glibc 2.26 lacks): the GIL is released and Python threads split the pixel range;
 *  - no libm, only libc's oldest symbols (tests/unit/test_median_ext.py checks the versions).
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 256
#define MAX_SCENES 64
#define WANT_MIN 1
#define WANT_MAX 2

typedef struct {
    const uint16_t *stack; /* (S, N) */
    const uint8_t *valid;  /* (S, N), non-zero = valid */
    uint16_t *median;      /* (N,) */
    uint8_t *count;        /* (N,) */
    int64_t *contrib;      /* (S,) accumulated */
    const uint8_t *ops;    /* n_ops x (a, b, flags) */
    Py_ssize_t n_ops, n_scenes, n_pixels;
    int out0, out1, n_out;
} job_t;

/* Load pixels [p0, p0 + n) into the wires (biased int16) and count the valid values.
 * Inlined with n == BLOCK for whole blocks, so the loops have a constant trip count. */
static inline __attribute__((always_inline)) void
fill_block(const job_t *j, Py_ssize_t p0, int n, int16_t *restrict w, uint8_t *restrict cnt)
{
    uint16_t fill[BLOCK];
    memset(fill, 0xFF, sizeof fill); /* toggled before first use: 1st invalid gets 0 */
    memset(cnt, 0, BLOCK);
    const Py_ssize_t n_pixels = j->n_pixels, n_scenes = j->n_scenes;
    for (Py_ssize_t s = 0; s < n_scenes; s++) {
        const uint16_t *restrict x = j->stack + s * n_pixels + p0;
        const uint8_t *restrict v = j->valid + s * n_pixels + p0;
        int16_t *restrict ws = w + s * BLOCK;
        uint16_t c = 0; /* at most BLOCK */
        for (int p = 0; p < n; p++) {
            uint16_t ok = v[p] != 0;
            uint16_t inv = (uint16_t)(ok - 1); /* 0xFFFF where invalid */
            uint16_t f = fill[p] ^ inv;
            fill[p] = f;
            ws[p] = (int16_t)((((x[p] ^ f) & (uint16_t)~inv) ^ f) ^ 0x8000);
            cnt[p] = (uint8_t)(cnt[p] + ok);
            c = (uint16_t)(c + ok);
        }
        j->contrib[s] += c;
    }
    for (Py_ssize_t s = 0; s < n_scenes; s++)
        for (int p = n; p < BLOCK; p++)
            w[s * BLOCK + p] = 0;
}

/* One comparator over a block: restrict on parameters is what lets GCC vectorize without
 * a runtime overlap check. */
static inline __attribute__((always_inline)) void
cmp_both(int16_t *restrict a, int16_t *restrict b)
{
    for (int p = 0; p < BLOCK; p++) {
        int16_t x = a[p], y = b[p];
        a[p] = x < y ? x : y;
        b[p] = x < y ? y : x;
    }
}

static inline __attribute__((always_inline)) void
cmp_min(int16_t *restrict a, const int16_t *restrict b)
{
    for (int p = 0; p < BLOCK; p++)
        a[p] = a[p] < b[p] ? a[p] : b[p];
}

static inline __attribute__((always_inline)) void
cmp_max(const int16_t *restrict a, int16_t *restrict b)
{
    for (int p = 0; p < BLOCK; p++)
        b[p] = a[p] < b[p] ? b[p] : a[p];
}

static inline __attribute__((always_inline)) void run_network(const job_t *j, int16_t *w)
{
    const uint8_t *op = j->ops;
    for (Py_ssize_t k = 0; k < j->n_ops; k++, op += 3) {
        int16_t *a = w + op[0] * BLOCK, *b = w + op[1] * BLOCK;
        if (op[2] == (WANT_MIN | WANT_MAX))
            cmp_both(a, b);
        else if (op[2] == WANT_MIN)
            cmp_min(a, b);
        else
            cmp_max(a, b);
    }
}

/* Median of the block from the network outputs, branch-free in uint16 (vectorizes). */
static inline __attribute__((always_inline)) void
write_block(const job_t *j, Py_ssize_t p0, int n, const int16_t *w, const uint8_t *restrict cnt)
{
    uint16_t *restrict med = j->median + p0;
    uint8_t *restrict count = j->count + p0;
    const int16_t *restrict o0 = w + j->out0 * BLOCK;
    /* S == 1 has one output; else odd counts read rank S // 2: the upper middle (o1) for even
     * S, the lower (o0) for odd S, and even counts average o0 and o1. */
    const int16_t *restrict o1 = w + (j->n_out == 1 ? j->out0 : j->out1) * BLOCK;
    const int16_t *restrict odd = (j->n_out == 2 && j->n_scenes % 2 == 0) ? o1 : o0;
    for (int p = 0; p < n; p++) {
        uint16_t a = (uint16_t)(o0[p] ^ 0x8000), b = (uint16_t)(o1[p] ^ 0x8000);
        uint16_t q = (uint16_t)((a >> 1) + (b >> 1) + (a & b & 1)); /* floor((a + b) / 2) */
        q = (uint16_t)(q + ((a ^ b) & q & 1));                      /* .5 -> even */
        uint16_t o = (uint16_t)(odd[p] ^ 0x8000);
        uint16_t is_odd = (uint16_t)-(uint16_t)(cnt[p] & 1);
        uint16_t any = (uint16_t)-(uint16_t)(cnt[p] != 0);
        med[p] = (uint16_t)(((q ^ o) & ~is_odd) ^ o) & any;
        count[p] = cnt[p];
    }
}

/* AVX2 doubles the SIMD width; the default clone keeps baseline x86-64 (SSE2) working. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(CLOUDFREE_NO_CLONES)
__attribute__((target_clones("avx2", "default")))
#endif
static void run_range(const job_t *j, Py_ssize_t start, Py_ssize_t stop)
{
    int16_t w[MAX_SCENES * BLOCK] __attribute__((aligned(64)));
    uint8_t cnt[BLOCK] __attribute__((aligned(64)));
    Py_ssize_t p0 = start;
    for (; p0 + BLOCK <= stop; p0 += BLOCK) {
        fill_block(j, p0, BLOCK, w, cnt);
        run_network(j, w);
        write_block(j, p0, BLOCK, w, cnt);
    }
    if (p0 < stop) {
        int n = (int)(stop - p0);
        fill_block(j, p0, n, w, cnt);
        run_network(j, w);
        write_block(j, p0, n, w, cnt);
    }
}

static int check_len(const Py_buffer *b, Py_ssize_t want, const char *name)
{
    if (b->len != want) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", name, b->len, want);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(masked_median_doc,
"masked_median(stack, valid, median, count, contributions, ops, n_scenes, out0, out1, n_out,"
" start, stop)\n--\n\n"
"Median of pixels [start, stop) of C-contiguous buffers: stack uint16 (S, N), valid uint8\n"
"(S, N); writes median uint16 (N,) and count uint8 (N,), adds to contributions int64 (S,).\n"
"ops: the selection network as bytes of (a, b, flags) triples (flags 1 = min, 2 = max);\n"
"out0/out1: wires holding the middle order statistics (n_out = 1 or 2). Releases the GIL.");

static PyObject *masked_median(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer stack, valid, median, count, contrib, ops;
    Py_ssize_t n_scenes, start, stop;
    int out0, out1, n_out;
    if (!PyArg_ParseTuple(args, "y*y*w*w*w*y*niiinn", &stack, &valid, &median, &count,
                          &contrib, &ops, &n_scenes, &out0, &out1, &n_out, &start, &stop))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n_pixels = median.len / 2;
    if (n_scenes < 1 || n_scenes > MAX_SCENES) {
        PyErr_Format(PyExc_ValueError, "n_scenes must be 1..%d, got %zd", MAX_SCENES, n_scenes);
        goto done;
    }
    if (check_len(&stack, 2 * n_scenes * n_pixels, "stack") ||
        check_len(&valid, n_scenes * n_pixels, "valid") ||
        check_len(&count, n_pixels, "count") || check_len(&contrib, 8 * n_scenes, "contributions"))
        goto done;
    if (ops.len % 3 || n_out < 1 || n_out > 2 || out0 < 0 || out0 >= n_scenes || out1 < 0 ||
        out1 >= n_scenes || start < 0 || stop > n_pixels || start > stop) {
        PyErr_SetString(PyExc_ValueError, "bad network outputs, ops or pixel range");
        goto done;
    }
    const uint8_t *o = ops.buf;
    for (Py_ssize_t k = 0; k < ops.len; k += 3) {
        if (o[k] >= n_scenes || o[k + 1] >= n_scenes || o[k] == o[k + 1] || o[k + 2] < 1 ||
            o[k + 2] > 3) {
            PyErr_Format(PyExc_ValueError, "bad comparator %zd", k / 3);
            goto done;
        }
    }
    job_t j = {stack.buf, valid.buf, median.buf, count.buf, contrib.buf, o,
               ops.len / 3, n_scenes, n_pixels, out0, out1, n_out};
    Py_BEGIN_ALLOW_THREADS
    run_range(&j, start, stop);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&stack);
    PyBuffer_Release(&valid);
    PyBuffer_Release(&median);
    PyBuffer_Release(&count);
    PyBuffer_Release(&contrib);
    PyBuffer_Release(&ops);
    return result;
}

/* --- The median's inputs ------------------------------------------------------------------
 * Observation states (cloudfree.mask): NODATA 0 < MASKED 1 < SNOW 2 < CLEAR 3, one uint8 per
 * scene and pixel. These replace numpy passes over a window's (S, N) states (cloudfree.composite
 * _demote_missing and snow_fallback: five and four full passes per scene) with one each. */
#define ST_MASKED 1
#define ST_SNOW 2
#define ST_CLEAR 3

/* Pixels per block of the passes below: a block's scratch (a few 4 KiB rows) stays in L1. */
#define PASS_BLOCK 4096

/* One block (m <= PASS_BLOCK pixels) of one scene: a usable state (SNOW, CLEAR) where the band
 * has no data (nodata[p]) becomes MASKED; returns how many of its pixels are then MASKED or
 * SNOW. */
static inline __attribute__((always_inline)) uint32_t
demote_block(const uint8_t *restrict nodata, uint8_t *restrict st, Py_ssize_t m)
{
    uint32_t c = 0;
    for (Py_ssize_t p = 0; p < m; p++) {
        uint8_t v = st[p];
        uint8_t d = (uint8_t)(nodata[p] && v > ST_MASKED ? ST_MASKED : v);
        st[p] = d;
        c += (uint32_t)((d == ST_MASKED) | (d == ST_SNOW));
    }
    return c;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(CLOUDFREE_NO_CLONES)
__attribute__((target_clones("avx2", "default")))
#endif
static void demote_all(const void *stack, int itemsize, Py_ssize_t channels, uint8_t *states,
                       int64_t *counts, Py_ssize_t n_scenes, Py_ssize_t n)
{
    uint8_t nodata[PASS_BLOCK];
    for (Py_ssize_t s = 0; s < n_scenes; s++) {
        uint8_t *st = states + s * n;
        int64_t c = 0;
        for (Py_ssize_t p0 = 0; p0 < n; p0 += PASS_BLOCK) {
            Py_ssize_t m = n - p0 < PASS_BLOCK ? n - p0 : PASS_BLOCK;
            if (itemsize == 2) {
                const uint16_t *restrict x = (const uint16_t *)stack + s * n + p0;
                for (Py_ssize_t p = 0; p < m; p++)
                    nodata[p] = x[p] == 0;
            } else {
                const uint8_t *x = (const uint8_t *)stack + s * channels * n + p0;
                for (Py_ssize_t p = 0; p < m; p++)
                    nodata[p] = x[p] == 0;
                for (Py_ssize_t ch = 1; ch < channels; ch++) {
                    const uint8_t *restrict xc = x + ch * n;
                    for (Py_ssize_t p = 0; p < m; p++)
                        nodata[p] &= xc[p] == 0;
                }
            }
            c += demote_block(nodata, st + p0, m);
        }
        counts[s] = c;
    }
}

PyDoc_STRVAR(demote_missing_doc,
"demote_missing(stack, itemsize, channels, states, counts, n_scenes)\n--\n\n"
"Where a scene's band has no data (every channel 0), its usable state (SNOW, CLEAR) becomes\n"
"MASKED, in place. stack: C-contiguous (S, channels, N) of uint16 (itemsize 2, channels 1) or\n"
"uint8 (itemsize 1); states uint8 (S, N); writes counts int64 (S,): each scene's MASKED + SNOW\n"
"pixels afterwards. Releases the GIL.");

static PyObject *demote_missing(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer stack, states, counts;
    int itemsize;
    Py_ssize_t channels, n_scenes;
    if (!PyArg_ParseTuple(args, "y*inw*w*n", &stack, &itemsize, &channels, &states, &counts,
                          &n_scenes))
        return NULL;
    PyObject *result = NULL;
    if (n_scenes < 1 || channels < 1 || (itemsize != 1 && itemsize != 2) ||
        (itemsize == 2 && channels != 1) || states.len % n_scenes) {
        PyErr_SetString(PyExc_ValueError, "bad scenes, channels, item size or states");
        goto done;
    }
    Py_ssize_t n = states.len / n_scenes;
    if (check_len(&stack, itemsize * channels * n_scenes * n, "stack") ||
        check_len(&counts, 8 * n_scenes, "counts"))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    demote_all(stack.buf, itemsize, channels, states.buf, counts.buf, n_scenes, n);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&stack);
    PyBuffer_Release(&states);
    PyBuffer_Release(&counts);
    return result;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(CLOUDFREE_NO_CLONES)
__attribute__((target_clones("avx2", "default")))
#endif
static int fallback_all(uint8_t *states, uint8_t *snow, Py_ssize_t n_scenes, Py_ssize_t n)
{
    uint8_t ground[PASS_BLOCK], snowy[PASS_BLOCK];
    uint8_t any = 0;
    for (Py_ssize_t p0 = 0; p0 < n; p0 += PASS_BLOCK) {
        Py_ssize_t m = n - p0 < PASS_BLOCK ? n - p0 : PASS_BLOCK;
        memset(ground, 0, sizeof ground);
        memset(snowy, 0, sizeof snowy);
        for (Py_ssize_t s = 0; s < n_scenes; s++) {
            const uint8_t *restrict st = states + s * n + p0;
            for (Py_ssize_t p = 0; p < m; p++) {
                ground[p] |= st[p] == ST_CLEAR;
                snowy[p] |= st[p] == ST_SNOW;
            }
        }
        uint8_t *restrict sn = snow + p0;
        for (Py_ssize_t p = 0; p < m; p++) {
            sn[p] = snowy[p] & (uint8_t)!ground[p];
            any |= sn[p];
        }
        for (Py_ssize_t s = 0; s < n_scenes; s++) {
            uint8_t *restrict st = states + s * n + p0;
            for (Py_ssize_t p = 0; p < m; p++)
                st[p] = (uint8_t)((st[p] == ST_CLEAR) | ((st[p] == ST_SNOW) & sn[p]));
        }
    }
    return any;
}

PyDoc_STRVAR(snow_fallback_doc,
"snow_fallback(states, snow, n_scenes) -> bool\n--\n\n"
"The observations a pixel's median uses, written over states uint8 (S, N) as 0/1: its CLEAR\n"
"ones, or where it has none its SNOW ones; snow uint8 (N,) gets 1 where the latter. Returns\n"
"whether any pixel fell back to snow. Releases the GIL.");

static PyObject *snow_fallback(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer states, snow;
    Py_ssize_t n_scenes;
    if (!PyArg_ParseTuple(args, "w*w*n", &states, &snow, &n_scenes))
        return NULL;
    PyObject *result = NULL;
    if (n_scenes < 1 || states.len != n_scenes * snow.len) {
        PyErr_SetString(PyExc_ValueError, "states must be n_scenes x the snow buffer's bytes");
        goto done;
    }
    int any;
    Py_BEGIN_ALLOW_THREADS
    any = fallback_all(states.buf, snow.buf, n_scenes, snow.len);
    Py_END_ALLOW_THREADS
    result = PyBool_FromLong(any);
done:
    PyBuffer_Release(&states);
    PyBuffer_Release(&snow);
    return result;
}

/* --- The outlier decision's reference bands on its 20 m grid (cloudfree.outliers) ----------- */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(CLOUDFREE_NO_CLONES)
__attribute__((target_clones("avx2", "default")))
#endif
static void mean2_all(const uint16_t *src, uint16_t *out, Py_ssize_t h, Py_ssize_t w)
{
    for (Py_ssize_t r = 0; r < h; r++) {
        const uint16_t *restrict a = src + 2 * r * 2 * w, *restrict b = a + 2 * w;
        uint16_t *restrict o = out + r * w;
        for (Py_ssize_t c = 0; c < w; c++) {
            uint16_t x0 = a[2 * c], x1 = a[2 * c + 1], y0 = b[2 * c], y1 = b[2 * c + 1];
            uint32_t sum = (uint32_t)x0 + x1 + y0 + y1;
            uint16_t lo = x0 < x1 ? x0 : x1, lo2 = y0 < y1 ? y0 : y1;
            lo = lo < lo2 ? lo : lo2;
            o[c] = lo ? (uint16_t)(sum >> 2) : 0;
        }
    }
}

PyDoc_STRVAR(mean2x2_doc,
"mean2x2(src, out, h, w)\n--\n\n"
"src uint16 (2h, 2w) C-contiguous -> out uint16 (h, w): each 2 x 2 block's rounded-down\n"
"integer mean, 0 where any of the four is 0. Releases the GIL.");

static PyObject *mean2x2(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer src, out;
    Py_ssize_t h, w;
    if (!PyArg_ParseTuple(args, "y*w*nn", &src, &out, &h, &w))
        return NULL;
    PyObject *result = NULL;
    if (h < 0 || w < 0 || check_len(&src, 8 * h * w, "src") || check_len(&out, 2 * h * w, "out"))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    mean2_all(src.buf, out.buf, h, w);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"mean2x2", mean2x2, METH_VARARGS, mean2x2_doc},
    {"masked_median", masked_median, METH_VARARGS, masked_median_doc},
    {"demote_missing", demote_missing, METH_VARARGS, demote_missing_doc},
    {"snow_fallback", snow_fallback, METH_VARARGS, snow_fallback_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_median", "Compiled masked median kernel (see cloudfree.median).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__median(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "BLOCK", BLOCK) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
