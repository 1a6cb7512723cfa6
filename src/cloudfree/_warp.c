/*
 * cloudfree._warp: resample a source raster onto another grid (the assemble step's UTM ->
 * Web Mercator warp), compiled.
 *
 * The caller (cloudfree.assemble._warp_exact) projects a lattice of output pixel centres
 * exactly (every `step` rows and columns) into source pixel coordinates; here each output
 * pixel's source position is interpolated bilinearly in that lattice (the projection is smooth:
 * at 32 px steps the interpolation is ~1e-4 px from the exact position, where GDAL's approximate
 * transformer allows 0.125 px), then sampled:
 *
 *  - nearest: the source pixel containing the position;
 *  - bilinear: the four source pixels around it (pixel centres at +0.5), weighted by area and
 *    renormalised over the valid ones; rounded half up like GDAL's integer output.
 *
 * Validity is unified over the bands: a source pixel is nodata when every band equals `nodata`.
 * An output pixel is nodata when the source pixel containing its position is nodata or outside
 * the source (GDAL's warp kernel skips such pixels, "Do not try to apply invalid source pixels
 * to the dest", gdalwarpkernel.cpp), so the swath edge neither grows nor darkens.
 *
 * Same surface rules as cloudfree._median (Lambda, see that file): limited C API (abi3), buffer
 * protocol only, no pthreads (the GIL is released; Python threads split the rows), no libm.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MAX_BANDS 4

typedef struct {
    const void *src;           /* (nb, sh, sw) */
    const double *lx, *ly;     /* (lh, lw): source column / row of output centres */
    void *out;                 /* (nb, oh, ow) */
    Py_ssize_t nb, sh, sw, lh, lw, oh, ow, step;
    int bilinear;
    int nodata;
} job_t;

/* floor() without libm, for |x| < 2^62 */
static inline Py_ssize_t ifloor(double x)
{
    Py_ssize_t i = (Py_ssize_t)x;
    return i - (x < (double)i);
}

#define DEFINE_WARP(NAME, T, MAXV)                                                            \
/* Is source pixel (r, c) in the source and valid in some band? */                            \
static inline __attribute__((always_inline)) int NAME##_valid(const job_t *j, const T *s, Py_ssize_t r, Py_ssize_t c)       \
{                                                                                            \
    if (r < 0 || c < 0 || r >= j->sh || c >= j->sw)                                          \
        return 0;                                                                            \
    Py_ssize_t plane = j->sh * j->sw, o = r * j->sw + c;                                     \
    for (Py_ssize_t b = 0; b < j->nb; b++)                                                   \
        if (s[b * plane + o] != (T)j->nodata)                                                \
            return 1;                                                                        \
    return 0;                                                                                \
}                                                                                            \
                                                                                             \
