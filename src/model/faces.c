/* face-api.js's detect -> landmarks -> aligned descriptor pipeline (include/cnnb/faces.h).
 * Every rule below is face-api.js 1.7.15's (src/tinyYolov2/TinyYolov2Base.ts, dom/NetInput.ts,
 * ops/padToSquare.ts, faceLandmarkNet/FaceLandmark68NetBase.ts, classes/FaceLandmarks.ts,
 * classes/Box.ts), including its quirks, because agreeing with it is the point: landmarks are
 * shifted by the unclipped box while the crop was clipped, and the dlib box is bounded by the
 * landmark crop's size. Geometry is computed in double as JavaScript does; pixels and network
 * numbers in float32 as tfjs does. */
#include "cnnb/faces.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/ckpt.h"
#include "cnnb/detect.h"
#include "cnnb/error.h"
#include "cnnb/match.h"
#include "cnnb/net.h"
#include "layers/heads.h"
#include "model/stem.h"

struct cnnb_faces {
  cnnb_faces_opts o;
  cnnb_net *net[3];            /* detector, landmarks, descriptor */
  const cnnb_layer *region;    /* the detector's [region] head */
  char *path[3];
  char hash[3][65];
  float *x;                    /* input batch, sized for the largest of the three */
  float *dx;                   /* descriptor inputs of a call's faces (dxcap of them) */
  unsigned char *dxok;         /* whether each had a non-empty crop */
  size_t dxcap;
  cnnb_det *dets;
  size_t ndets;
  cnnb_stem stem;        /* the detector's first convolution and pool, fused */
};

cnnb_faces_opts cnnb_faces_opts_default(void)
{
  cnnb_faces_opts o = {416, 0.5f, 0.4f, 8, 0};
  return o;
}

static int file_sha256(const char *path, char hex[65])
{
  FILE *f = fopen(path, "rb");
  if (!f) return cnnb_error(CNNB_EIO, "%s: %s", path, strerror(errno));
  cnnb_sha256 s;
  cnnb_sha256_init(&s);
  unsigned char buf[1 << 16], dig[32];
  size_t k;
  while ((k = fread(buf, 1, sizeof buf, f)) > 0) cnnb_sha256_update(&s, buf, k);
  int bad = ferror(f);
  fclose(f);
  if (bad) return cnnb_error(CNNB_EIO, "%s: read error", path);
  cnnb_sha256_final(&s, dig, hex);
  return 0;
}

/* A network from a checkpoint that holds its own model text. */
static int load_model(cnnb_net **net, const char *path, int size, int batch, int quiet)
{
  char *text = cnnb_ckpt_model_text(path);
  if (!text) return cnnb_error_prefix(CNNB_EIO, "face model: ");
  cnnb_net_opts no = cnnb_net_opts_default();
  no.max_batch = batch;
  no.quiet = quiet;
  if (size > 0) no.h = no.w = size;
  int rc = cnnb_net_from_string(net, text, path, &no);
  free(text);
  if (!rc) rc = cnnb_ckpt_load(path, *net, NULL, NULL);
  if (!rc && !cnnb_net_input_norm(*net, NULL, NULL))
    rc = cnnb_error(CNNB_ECFG, "%s: the model has no input_mean/input_scale (not a face-api model)", path);
  if (!rc && (*net)->in.c != 3) rc = cnnb_error(CNNB_ESHAPE, "%s: input has %d channels, not 3", path, (*net)->in.c);
  return rc;
}

