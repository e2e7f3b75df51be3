/*
 * Optional compiled kernel of evaluator.metrics: Dice counts, Hausdorff distance and
 * average surface distance of one structure, with the same semantics as the pure
 * NumPy/OpenCV path (which stays the reference and the fallback when no compiler is
 * available at install time).
 *
 * structure_counts(pred, gt, height, width, bits_list, radius)
 *   pred, gt: C-contiguous uint8 label maps (height x width), read through the buffer
 *   protocol. For each structure in bits_list, a pixel belongs to it when its label v
 *   (1 <= v < 16) has (1 << v) & bits. Returns a list with, per structure, (n_pred, n_gt,
 *   n_both, hd_squared, total_surface_distance, n_surface_pred, n_surface_gt).
 *   The surface of a mask: its pixels with a background pixel among their 8 neighbours,
 *   the frame extended by repeating its edge. hd_squared is the largest
 *   squared distance from a pixel of one set, outside the other, to the other's surface
 *   (outside a set, that is the distance to the set); total_surface_distance sums the
 *   distance of every surface pixel to the other mask's surface, both ways, each rounded
 *   to float32 as SimpleITK's distance map stores it.
 *   Distances are found by trying integer offsets in order of increasing squared length
 *   up to `radius`, then, for farther pixels, by an exhaustive scan of the surface.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS 16

typedef struct {
    int dy, dx, k;
} Offset;

static int cmp_offset(const void *a, const void *b) {
    const Offset *x = a, *y = b;
    if (x->k != y->k) return x->k - y->k;
    if (x->dy != y->dy) return x->dy - y->dy;
    return x->dx - y->dx;
}

/* 1 where the pixel belongs to the set and has a background 8-neighbour, the image being
   extended by repeating its edge: the set minus its 3x3 erosion, computed separably
   (`tmp` holds the horizontal pass). */
static void surface(const uint8_t *m, uint8_t *s, uint8_t *tmp, int h, int w) {
    for (int r = 0; r < h; r++) {
        const uint8_t *row = m + (Py_ssize_t)r * w;
        uint8_t *out = tmp + (Py_ssize_t)r * w;
        for (int c = 0; c < w; c++) {
            int left = c > 0 ? row[c - 1] : row[c], right = c + 1 < w ? row[c + 1] : row[c];
            out[c] = (uint8_t)(left & row[c] & right);
        }
    }
    for (int r = 0; r < h; r++) {
        const uint8_t *up = tmp + (Py_ssize_t)(r > 0 ? r - 1 : r) * w;
        const uint8_t *mid = tmp + (Py_ssize_t)r * w;
        const uint8_t *down = tmp + (Py_ssize_t)(r + 1 < h ? r + 1 : r) * w;
        const uint8_t *row = m + (Py_ssize_t)r * w;
        uint8_t *out = s + (Py_ssize_t)r * w;
        for (int c = 0; c < w; c++) out[c] = (uint8_t)(row[c] & !(up[c] & mid[c] & down[c]));
    }
}

/* Squared distance from (r, c) to the nearest target pixel; exact. */
static long long nearest(const uint8_t *target, int h, int w, int r, int c, const Offset *offs, int n_offs,
                         const int *pts, Py_ssize_t n_pts) {
    for (int j = 0; j < n_offs; j++) {
        int rr = r + offs[j].dy, cc = c + offs[j].dx;
        if (rr < 0 || rr >= h || cc < 0 || cc >= w) continue;
        if (target[(Py_ssize_t)rr * w + cc]) return offs[j].k;
    }
    long long best = -1;
    for (Py_ssize_t j = 0; j < n_pts; j++) {
        long long dy = pts[2 * j] - r, dx = pts[2 * j + 1] - c;
        long long k = dy * dy + dx * dx;
        if (best < 0 || k < best) best = k;
    }
    return best;
}

/* Extend a (r0, r1, c0, c1) box to pixel (r, c); rows arrive in increasing order. */
static inline void grow_box(int *bx, int r, int c) {
    if (r < bx[0]) bx[0] = r;
    bx[1] = r;
    if (c < bx[2]) bx[2] = c;
    if (c > bx[3]) bx[3] = c;
}

/* Scratch memory reused across calls (the GIL is held throughout). */
static uint8_t *scratch = NULL;
static size_t scratch_size = 0;

static uint8_t *scratch_for(size_t size) {
    if (size > scratch_size) {
        free(scratch);
        scratch = malloc(size);
        scratch_size = scratch ? size : 0;
    }
    return scratch;
}

