/*
 * cloudfree._blocks: place one inflated GeoTIFF tile into a window, undoing TIFF's horizontal
 * predictor on the way (cloudfree.blocks reads the tiles and inflates them).
 *
 * Why: libtiff undoes PREDICTOR=2 (every Earth Search COG has it) with `cp[stride] += cp[0]`
 * through memory, one store-to-load forwarding per sample: on `make bench-peer`'s scenes ~15 %
 * of the whole run's CPU sat on that one loop (perf), a third of the time of the inflate
 * itself. Here the running sum stays in a register, and the accumulated row goes straight to
 * its place in the output (no block cache, no second copy).
 *
 * The tile is (th, tw, spp) samples, pixel-interleaved, little-endian, itemsize 1 or 2. Its rows
 * r0..r1 and columns c0..c1 go to out (the window's buffer) at row orow, column ocol; out is
 * (spp, oh, ow) planes (one per sample) -- for spp 1 simply (oh, ow). Predictor 2 is undone
 * over whole rows from column 0 (the differences start at each row's first pixel, TIFF 6.0
 * section 14), per sample, modulo 2^(8 itemsize) as libtiff does (horAcc8 / horAcc16).
 *
 * Same surface rules as cloudfree._median (Lambda, see that file): limited C API (abi3), buffer
 * protocol only, no pthreads (the GIL is released; Python threads place different tiles), no
 * libm.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_SAMPLES 4

typedef struct {
    const uint8_t *tile;
    uint8_t *out;
    Py_ssize_t th, tw, spp, r0, r1, c0, c1, oh, ow, orow, ocol;
    int predictor;
} job_t;

#define DEFINE_PLACE(NAME, T)                                                                 \
static void NAME(const job_t *j)                                                              \
{                                                                                             \
    const T *tile = (const T *)j->tile;                                                       \
    T *out = (T *)j->out;                                                                     \
    Py_ssize_t plane = j->oh * j->ow, n = j->c1 - j->c0;                                      \
    for (Py_ssize_t r = j->r0; r < j->r1; r++) {                                              \
        const T *src = tile + r * j->tw * j->spp;                                             \
        T *dst = out + (j->orow + r - j->r0) * j->ow + j->ocol;                               \
        if (j->spp == 1) {                                                                    \
            if (j->predictor == 2) {                                                          \
                T acc = 0;                                                                    \
                Py_ssize_t c = 0;                                                             \
                for (; c < j->c0; c++)                                                        \
                    acc = (T)(acc + src[c]);                                                  \
                for (; c < j->c1; c++) {                                                      \
                    acc = (T)(acc + src[c]);                                                  \
                    dst[c - j->c0] = acc;                                                     \
                }                                                                             \
            } else {                                                                          \
                memcpy(dst, src + j->c0, (size_t)n * sizeof(T));                              \
            }                                                                                 \
            continue;                                                                         \
        }                                                                                     \
        for (Py_ssize_t s = 0; s < j->spp; s++) {                                             \
            T acc = 0, *d = dst + s * plane;                                                  \
            const T *p = src + s;                                                             \
            Py_ssize_t c = 0;                                                                 \
            if (j->predictor == 2)                                                            \
                for (; c < j->c0; c++)                                                        \
                    acc = (T)(acc + p[c * j->spp]);                                           \
            for (c = j->c0; c < j->c1; c++) {                                                 \
                T v = p[c * j->spp];                                                          \
                acc = j->predictor == 2 ? (T)(acc + v) : v;                                   \
                d[c - j->c0] = acc;                                                           \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}

DEFINE_PLACE(place8, uint8_t)
DEFINE_PLACE(place16, uint16_t)

static int check_len(Py_buffer *b, Py_ssize_t want, const char *name)
{
    if (b->len != want) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, expected %zd", name, b->len, want);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(place_doc,
"place(tile, itemsize, th, tw, spp, predictor, r0, r1, c0, c1, out, oh, ow, orow, ocol)\n"
"--\n\n"
"Write rows r0..r1, columns c0..c1 of an inflated tile (th x tw pixels of spp samples,\n"
"pixel-interleaved, little-endian, itemsize 1 or 2 bytes) into out, (spp, oh, ow) planes, at\n"
"row orow and column ocol, undoing TIFF's horizontal predictor when predictor is 2 (1: none).\n"
"Releases the GIL.");

static PyObject *place(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer tile, out;
    Py_ssize_t itemsize, th, tw, spp, predictor, r0, r1, c0, c1, oh, ow, orow, ocol;
    if (!PyArg_ParseTuple(args, "y*nnnnnnnnnw*nnnn", &tile, &itemsize, &th, &tw, &spp,
                          &predictor, &r0, &r1, &c0, &c1, &out, &oh, &ow, &orow, &ocol))
        return NULL;
    PyObject *result = NULL;
    if ((itemsize != 1 && itemsize != 2) || spp < 1 || spp > MAX_SAMPLES ||
        (predictor != 1 && predictor != 2) || th < 1 || tw < 1 || r0 < 0 || r1 > th ||
        r0 >= r1 || c0 < 0 || c1 > tw || c0 >= c1 || orow < 0 || ocol < 0 ||
        orow + (r1 - r0) > oh || ocol + (c1 - c0) > ow) {
        PyErr_SetString(PyExc_ValueError, "bad itemsize, samples, predictor or rectangle");
        goto done;
    }
    if (check_len(&tile, itemsize * th * tw * spp, "tile") ||
        check_len(&out, itemsize * spp * oh * ow, "out"))
        goto done;
    job_t j = {tile.buf, out.buf, th, tw, spp, r0, r1, c0, c1, oh, ow, orow, ocol,
               (int)predictor};
    Py_BEGIN_ALLOW_THREADS
    if (itemsize == 1)
        place8(&j);
    else
        place16(&j);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&tile);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"place", place, METH_VARARGS, place_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_blocks", "Compiled tile placement (see cloudfree.blocks).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__blocks(void)
{
    return PyModule_Create(&module);
}