int cnnb_faces_open(cnnb_faces **out, const char *dir, const cnnb_faces_opts *o)
{
  static const char *names[3] = {CNNB_FACE_DETECTOR, CNNB_FACE_LANDMARKS, CNNB_FACE_DESCRIPTOR};
  *out = NULL;
  if (o->input_size < 32 || o->input_size % 32)
    return cnnb_error(CNNB_EINVAL, "faces: input size %d is not a positive multiple of 32", o->input_size);
  if (o->max_batch < 1 || o->max_batch > 64)
    return cnnb_error(CNNB_EINVAL, "faces: batch %d outside 1..64", o->max_batch);
  cnnb_faces *f = calloc(1, sizeof *f);
  if (!f) return cnnb_error(CNNB_ENOMEM, "faces: out of memory");
  f->o = *o;
  int rc = 0;
  for (int k = 0; k < 3 && !rc; k++) {
    size_t len = strlen(dir) + strlen(names[k]) + 2;
    if (!(f->path[k] = malloc(len))) rc = cnnb_error(CNNB_ENOMEM, "faces: out of memory");
    else snprintf(f->path[k], len, "%s/%s", dir, names[k]);
    if (!rc) rc = file_sha256(f->path[k], f->hash[k]);
    /* the detector and the landmark net take one photo or crop per forward: their early maps
     * (414 x 414 x 16, 112 x 112 x 32) fill a GEMM alone, and one sample's activations (31 and
     * 8 MiB) are touched again while still in cache instead of 8 samples' being faulted in and
     * swept through; the descriptor's late 5 x 5 and 9 x 9 maps need the batch. Fixed sizes,
     * not the thread count: a layer's algorithm may depend on the batch (Winograd, one GEMM
     * for small maps), and the bytes written must not depend on ranks or threads. */
    const int batch = k == 2 ? o->max_batch : 1;
    if (!rc) rc = load_model(&f->net[k], f->path[k], k == 0 ? o->input_size : 0, batch, o->quiet);
  }
  if (!rc) {
    for (int i = 0; i < f->net[0]->n && !f->region; i++) {
      int na, nc;
      if (cnnb_region_info(&f->net[0]->layers[i], &na, &nc)) f->region = &f->net[0]->layers[i];
    }
    if (!f->region) rc = cnnb_error(CNNB_ECFG, "%s: no [region] layer: not a face detector", f->path[0]);
    else cnnb_stem_install(&f->stem, f->net[0]);
    const cnnb_layer *lm = rc ? NULL : cnnb_net_output_layer(f->net[1]);
    const cnnb_layer *de = rc ? NULL : cnnb_net_output_layer(f->net[2]);
    if (!rc && cnnb_shape_size(lm->out) != 2 * CNNB_FACE_POINTS)
      rc = cnnb_error(CNNB_ESHAPE, "%s: %zu outputs, not %d landmark coordinates", f->path[1],
                      cnnb_shape_size(lm->out), 2 * CNNB_FACE_POINTS);
    if (!rc && cnnb_shape_size(de->out) != CNNB_FACE_DIM)
      rc = cnnb_error(CNNB_ESHAPE, "%s: %zu outputs, not a %d-d descriptor", f->path[2], cnnb_shape_size(de->out),
                      CNNB_FACE_DIM);
  }
  if (!rc) {
    size_t big = 0; /* the detector's and the landmark net's input (the descriptor's: f->dx) */
    for (int k = 0; k < 2; k++) {
      size_t s = cnnb_shape_size(f->net[k]->in) * (size_t)f->net[k]->max_batch;
      if (s > big) big = s;
    }
    f->ndets = (size_t)f->region->out.h * f->region->out.w * 16 + 1;
    f->x = malloc(sizeof *f->x * big);
    f->dets = malloc(sizeof *f->dets * f->ndets);
    if (!f->x || !f->dets) rc = cnnb_error(CNNB_ENOMEM, "faces: out of memory");
  }
  if (rc) {
    cnnb_faces_close(f);
    return rc;
  }
  *out = f;
  return 0;
}

void cnnb_faces_close(cnnb_faces *f)
{
  if (!f) return;
  if (f->net[0]) cnnb_stem_remove(&f->stem, f->net[0]);
  for (int k = 0; k < 3; k++) {
    cnnb_net_free(f->net[k]);
    free(f->path[k]);
  }
  free(f->x);
  free(f->dx);
  free(f->dxok);
  free(f->dets);
  free(f);
}