/* One output pixel at source position (x, y). */                                            \
static inline __attribute__((always_inline)) void                                          \
NAME##_pixel(const job_t *j, const T *s, T *out, Py_ssize_t o, double x,                     \
                                double y)                                                    \
{                                                                                            \
    Py_ssize_t splane = j->sh * j->sw, oplane = j->oh * j->ow, nb = j->nb;                   \
    if (!j->bilinear) {                                                                      \
        Py_ssize_t ci = ifloor(x), ri = ifloor(y);                                           \
        int ok = NAME##_valid(j, s, ri, ci);                                                 \
        for (Py_ssize_t b = 0; b < nb; b++)                                                  \
            out[b * oplane + o] = ok ? s[b * splane + ri * j->sw + ci] : (T)j->nodata;       \
        return;                                                                              \
    }                                                                                        \
    double xs = x - 0.5, ys = y - 0.5;                                                       \
    Py_ssize_t c0 = ifloor(xs), q0 = ifloor(ys);                                             \
    double dx = xs - (double)c0, dy = ys - (double)q0;                                       \
    /* the pixel containing (x, y) is one of the four: (q0 + [dy >= .5], c0 + [dx >= .5]) */  \
    int centre = 2 * (dy >= 0.5) + (dx >= 0.5);                                              \
    if (nb == 1 && q0 >= 0 && c0 >= 0 && q0 + 1 < j->sh && c0 + 1 < j->sw) {                 \
        const T *p = s + q0 * j->sw + c0; /* inside: the common case, one band */           \
        double v[4] = {p[0], p[1], p[j->sw], p[j->sw + 1]};                                  \
        double w[4] = {(1 - dx) * (1 - dy), dx * (1 - dy), (1 - dx) * dy, dx * dy};          \
        T nd = (T)j->nodata;                                                                 \
        int ok[4] = {p[0] != nd, p[1] != nd, p[j->sw] != nd, p[j->sw + 1] != nd};            \
        if (!ok[centre]) {                                                                   \
            out[o] = nd;                                                                     \
            return;                                                                          \
        }                                                                                    \
        double r;                                                                            \
        if (ok[0] & ok[1] & ok[2] & ok[3]) {                                                 \
            r = w[0] * v[0] + w[1] * v[1] + w[2] * v[2] + w[3] * v[3] + 0.5;                 \
        } else {                                                                             \
            double acc = 0, sum = 0;                                                         \
            for (int n = 0; n < 4; n++)                                                      \
                if (ok[n]) {                                                                 \
                    acc += w[n] * v[n];                                                      \
                    sum += w[n];                                                             \
                }                                                                            \
            r = acc / sum + 0.5; /* sum >= 0.25: the centre pixel is valid */                \
        }                                                                                    \
        out[o] = r >= (double)(MAXV) ? (T)(MAXV) : (T)r;                                     \
        return;                                                                              \
    }                                                                                        \
    double w[4] = {(1 - dx) * (1 - dy), dx * (1 - dy), (1 - dx) * dy, dx * dy};              \
    Py_ssize_t rr[4] = {q0, q0, q0 + 1, q0 + 1}, cc[4] = {c0, c0 + 1, c0, c0 + 1};           \
    int ok[4];                                                                               \
    for (int n = 0; n < 4; n++)                                                              \
        ok[n] = NAME##_valid(j, s, rr[n], cc[n]);                                            \
    if (!ok[centre]) {                                                                       \
        for (Py_ssize_t b = 0; b < nb; b++)                                                  \
            out[b * oplane + o] = (T)j->nodata;                                              \
        return;                                                                              \
    }                                                                                        \
    double acc[MAX_BANDS] = {0, 0, 0, 0}, sum = 0;                                           \
    for (int n = 0; n < 4; n++) {                                                            \
        if (!ok[n])                                                                          \
            continue;                                                                        \
        Py_ssize_t p = rr[n] * j->sw + cc[n];                                                \
        for (Py_ssize_t b = 0; b < nb; b++)                                                  \
            acc[b] += w[n] * (double)s[b * splane + p];                                      \
        sum += w[n];                                                                         \
    }                                                                                        \
    for (Py_ssize_t b = 0; b < nb; b++) {                                                    \
        double r = acc[b] / sum + 0.5;                                                       \
        out[b * oplane + o] = r >= (double)(MAXV) ? (T)(MAXV) : (T)r;                        \
    }                                                                                        \
}                                                                                            \
                                                                                             \
static void NAME##_rows(const job_t *jp, Py_ssize_t r0, Py_ssize_t r1, double *rx, double *ry) \
{                                                                                            \
    /* a local copy: the output stores cannot alias it (-fno-strict-aliasing) */             \
    const job_t local = *jp, *j = &local;                                                    \
    const T *s = (const T *)j->src;                                                          \
    T *out = (T *)j->out;                                                                    \
    double inv = 1.0 / (double)j->step;                                                      \
    for (Py_ssize_t r = r0; r < r1; r++) {                                                   \
        Py_ssize_t k = r / j->step;                                                          \
        double fr = (double)(r - k * j->step) * inv;                                         \
        const double *x0 = j->lx + k * j->lw, *y0 = j->ly + k * j->lw;                       \
        for (Py_ssize_t m = 0; m < j->lw; m++) { /* the lattice row at r */                  \
            rx[m] = x0[m] + (x0[m + j->lw] - x0[m]) * fr;                                    \
            ry[m] = y0[m] + (y0[m + j->lw] - y0[m]) * fr;                                    \
        }                                                                                    \
        for (Py_ssize_t m = 0, c = 0; c < j->ow; m++) { /* lattice segment by segment */     \
            double gx = (rx[m + 1] - rx[m]) * inv, gy = (ry[m + 1] - ry[m]) * inv;           \
            Py_ssize_t n = j->ow - c < j->step ? j->ow - c : j->step;                        \
            for (Py_ssize_t i = 0; i < n; i++, c++)                                          \
                NAME##_pixel(j, s, out, r * j->ow + c, rx[m] + gx * (double)i,               \
                             ry[m] + gy * (double)i);                                        \
        }                                                                                    \
    }                                                                                        \
}