typedef struct {
    long long n_p, n_g, n_pg, hd_sq, n_sp, n_sg;
    double total;
} Counts;

/* Distances of one structure inside the region [y0, y1) x [x0, x1) of the frame.
   Returns 0, or -1 with a Python error set. */
static int region_distances(const uint8_t *pl, const uint8_t *gl, int w, const uint8_t *member, int y0, int y1,
                            int x0, int x1, const Offset *offs, int n_offs, Counts *out) {
    int rh = y1 - y0, rw = x1 - x0;
    Py_ssize_t area = (Py_ssize_t)rh * rw;
    uint8_t *buf = scratch_for((size_t)area * 5);
    int *pts_p = NULL, *pts_g = NULL;
    if (!buf) { PyErr_NoMemory(); return -1; }
    uint8_t *p = buf, *g = buf + area, *sp = buf + 2 * area, *sg = buf + 3 * area, *tmp = buf + 4 * area;
    for (int r = 0; r < rh; r++)
        for (int c = 0; c < rw; c++) {
            Py_ssize_t src = (Py_ssize_t)(r + y0) * w + (c + x0), i = (Py_ssize_t)r * rw + c;
            p[i] = member[pl[src]];
            g[i] = member[gl[src]];
        }
    /* Edge replication at the region's border is exact: where the region stops inside the
       frame, its margin is background anyway. */
    surface(p, sp, tmp, rh, rw);
    surface(g, sg, tmp, rh, rw);
    long long n_sp = 0, n_sg = 0;
    for (Py_ssize_t i = 0; i < area; i++) {
        n_sp += sp[i];
        n_sg += sg[i];
    }
    pts_p = malloc(sizeof(int) * 2 * (size_t)(n_sp + 1));
    pts_g = malloc(sizeof(int) * 2 * (size_t)(n_sg + 1));
    if (!pts_p || !pts_g) {
        free(pts_p);
        free(pts_g);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t ip = 0, ig = 0;
    for (int r = 0; r < rh; r++)
        for (int c = 0; c < rw; c++) {
            Py_ssize_t i = (Py_ssize_t)r * rw + c;
            if (sp[i]) { pts_p[2 * ip] = r; pts_p[2 * ip + 1] = c; ip++; }
            if (sg[i]) { pts_g[2 * ig] = r; pts_g[2 * ig + 1] = c; ig++; }
        }
    long long hd_sq = 0;
    double total = 0.0;
    for (int r = 0; r < rh; r++) {
        for (int c = 0; c < rw; c++) {
            Py_ssize_t i = (Py_ssize_t)r * rw + c;
            /* to G's surface: from P's surface, and from P outside G (outside a set, the
               distance to the set is the distance to its surface) */
            if (n_sg && (sp[i] || (p[i] && !g[i]))) {
                long long k = nearest(sg, rh, rw, r, c, offs, n_offs, pts_g, n_sg);
                if (sp[i]) total += (double)(float)sqrt((double)k); /* float32, as SimpleITK's map */
                if (!g[i] && k > hd_sq) hd_sq = k; /* HD: only pixels outside G */
            }
            if (n_sp && (sg[i] || (g[i] && !p[i]))) {
                long long k = nearest(sp, rh, rw, r, c, offs, n_offs, pts_p, n_sp);
                if (sg[i]) total += (double)(float)sqrt((double)k);
                if (!p[i] && k > hd_sq) hd_sq = k; /* HD: only pixels outside P */
            }
        }
    }
    free(pts_p);
    free(pts_g);
    out->hd_sq = hd_sq;
    out->total = total;
    out->n_sp = n_sp;
    out->n_sg = n_sg;
    return 0;
}

static PyObject *structure_counts(PyObject *self, PyObject *args) {
    Py_buffer pb, gb;
    int h, w, radius;
    PyObject *bits_seq;
    if (!PyArg_ParseTuple(args, "y*y*iiOi", &pb, &gb, &h, &w, &bits_seq, &radius)) return NULL;
    PyObject *result = NULL, *seq = NULL;
    Offset *offs = NULL;
    Py_ssize_t n = (Py_ssize_t)h * w;
    if (h <= 0 || w <= 0 || pb.len != n || gb.len != n || radius < 0 || radius > 64) {
        PyErr_SetString(PyExc_ValueError, "structure_counts: buffers must hold height*width uint8 labels");
        goto done;
    }
    seq = PySequence_Fast(bits_seq, "structure_counts: bits must be a sequence of ints");
    if (!seq) goto done;
    const uint8_t *pl = pb.buf, *gl = gb.buf;

    /* pass 1, once for every structure: joint label histogram and per-label boxes */
    long long hist[MAX_LABELS][MAX_LABELS];
    memset(hist, 0, sizeof(hist));
    int box[2][MAX_LABELS][4]; /* [pred/gt][label] = r0, r1, c0, c1 */
    int too_large = 0;
    for (int k = 0; k < 2; k++)
        for (int v = 0; v < MAX_LABELS; v++) {
            box[k][v][0] = h;
            box[k][v][1] = -1;
            box[k][v][2] = w;
            box[k][v][3] = -1;
        }
    for (int r = 0; r < h; r++) {
        const uint8_t *prow = pl + (Py_ssize_t)r * w, *grow = gl + (Py_ssize_t)r * w;
        for (int c = 0; c < w; c++) {
            int a = prow[c], b = grow[c];
            if ((a | b) >= MAX_LABELS) {
                too_large = 1;
                continue;
            }
            hist[a][b]++;
            if (a) grow_box(box[0][a], r, c);
            if (b) grow_box(box[1][b], r, c);
        }
    }
    if (too_large) {
        PyErr_SetString(PyExc_ValueError, "structure_counts: labels must be below 16");
        goto done;
    }
    int side = 2 * radius + 1, n_offs = 0;
    offs = malloc(sizeof(Offset) * (size_t)side * side);
    if (!offs) { PyErr_NoMemory(); goto done; }
    for (int dy = -radius; dy <= radius; dy++)
        for (int dx = -radius; dx <= radius; dx++)
            if (dy * dy + dx * dx <= radius * radius) {
                offs[n_offs].dy = dy;
                offs[n_offs].dx = dx;
                offs[n_offs].k = dy * dy + dx * dx;
                n_offs++;
            }
    qsort(offs, (size_t)n_offs, sizeof(Offset), cmp_offset);

    Py_ssize_t n_struct = PySequence_Fast_GET_SIZE(seq);
    result = PyList_New(n_struct);
    if (!result) goto done;
    for (Py_ssize_t j = 0; j < n_struct; j++) {
        unsigned long bits = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(seq, j));
        if (PyErr_Occurred() || bits == 0 || bits > 0xFFFFFFFFul) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "structure_counts: bits must be a non-zero label mask");
            Py_CLEAR(result);
            goto done;
        }
        uint8_t member[256] = {0};
        for (int v = 1; v < MAX_LABELS; v++) member[v] = (uint8_t)((bits >> v) & 1ul);
        Counts cnt = {0, 0, 0, 0, 0, 0, 0.0};
        int r0 = h, r1 = -1, c0 = w, c1 = -1;
        for (int a = 0; a < MAX_LABELS; a++)
            for (int b = 0; b < MAX_LABELS; b++) {
                long long x = hist[a][b];
                if (!x) continue;
                cnt.n_p += member[a] ? x : 0;
                cnt.n_g += member[b] ? x : 0;
                cnt.n_pg += (member[a] && member[b]) ? x : 0;
            }
        for (int k = 0; k < 2; k++)
            for (int v = 1; v < MAX_LABELS; v++) {
                if (!member[v] || box[k][v][1] < 0) continue;
                if (box[k][v][0] < r0) r0 = box[k][v][0];
                if (box[k][v][1] > r1) r1 = box[k][v][1];
                if (box[k][v][2] < c0) c0 = box[k][v][2];
                if (box[k][v][3] > c1) c1 = box[k][v][3];
            }
        if (cnt.n_p && cnt.n_g) {
            int y0 = r0 > 0 ? r0 - 1 : 0, y1 = r1 + 2 < h ? r1 + 2 : h;
            int x0 = c0 > 0 ? c0 - 1 : 0, x1 = c1 + 2 < w ? c1 + 2 : w;
            if (region_distances(pl, gl, w, member, y0, y1, x0, x1, offs, n_offs, &cnt) < 0) {
                Py_CLEAR(result);
                goto done;
            }
        }
        PyObject *item = Py_BuildValue("LLLLdLL", cnt.n_p, cnt.n_g, cnt.n_pg, cnt.hd_sq, cnt.total, cnt.n_sp, cnt.n_sg);
        if (!item) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, j, item);
    }
done:
    Py_XDECREF(seq);
    free(offs);
    PyBuffer_Release(&pb);
    PyBuffer_Release(&gb);
    return result;
}

static PyMethodDef methods[] = {
    {"structure_counts", structure_counts, METH_VARARGS, "Dice counts, HD^2 and surface distance sums of one structure."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastmetrics", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastmetrics(void) { return PyModule_Create(&module); }