const char *cnnb_faces_model_path(const cnnb_faces *f, int k) { return f->path[k]; }
const char *cnnb_faces_model_hash(const cnnb_faces *f, int k) { return f->hash[k]; }

/* Source columns of one block of output columns: byte offsets of the left and right
 * neighbours in the photo's row (-1: padding) and the weight of the right one. */
enum { COLS = 256 };
typedef struct {
  long lo[COLS], ro[COLS];
  float a[COLS];
} col_table;

void cnnb_faces_input(const unsigned char *rgb, int h, int w, int x0, int y0, int cw, int ch, int centre, int size,
                      float *chw)
{
  (void)h;
  const int m = cw > ch ? cw : ch, d = cw > ch ? cw - ch : ch - cw;
  const int after = centre ? (int)floor(d * 0.5 + 0.5) : d, before = d - after;
  const int px = ch > cw ? before : 0, py = cw > ch ? before : 0; /* crop's place in the square */
  const float scale = (float)m / (float)size;                    /* XNNPACK: in / out, float32 */
  const size_t plane = (size_t)size * size;
  col_table t;
  /* the source positions of a column are the same on every row: computed once per block of
   * columns instead of per output value (same float operations, so the same values) */
  for (int c0 = 0; c0 < size; c0 += COLS) {
    const int nc = size - c0 < COLS ? size - c0 : COLS;
    for (int j = 0; j < nc; j++) {
      const float sx = (float)(c0 + j) * scale;
      const int lx = (int)sx, rx = lx + 1 < m ? lx + 1 : m - 1;
      const int rx0 = lx - px, rx1 = rx - px;
      t.a[j] = sx - (float)lx;
      t.lo[j] = rx0 >= 0 && rx0 < cw ? (long)(x0 + rx0) * 3 : -1;
      t.ro[j] = rx1 >= 0 && rx1 < cw ? (long)(x0 + rx1) * 3 : -1;
    }
    for (int oy = 0; oy < size; oy++) {
      const float sy = (float)oy * scale;
      const int ty = (int)sy, by = ty + 1 < m ? ty + 1 : m - 1;
      const float ay = sy - (float)ty;
      const int ry0 = ty - py, ry1 = by - py;
      const unsigned char *r0 = ry0 >= 0 && ry0 < ch ? rgb + (size_t)(y0 + ry0) * w * 3 : NULL;
      const unsigned char *r1 = ry1 >= 0 && ry1 < ch ? rgb + (size_t)(y0 + ry1) * w * 3 : NULL;
      float *o = chw + (size_t)oy * size + c0;
      for (int j = 0; j < nc; j++) {
        const long lo = t.lo[j], ro = t.ro[j];
        const float ax = t.a[j];
        for (int c = 0; c < 3; c++) {
          const float tl = r0 && lo >= 0 ? (float)r0[lo + c] : 0.0f, tr = r0 && ro >= 0 ? (float)r0[ro + c] : 0.0f;
          const float bl = r1 && lo >= 0 ? (float)r1[lo + c] : 0.0f, br = r1 && ro >= 0 ? (float)r1[ro + c] : 0.0f;
          const float tp = tl + (tr - tl) * ax, b = bl + (br - bl) * ax;
          o[c * plane + j] = tp + (b - tp) * ay;
        }
      }
    }
  }
}

static double iou_box(const float *a, const float *b)
{
  const double w = fmax(0.0, fmin((double)a[0] + a[2], (double)b[0] + b[2]) - fmax(a[0], b[0]));
  const double h = fmax(0.0, fmin((double)a[1] + a[3], (double)b[1] + b[3]) - fmax(a[1], b[1]));
  const double in = w * h;
  return in / ((double)a[2] * a[3] + (double)b[2] * b[3] - in);
}