DEFINE_WARP(warp8, uint8_t, 255)
DEFINE_WARP(warp16, uint16_t, 65535)

static int check_len(const Py_buffer *b, Py_ssize_t want, const char *name)
{
    if (b->len != want) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", name, b->len, want);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(warp_doc,
"warp(src, lattice_x, lattice_y, out, itemsize, nb, sh, sw, oh, ow, step, bilinear, nodata,"
" row0, row1)\n--\n\n"
"Fill rows [row0, row1) of out (nb, oh, ow) from src (nb, sh, sw), both C-contiguous uint8\n"
"(itemsize 1) or uint16 (itemsize 2). lattice_x / lattice_y: float64 (lh, lw) with\n"
"lh = (oh - 1) // step + 2 and lw = (ow - 1) // step + 2, the source column / row (pixel\n"
"units, 0 at the source's left / top edge) of output pixel centre (k * step, m * step).\n"
"bilinear: 0 = nearest, 1 = bilinear. Releases the GIL.");

static PyObject *warp(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer src, lx, ly, out;
    Py_ssize_t itemsize, nb, sh, sw, oh, ow, step, row0, row1;
    int bilinear, nodata;
    if (!PyArg_ParseTuple(args, "y*y*y*w*nnnnnnnpinn", &src, &lx, &ly, &out, &itemsize, &nb,
                          &sh, &sw, &oh, &ow, &step, &bilinear, &nodata, &row0, &row1))
        return NULL;
    PyObject *result = NULL;
    double *rows = NULL;
    if ((itemsize != 1 && itemsize != 2) || nb < 1 || nb > MAX_BANDS || sh < 1 || sw < 1 ||
        oh < 1 || ow < 1 || step < 1 || row0 < 0 || row1 > oh || row0 > row1 || nodata < 0 ||
        nodata > (itemsize == 1 ? 255 : 65535)) {
        PyErr_SetString(PyExc_ValueError, "bad itemsize, band count, shape, step, rows or nodata");
        goto done;
    }
    Py_ssize_t lh = (oh - 1) / step + 2, lw = (ow - 1) / step + 2;
    if (check_len(&src, itemsize * nb * sh * sw, "src") ||
        check_len(&out, itemsize * nb * oh * ow, "out") ||
        check_len(&lx, 8 * lh * lw, "lattice_x") || check_len(&ly, 8 * lh * lw, "lattice_y"))
        goto done;
    rows = PyMem_Malloc(2 * lw * sizeof(double));
    if (!rows) {
        PyErr_NoMemory();
        goto done;
    }
    job_t j = {src.buf, lx.buf, ly.buf, out.buf, nb, sh, sw, lh, lw, oh, ow, step, bilinear,
               nodata};
    Py_BEGIN_ALLOW_THREADS
    if (itemsize == 1)
        warp8_rows(&j, row0, row1, rows, rows + lw);
    else
        warp16_rows(&j, row0, row1, rows, rows + lw);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(rows);
    PyBuffer_Release(&src);
    PyBuffer_Release(&lx);
    PyBuffer_Release(&ly);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"warp", warp, METH_VARARGS, warp_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_warp", "Compiled lattice warp (see cloudfree.assemble).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__warp(void)
{
    return PyModule_Create(&module);
}