int cnnb_faces_nms(const float *boxes, const float *scores, int n, float iou, int *keep)
{
  /* order: falling score; among equal scores the later box first (face-api sorts ascending with
   * a stable sort and pops from the end) */
  int *ord = keep; /* sorted in place in keep, then compacted */
  for (int i = 0; i < n; i++) ord[i] = i;
  for (int i = 1; i < n; i++) { /* insertion sort: n is small (boxes above the threshold) */
    int v = ord[i], j = i - 1;
    while (j >= 0 && (scores[ord[j]] < scores[v] || (scores[ord[j]] == scores[v] && ord[j] < v))) {
      ord[j + 1] = ord[j];
      j--;
    }
    ord[j + 1] = v;
  }
  int k = 0;
  for (int i = 0; i < n; i++) {
    int drop = 0;
    for (int j = 0; j < k && !drop; j++) drop = iou_box(boxes + 4 * keep[j], boxes + 4 * ord[i]) > iou;
    if (!drop) keep[k++] = ord[i];
  }
  return k;
}

void cnnb_faces_clip(const double b[4], int w, int h, int out[4])
{
  const double x = fmax(b[0], 0.0), y = fmax(b[1], 0.0);
  const double cw = fmin(b[0] + b[2] - x, w - x), ch = fmin(b[1] + b[3] - y, h - y);
  out[0] = (int)floor(x), out[1] = (int)floor(y), out[2] = (int)floor(cw), out[3] = (int)floor(ch);
}

static void centre_of(const float *lm, int a, int b, double *cx, double *cy)
{
  double sx = 0, sy = 0;
  for (int i = a; i < b; i++) sx += lm[2 * i], sy += lm[2 * i + 1];
  *cx = sx / (b - a), *cy = sy / (b - a);
}

void cnnb_faces_align(const float *lm, int cw, int ch, int rect[4])
{
  double c[3][2];
  centre_of(lm, 36, 42, &c[0][0], &c[0][1]); /* left eye */
  centre_of(lm, 42, 48, &c[1][0], &c[1][1]); /* right eye */
  centre_of(lm, 48, 68, &c[2][0], &c[2][1]); /* mouth */
  const double d0 = hypot(c[2][0] - c[0][0], c[2][1] - c[0][1]), d1 = hypot(c[2][0] - c[1][0], c[2][1] - c[1][1]);
  const double size = floor((d0 + d1) / 2 / 0.45);
  const double rx = (c[0][0] + c[1][0] + c[2][0]) / 3, ry = (c[0][1] + c[1][1] + c[2][1]) / 3;
  const double x = floor(fmax(0.0, rx - 0.5 * size)), y = floor(fmax(0.0, ry - 0.43 * size));
  rect[0] = (int)x, rect[1] = (int)y;
  rect[2] = (int)fmin(size, cw + x), rect[3] = (int)fmin(size, ch + y);
}

static int list_grow(cnnb_face_list *l, size_t n)
{
  if (l->n + n <= l->cap) return 0;
  size_t cap = l->cap ? l->cap : 64;
  while (cap < l->n + n) cap *= 2;
  cnnb_face *nf = realloc(l->f, cap * sizeof *nf);
  if (!nf) return cnnb_error(CNNB_ENOMEM, "faces: out of memory for %zu faces", cap);
  l->f = nf, l->cap = cap;
  return 0;
}

/* Detection of photo b of the last detector forward: face-api's extractBoxes + NMS. */
static int detect_one(cnnb_faces *f, int b, int h, int w, cnnb_face_list *out, long long *count)
{
  const int S = f->o.input_size, M = w > h ? w : h;
  const double sc = (double)S / M;
  const double rw = floor(w * sc + 0.5), rh = floor(h * sc + 0.5); /* computeReshapedDimensions */
  *count = 0;
  if (rw < 1 || rh < 1) return 0; /* a photo thinner than 1 pixel at input size: face-api.js throws */
  const double cx = S / rw, cy = S / rh;
  size_t nd = cnnb_region_decode(f->region, b, f->o.min_score, f->dets, f->ndets);
  if (nd > f->ndets) return cnnb_error(CNNB_ESHAPE, "faces: %zu candidate boxes exceed %zu", nd, f->ndets);
  float *boxes = malloc(sizeof *boxes * 5 * (nd ? nd : 1));
  int *keep = malloc(sizeof *keep * (nd ? nd : 1));
  int rc = !boxes || !keep ? cnnb_error(CNNB_ENOMEM, "faces: out of memory") : 0;
  int k = 0;
  if (!rc) {
    float *scores = boxes + 4 * nd;
    for (size_t i = 0; i < nd; i++) {
      const cnnb_det *d = &f->dets[i];
      const double ww = d->box.w * cx, hh = d->box.h * cy;
      const double x = d->box.x * cx - ww / 2, y = d->box.y * cy - hh / 2; /* relative to the photo */
      boxes[4 * i] = (float)(x * w), boxes[4 * i + 1] = (float)(y * h);
      boxes[4 * i + 2] = (float)(ww * w), boxes[4 * i + 3] = (float)(hh * h);
      scores[i] = d->score;
    }
    k = cnnb_faces_nms(boxes, scores, (int)nd, f->o.iou, keep);
    rc = list_grow(out, (size_t)k);
    for (int j = 0; j < k && !rc; j++) {
      cnnb_face *fc = &out->f[out->n++];
      memset(fc, 0, sizeof *fc);
      memcpy(fc->box, boxes + 4 * keep[j], sizeof fc->box);
      fc->score = scores[keep[j]];
    }
  }
  free(boxes);
  free(keep);
  *count = k;
  return rc;
}

/* Landmarks of face fc of a photo, one crop per forward (the net's max_batch is 1): face-api's
 * postProcess maps the outputs, relative to the 112 x 112 input less the centred padding, over
 * the scaled crop, then x crop size, + the unclipped box corner; then dlib's alignment. */
static void landmarks_one(cnnb_faces *f, const unsigned char *rgb, int h, int w, cnnb_face *fc)
{
  cnnb_net *net = f->net[1];
  const int size = net->in.h;
  double bx[4];
  int crop[4];
  for (int k = 0; k < 4; k++) bx[k] = fc->box[k];
  cnnb_faces_clip(bx, w, h, crop);
  const int ok = crop[2] > 0 && crop[3] > 0;
  if (ok) cnnb_faces_input(rgb, h, w, crop[0], crop[1], crop[2], crop[3], 1, size, f->x);
  else memset(f->x, 0, sizeof *f->x * 3 * size * size);
  cnnb_net_normalize_input(net, f->x, 1, f->x);
  const float *o = cnnb_net_forward(net, f->x, 1);
  const double cw = crop[2], ch = crop[3], s = (double)size / (cw > ch ? cw : ch);
  const double iw = cw * s, ih = ch * s;
  const double padx = iw < ih ? fabs(iw - ih) / 2 : 0, pady = ih < iw ? fabs(iw - ih) / 2 : 0;
  for (int k = 0; k < CNNB_FACE_POINTS; k++) {
    const double rx = ((float)(o[2 * k] * (float)size) - (float)padx) / (float)iw;
    const double ry = ((float)(o[2 * k + 1] * (float)size) - (float)pady) / (float)ih;
    fc->landmarks[2 * k] = ok ? (float)(rx * cw + fc->box[0]) : 0.0f;
    fc->landmarks[2 * k + 1] = ok ? (float)(ry * ch + fc->box[1]) : 0.0f;
  }
  cnnb_faces_align(fc->landmarks, crop[2], crop[3], fc->aligned);
}

/* Room for n descriptor inputs in f->dx. */
static int dx_reserve(cnnb_faces *f, size_t n)
{
  if (n <= f->dxcap) return 0;
  const size_t insz = cnnb_shape_size(f->net[2]->in), cap = n > 2 * f->dxcap ? n : 2 * f->dxcap;
  float *p = realloc(f->dx, sizeof *p * insz * cap);
  unsigned char *q = realloc(f->dxok, cap);
  if (p) f->dx = p;
  if (q) f->dxok = q;
  if (!p || !q) return cnnb_error(CNNB_ENOMEM, "faces: out of memory for %zu face crops", n);
  f->dxcap = cap;
  return 0;
}

int cnnb_faces_run_read(cnnb_faces *f, int n, cnnb_faces_read_fn read, void *ctx, const int *h, const int *w,
                        cnnb_face_list *out, long long *counts)
{
  const int S = f->o.input_size;
  const size_t first = out->n;
  cnnb_net *dnet = f->net[2];
  const int dsize = dnet->in.h, B = dnet->max_batch;
  const size_t dinsz = cnnb_shape_size(dnet->in);
  int rc = 0;
  /* 1. photo by photo (the detector's and landmark net's max_batch is 1, cnnb_faces_open):
   * detection, each face's landmarks and alignment, and its descriptor input, cut before the
   * next photo is read, so that one photo buffer serves the whole call */
  for (int i = 0; i < n && !rc; i++) {
    counts[i] = 0;
    const unsigned char *rgb = w[i] > 0 && h[i] > 0 ? read(ctx, i) : NULL;
    if (!rgb) continue; /* an unreadable photo: no faces */
    cnnb_faces_input(rgb, h[i], w[i], 0, 0, w[i], h[i], 0, S, f->x);
    cnnb_net_normalize_input(f->net[0], f->x, 1, f->x);
    cnnb_net_forward(f->net[0], f->x, 1);
    const size_t before = out->n;
    rc = detect_one(f, 0, h[i], w[i], out, &counts[i]);
    if (!rc) rc = dx_reserve(f, out->n - first);
    for (size_t j = before; j < out->n && !rc; j++) {
      cnnb_face *fc = &out->f[j];
      landmarks_one(f, rgb, h[i], w[i], fc);
      double bx[4];
      int crop[4];
      for (int k = 0; k < 4; k++) bx[k] = fc->aligned[k];
      cnnb_faces_clip(bx, w[i], h[i], crop);
      float *x = f->dx + (j - first) * dinsz;
      f->dxok[j - first] = crop[2] > 0 && crop[3] > 0;
      if (f->dxok[j - first]) cnnb_faces_input(rgb, h[i], w[i], crop[0], crop[1], crop[2], crop[3], 1, dsize, x);
      else memset(x, 0, sizeof *x * dinsz);
    }
  }
  if (rc) return rc;
  /* 2. the descriptors of all the call's faces, max_batch crops per forward (the late 5 x 5
   * and 9 x 9 maps need the batch); face-api gives a zero descriptor to an empty crop */
  const size_t nf = out->n - first;
  for (size_t a = 0; a < nf; a += (size_t)B) {
    const int m = nf - a < (size_t)B ? (int)(nf - a) : B;
    float *x = f->dx + a * dinsz;
    cnnb_net_normalize_input(dnet, x, m, x);
    const float *y = cnnb_net_forward(dnet, x, m);
    for (int i = 0; i < m; i++) {
      cnnb_face *fc = &out->f[first + a + (size_t)i];
      if (f->dxok[a + (size_t)i]) memcpy(fc->descriptor, y + (size_t)i * CNNB_FACE_DIM, sizeof fc->descriptor);
      else memset(fc->descriptor, 0, sizeof fc->descriptor);
    }
  }
  return 0;
}

static const unsigned char *read_array(void *ctx, int i) { return ((const unsigned char *const *)ctx)[i]; }

int cnnb_faces_run(cnnb_faces *f, int n, const unsigned char *const *rgb, const int *h, const int *w,
                   cnnb_face_list *out, long long *counts)
{
  return cnnb_faces_run_read(f, n, read_array, (void *)rgb, h, w, out, counts);
}
