/* TF.js weights manifests into cnn-batch parameters (include/cnnb/tfjs.h). Three steps: read the
 * manifest (io/json.h) and every group's shards into dequantized float tensors; group tensors
 * into units by name; fill the model's parameter layers unit by unit with reordered copies. */
#include "cnnb/tfjs.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/ckpt.h"
#include "cnnb/error.h"
#include "io/json.h"

#define TFJS_MAX_MANIFEST ((size_t)64 << 20)

typedef struct tfjs_tensor {
  char *name;
  int ndim;
  long dims[4];
  size_t count;
  float *data;
  int used;
} tfjs_tensor;

typedef struct tfjs_set {
  tfjs_tensor *t;
  size_t n;
  size_t total; /* values */
} tfjs_set;

static void set_free(tfjs_set *s)
{
  for (size_t i = 0; i < s->n; i++) {
    free(s->t[i].name);
    free(s->t[i].data);
  }
  free(s->t);
  memset(s, 0, sizeof *s);
}

static void shape_str(char *buf, size_t n, int ndim, const long *d)
{
  size_t k = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%ld", i ? "," : "", d[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
}

/* Whole file into memory; *len its size. limit 0: no limit. */
static int slurp(const char *path, const char *what, size_t limit, unsigned char **out, size_t *len)
{
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return cnnb_error(CNNB_EIO, "%s: cannot open %s", path, what);
  long sz = -1;
  if (fseek(f, 0, SEEK_END) == 0) sz = ftell(f);
  if (sz < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return cnnb_error(CNNB_EIO, "%s: cannot read %s", path, what);
  }
  if (limit && (size_t)sz > limit) {
    fclose(f);
    return cnnb_error(CNNB_EIO, "%s: %s of %ld bytes is larger than %zu", path, what, sz, limit);
  }
  unsigned char *b = malloc((size_t)sz + 1);
  if (!b) {
    fclose(f);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory for %ld bytes", path, sz);
  }
  size_t got = fread(b, 1, (size_t)sz, f);
  fclose(f);
  if (got != (size_t)sz) {
    free(b);
    return cnnb_error(CNNB_EIO, "%s: read %zu of %ld bytes", path, got, sz);
  }
  b[sz] = 0;
  *out = b;
  *len = (size_t)sz;
  return 0;
}

/* Bytes per stored value, 0 for an unsupported dtype. */
static int stored_size(const char *dtype)
{
  if (!strcmp(dtype, "float32")) return 4;
  if (!strcmp(dtype, "uint8")) return 1;
  if (!strcmp(dtype, "uint16")) return 2;
  return 0;
}

static int name_role(const char *name, char *prefix, size_t n);

typedef struct tfjs_spec {
  const cnnb_json *name, *shape;
  const char *qtype; /* NULL: float32 stored */
  double scale, min;
  size_t count, bytes;
} tfjs_spec;

/* Validates one entry of a group's "weights" list. */
static int read_spec(const char *mpath, const cnnb_json *w, tfjs_spec *sp, tfjs_tensor *t)
{
  memset(sp, 0, sizeof *sp);
  if (w->type != CNNB_JSON_OBJECT)
    return cnnb_error(CNNB_EIO, "%s:%d: a weights entry must be an object", mpath, w->line);
  const cnnb_json *name = cnnb_json_get(w, "name"), *shape = cnnb_json_get(w, "shape"),
                  *dtype = cnnb_json_get(w, "dtype"), *q = cnnb_json_get(w, "quantization");
  if (!name || name->type != CNNB_JSON_STRING || !name->str[0] || strlen(name->str) != name->len)
    return cnnb_error(CNNB_EIO, "%s:%d: weights entry without a string \"name\"", mpath, w->line);
  const char *nm = name->str;
  char prefix[256];
  if (name_role(nm, prefix, sizeof prefix) < 0)
    return cnnb_error(CNNB_EIO,
                      "%s:%d: tensor '%s': unknown role (names end in filters, bias, depthwise_filter, "
                      "pointwise_filter, weights, conv/filters, conv/bias, scale/weights or scale/biases)",
                      mpath, w->line, nm);
  if (!shape || shape->type != CNNB_JSON_ARRAY || shape->n > 4)
    return cnnb_error(CNNB_EIO, "%s:%d: tensor '%s': \"shape\" must be an array of at most 4 sizes", mpath, w->line, nm);
  if (!dtype || dtype->type != CNNB_JSON_STRING || strcmp(dtype->str, "float32"))
    return cnnb_error(CNNB_EIO, "%s:%d: tensor '%s': dtype %s%s%s is not supported (only float32)", mpath, w->line, nm,
                      dtype && dtype->type == CNNB_JSON_STRING ? "'" : "",
                      dtype && dtype->type == CNNB_JSON_STRING ? dtype->str : "missing",
                      dtype && dtype->type == CNNB_JSON_STRING ? "'" : "");
  size_t count = 1;
  t->ndim = (int)shape->n;
  for (size_t i = 0; i < shape->n; i++) {
    double d = shape->items[i].num;
    if (shape->items[i].type != CNNB_JSON_NUMBER || d < 0 || d > (1 << 30) || d != (double)(long)d)
      return cnnb_error(CNNB_EIO, "%s:%d: tensor '%s': shape entry %zu is not a size", mpath, w->line, nm, i);
    t->dims[i] = (long)d;
    count *= (size_t)d;
    if (count > ((size_t)1 << 32)) return cnnb_error(CNNB_EIO, "%s:%d: tensor '%s' is too large", mpath, w->line, nm);
  }
  int per = 4;
  if (q) {
    const cnnb_json *qd = cnnb_json_get(q, "dtype"), *sc = cnnb_json_get(q, "scale"), *mn = cnnb_json_get(q, "min");
    if (q->type != CNNB_JSON_OBJECT || !qd || qd->type != CNNB_JSON_STRING)
      return cnnb_error(CNNB_EIO, "%s:%d: tensor '%s': \"quantization\" needs a dtype", mpath, q->line, nm);
    if (strcmp(qd->str, "uint8") && strcmp(qd->str, "uint16"))
      return cnnb_error(CNNB_EIO, "%s:%d: tensor '%s': quantization dtype '%s' is not supported (uint8, uint16)", mpath,
                        q->line, nm, qd->str);
    if (!sc || sc->type != CNNB_JSON_NUMBER || !mn || mn->type != CNNB_JSON_NUMBER)
      return cnnb_error(CNNB_EIO, "%s:%d: tensor '%s': quantization needs numbers \"scale\" and \"min\"", mpath,
                        q->line, nm);
    sp->qtype = qd->str;
    sp->scale = sc->num;
    sp->min = mn->num;
    per = stored_size(qd->str);
  }
  sp->name = name;
  sp->shape = shape;
  sp->count = count;
  sp->bytes = count * (size_t)per;
  t->count = count;
  return 0;
}

static void dequantize(const tfjs_spec *sp, const unsigned char *b, float *out)
{
  if (!sp->qtype) {
    for (size_t i = 0; i < sp->count; i++) { /* little-endian IEEE-754, as TF.js writes */
      uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 | (uint32_t)b[4 * i + 2] << 16 |
                   (uint32_t)b[4 * i + 3] << 24;
      memcpy(&out[i], &u, 4);
    }
  } else if (!strcmp(sp->qtype, "uint8")) {
    for (size_t i = 0; i < sp->count; i++) out[i] = (float)(b[i] * sp->scale + sp->min);
  } else {
    for (size_t i = 0; i < sp->count; i++)
      out[i] = (float)(((unsigned)b[2 * i] | (unsigned)b[2 * i + 1] << 8) * sp->scale + sp->min);
  }
}

/* The manifest's folder joined with a shard path. */
static char *shard_path(const char *mpath, const char *rel)
{
  const char *slash = strrchr(mpath, '/');
  size_t dl = (rel[0] == '/' || !slash) ? 0 : (size_t)(slash - mpath) + 1;
  char *p = malloc(dl + strlen(rel) + 1);
  if (!p) return NULL;
  memcpy(p, mpath, dl);
  strcpy(p + dl, rel);
  return p;
}

/* One group: its specs, then its shards concatenated, sliced into tensors. */
static int read_group(const char *mpath, const cnnb_json *g, tfjs_set *set)
{
  const cnnb_json *paths = cnnb_json_get(g, "paths"), *ws = cnnb_json_get(g, "weights");
  if (g->type != CNNB_JSON_OBJECT || !paths || paths->type != CNNB_JSON_ARRAY || !ws || ws->type != CNNB_JSON_ARRAY)
    return cnnb_error(CNNB_EIO, "%s:%d: a manifest group needs \"paths\" and \"weights\" arrays", mpath, g->line);
  for (size_t i = 0; i < paths->n; i++)
    if (paths->items[i].type != CNNB_JSON_STRING || !paths->items[i].str[0])
      return cnnb_error(CNNB_EIO, "%s:%d: \"paths\" entries must be file names", mpath, paths->items[i].line);
  tfjs_spec *specs = calloc(ws->n ? ws->n : 1, sizeof *specs);
  tfjs_tensor *nt = realloc(set->t, (set->n + ws->n + 1) * sizeof *set->t);
  if (!specs || !nt) {
    free(specs);
    if (nt) set->t = nt;
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory", mpath);
  }
  set->t = nt;
  size_t need = 0;
  int rc = 0;
  size_t first = set->n;
  for (size_t i = 0; i < ws->n && !rc; i++) {
    tfjs_tensor *t = &set->t[set->n];
    memset(t, 0, sizeof *t);
    rc = read_spec(mpath, &ws->items[i], &specs[i], t);
    if (rc) break;
    t->name = strdup(specs[i].name->str);
    t->data = malloc((t->count ? t->count : 1) * sizeof(float));
    set->n++;
    if (!t->name || !t->data) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory for tensor '%s'", mpath, specs[i].name->str);
    for (size_t j = 0; j < set->n - 1 && !rc; j++)
      if (!strcmp(set->t[j].name, t->name))
        rc = cnnb_error(CNNB_EIO, "%s:%d: tensor '%s' appears twice", mpath, ws->items[i].line, t->name);
    need += specs[i].bytes;
    set->total += t->count;
  }
  /* shards in order; a tensor may straddle two of them */
  unsigned char *buf = NULL;
  size_t have = 0;
  if (!rc) {
    buf = malloc(need ? need : 1);
    if (!buf) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory for %zu bytes of weights", mpath, need);
  }
  for (size_t i = 0; i < paths->n && !rc; i++) {
    char *sp = shard_path(mpath, paths->items[i].str);
    unsigned char *b = NULL;
    size_t len = 0;
    if (!sp) {
      rc = cnnb_error(CNNB_ENOMEM, "out of memory");
      break;
    }
    rc = slurp(sp, "weight shard", 0, &b, &len);
    if (!rc) {
      const int last = i + 1 == paths->n;
      if (have + len > need)
        rc = cnnb_error(CNNB_EIO, "%s: weight shard has %zu bytes but manifest %s describes %zu%s", sp, len, mpath,
                        need > have ? need - have : 0, last ? "" : " before its next shard");
      else if (last && have + len < need)
        rc = cnnb_error(CNNB_EIO, "%s: weight shard is truncated: %zu bytes, manifest %s needs %zu", sp, len, mpath,
                        need - have);
      else
        memcpy(buf + have, b, len), have += len;
    }
    free(b);
    free(sp);
  }
  if (!rc && have < need) /* no shards at all */
    rc = cnnb_error(CNNB_EIO, "%s:%d: a group lists no weight shards for its %zu bytes", mpath, g->line, need);
  size_t off = 0;
  for (size_t i = 0; i < ws->n && !rc; i++) {
    dequantize(&specs[i], buf + off, set->t[first + i].data);
    off += specs[i].bytes;
  }
  free(buf);
  free(specs);
  return rc;
}

static int read_manifest(const char *mpath, tfjs_set *set)
{
  memset(set, 0, sizeof *set);
  unsigned char *text;
  size_t len;
  int rc = slurp(mpath, "weights manifest", TFJS_MAX_MANIFEST, &text, &len);
  if (rc) return rc;
  cnnb_json *doc;
  rc = cnnb_json_parse(&doc, (const char *)text, len, mpath);
  free(text);
  if (rc) return rc;
  if (doc->type != CNNB_JSON_ARRAY || !doc->n)
    rc = cnnb_error(CNNB_EIO, "%s: a weights manifest is a non-empty array of groups (got %s%s)", mpath,
                    doc->type == CNNB_JSON_ARRAY ? "an empty " : "", cnnb_json_type_name(doc->type));
  for (size_t i = 0; i < doc->n && !rc; i++) rc = read_group(mpath, &doc->items[i], set);
  cnnb_json_free(doc);
  if (rc) set_free(set);
  return rc;
}

/* ---- mapping ---------------------------------------------------------------------------- */

enum { ROLE_FILTERS, ROLE_BIAS, ROLE_SCALE_W, ROLE_SCALE_B, ROLE_DW, ROLE_PW, ROLE_FC_W, ROLE_COUNT };

typedef struct tfjs_unit {
  char prefix[256];
  tfjs_tensor *role[ROLE_COUNT];
} tfjs_unit;

/* Splits a tensor name into its unit prefix and role (tfjs.h). Returns the role or -1. */
static int name_role(const char *name, char *prefix, size_t n)
{
  static const struct {
    const char *suffix;
    int role;
  } map[] = {{"/conv/filters", ROLE_FILTERS}, {"/conv/bias", ROLE_BIAS},  {"/scale/weights", ROLE_SCALE_W},
             {"/scale/biases", ROLE_SCALE_B}, {"/filters", ROLE_FILTERS}, {"/bias", ROLE_BIAS},
             {"/depthwise_filter", ROLE_DW},  {"/pointwise_filter", ROLE_PW}, {"/weights", ROLE_FC_W}};
  size_t len = strlen(name);
  for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
    size_t sl = strlen(map[i].suffix);
    if (len > sl && !strcmp(name + len - sl, map[i].suffix)) {
      snprintf(prefix, n, "%.*s", (int)(len - sl), name);
      return map[i].role;
    }
  }
  if (!strchr(name, '/')) { /* a lone matrix: the recognition net's bias-free "fc" */
    snprintf(prefix, n, "%s", name);
    return ROLE_FC_W;
  }
  return -1;
}

static int group_units(const char *mpath, tfjs_set *set, tfjs_unit **out, size_t *nout)
{
  tfjs_unit *u = calloc(set->n ? set->n : 1, sizeof *u);
  if (!u) return cnnb_error(CNNB_ENOMEM, "out of memory");
  size_t nu = 0;
  for (size_t i = 0; i < set->n; i++) {
    char prefix[256];
    int r = name_role(set->t[i].name, prefix, sizeof prefix); /* known: read_spec checked it */
    size_t k = 0;
    while (k < nu && strcmp(u[k].prefix, prefix)) k++;
    if (k == nu) snprintf(u[nu++].prefix, sizeof u->prefix, "%s", prefix);
    if (u[k].role[r]) {
      int rc = cnnb_error(CNNB_EIO, "%s: tensors '%s' and '%s' play the same role in unit '%s'", mpath,
                          u[k].role[r]->name, set->t[i].name, prefix);
      free(u);
      return rc;
    }
    u[k].role[r] = &set->t[i];
  }
  *out = u;
  *nout = nu;
  return 0;
}

typedef struct map_ctx {
  const char *mpath;
  cnnb_net *net;
  int next; /* next layer to look at */
} map_ctx;

/* Next layer that has parameters, or NULL. */
static cnnb_layer *next_param_layer(map_ctx *m)
{
  while (m->next < m->net->n && m->net->layers[m->next].nparam == 0) m->next++;
  return m->next < m->net->n ? &m->net->layers[m->next++] : NULL;
}

static int check_shape(map_ctx *m, const tfjs_tensor *t, const cnnb_layer *l, int ndim, const long *want)
{
  int ok = t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++) ok = t->dims[i] == want[i];
  if (ok) return 0;
  char a[96], b[96];
  shape_str(a, sizeof a, t->ndim, t->dims);
  shape_str(b, sizeof b, ndim, want);
  return cnnb_error(CNNB_ESHAPE, "%s: tensor '%s' has shape %s but layer %d [%s] of %s needs %s", m->mpath, t->name, a,
                    l->index, cnnb_layer_kind(l), m->net->cfg.path, b);
}

static int want_layer(map_ctx *m, const tfjs_unit *u, const tfjs_tensor *first, const char *kind, cnnb_layer **out)
{
  cnnb_layer *l = next_param_layer(m);
  if (!l)
    return cnnb_error(CNNB_ESHAPE,
                      "%s: tensor '%s' is left over: %s has no further layer with parameters for unit '%s' "
                      "(the model has %zu trainable parameters)",
                      m->mpath, first->name, m->net->cfg.path, u->prefix, cnnb_net_num_trainable(m->net));
  if (strcmp(cnnb_layer_kind(l), kind))
    return cnnb_error(CNNB_ESHAPE, "%s: tensor '%s' (unit '%s') needs a [%s] layer but layer %d of %s is [%s]", m->mpath,
                      first->name, u->prefix, kind, l->index, m->net->cfg.path, cnnb_layer_kind(l));
  if (cnnb_layer_find_param(l, "rolling_mean"))
    return cnnb_error(CNNB_ESHAPE, "%s: layer %d of %s has batch_normalize=1, which TF.js unit '%s' does not have",
                      m->mpath, l->index, m->net->cfg.path, u->prefix);
  *out = l;
  return 0;
}

static int put_bias(map_ctx *m, const tfjs_tensor *t, cnnb_layer *l)
{
  cnnb_param *b = cnnb_layer_find_param(l, "biases");
  if (!b) return cnnb_error(CNNB_ESHAPE, "%s: layer %d of %s has no biases", m->mpath, l->index, m->net->cfg.path);
  if (!t) {
    memset(b->data, 0, b->count * sizeof(float));
    return 0;
  }
  long want[1] = {(long)b->count};
  int rc = check_shape(m, t, l, 1, want);
  if (rc) return rc;
  memcpy(b->data, t->data, b->count * sizeof(float));
  ((tfjs_tensor *)t)->used = 1;
  return 0;
}

/* filters [k,k,C,F] -> weights [F, C, k, k] of a groups=1 convolution, folding an optional
 * per-channel scale (y = (conv + b) * s + beta). */
static int map_conv(map_ctx *m, tfjs_unit *u)
{
  tfjs_tensor *f = u->role[ROLE_FILTERS], *s = u->role[ROLE_SCALE_W], *sb = u->role[ROLE_SCALE_B];
  cnnb_layer *l;
  int rc = want_layer(m, u, f, "convolutional", &l);
  if (rc) return rc;
  cnnb_param *w = cnnb_layer_find_param(l, "weights");
  const long F = w->dims[0], Cg = w->dims[1], k = w->dims[2];
  if (Cg != l->in.c)
    return cnnb_error(CNNB_ESHAPE, "%s: tensor '%s' is a full convolution but layer %d of %s has groups=%d", m->mpath,
                      f->name, l->index, m->net->cfg.path, (int)(l->in.c / Cg));
  long want[4] = {k, k, Cg, F};
  if ((rc = check_shape(m, f, l, 4, want))) return rc;
  for (long o = 0; o < F; o++)
    for (long c = 0; c < Cg; c++)
      for (long i = 0; i < k * k; i++) w->data[(o * Cg + c) * k * k + i] = f->data[(i * Cg + c) * F + o];
  f->used = 1;
  if ((rc = put_bias(m, u->role[ROLE_BIAS], l))) return rc;
  if (!s != !sb)
    return cnnb_error(CNNB_EIO, "%s: unit '%s' has %s but not %s", m->mpath, u->prefix, s ? s->name : sb->name,
                      s ? "scale/biases" : "scale/weights");
  if (s) {
    long wf[1] = {F};
    if ((rc = check_shape(m, s, l, 1, wf)) || (rc = check_shape(m, sb, l, 1, wf))) return rc;
    cnnb_param *b = cnnb_layer_find_param(l, "biases");
    for (long o = 0; o < F; o++) {
      for (long i = 0; i < Cg * k * k; i++) w->data[o * Cg * k * k + i] *= s->data[o];
      b->data[o] = b->data[o] * s->data[o] + sb->data[o];
    }
    s->used = sb->used = 1;
  }
  return 0;
}

/* depthwise [k,k,C,M] -> groups=C convolution [C*M, 1, k, k] (filter c*M+m, TF's order), then
 * pointwise [1,1,C*M,F] -> 1x1 convolution [F, C*M, 1, 1] with the unit's bias. */
static int map_separable(map_ctx *m, tfjs_unit *u)
{
  tfjs_tensor *dw = u->role[ROLE_DW], *pw = u->role[ROLE_PW];
  if (!pw) return cnnb_error(CNNB_EIO, "%s: unit '%s' has %s but no pointwise_filter", m->mpath, u->prefix, dw->name);
  cnnb_layer *l;
  int rc = want_layer(m, u, dw, "convolutional", &l);
  if (rc) return rc;
  cnnb_param *w = cnnb_layer_find_param(l, "weights");
  const long CM = w->dims[0], k = w->dims[2], C = l->in.c;
  if (w->dims[1] != 1 || CM % C)
    return cnnb_error(CNNB_ESHAPE, "%s: tensor '%s' is a depthwise convolution but layer %d of %s is not groups=%ld", m->mpath,
                      dw->name, l->index, m->net->cfg.path, C);
  const long M = CM / C;
  long want[4] = {k, k, C, M};
  if ((rc = check_shape(m, dw, l, 4, want))) return rc;
  for (long c = 0; c < C; c++)
    for (long j = 0; j < M; j++)
      for (long i = 0; i < k * k; i++) w->data[(c * M + j) * k * k + i] = dw->data[(i * C + c) * M + j];
  dw->used = 1;
  if ((rc = put_bias(m, NULL, l))) return rc;
  if ((rc = want_layer(m, u, pw, "convolutional", &l))) return rc;
  w = cnnb_layer_find_param(l, "weights");
  const long F = w->dims[0];
  long wantp[4] = {1, 1, CM, F};
  if (w->dims[1] != l->in.c || w->dims[2] != 1)
    return cnnb_error(CNNB_ESHAPE, "%s: tensor '%s' is a 1x1 convolution of groups 1 but layer %d of %s is %ldx%ld, groups=%ld",
                      m->mpath, pw->name, l->index, m->net->cfg.path, (long)w->dims[2], (long)w->dims[2],
                      (long)(l->in.c / w->dims[1]));
  if ((rc = check_shape(m, pw, l, 4, wantp))) return rc;
  for (long o = 0; o < F; o++)
    for (long c = 0; c < CM; c++) w->data[o * CM + c] = pw->data[c * F + o];
  pw->used = 1;
  return put_bias(m, u->role[ROLE_BIAS], l);
}

/* weights [I, O] (rows in NHWC flattening) -> [connected] weights [O, I] in CHW order. */
static int map_fc(map_ctx *m, tfjs_unit *u)
{
  tfjs_tensor *t = u->role[ROLE_FC_W];
  cnnb_layer *l;
  int rc = want_layer(m, u, t, "connected", &l);
  if (rc) return rc;
  cnnb_param *w = cnnb_layer_find_param(l, "weights");
  const long O = w->dims[0], I = w->dims[1], C = l->in.c, HW = (long)l->in.h * l->in.w;
  long want[2] = {I, O};
  if ((rc = check_shape(m, t, l, 2, want))) return rc;
  for (long o = 0; o < O; o++)
    for (long c = 0; c < C; c++)
      for (long p = 0; p < HW; p++) w->data[o * I + c * HW + p] = t->data[(p * C + c) * O + o];
  t->used = 1;
  return put_bias(m, u->role[ROLE_BIAS], l);
}

int cnnb_tfjs_load(const char *mpath, cnnb_net *net)
{
  tfjs_set set;
  int rc = read_manifest(mpath, &set);
  if (rc) return rc;
  tfjs_unit *units = NULL;
  size_t nu = 0;
  rc = group_units(mpath, &set, &units, &nu);
  map_ctx m = {mpath, net, 0};
  for (size_t i = 0; i < nu && !rc; i++) {
    tfjs_unit *u = &units[i];
    if (u->role[ROLE_DW])
      rc = map_separable(&m, u);
    else if (u->role[ROLE_FILTERS])
      rc = map_conv(&m, u);
    else if (u->role[ROLE_FC_W])
      rc = map_fc(&m, u);
    else
      rc = cnnb_error(CNNB_EIO, "%s: unit '%s' has no filters, depthwise_filter or weights tensor", mpath, u->prefix);
  }
  /* every tensor used, every parameter layer filled */
  for (size_t i = 0; i < set.n && !rc; i++)
    if (!set.t[i].used)
      rc = cnnb_error(CNNB_EIO, "%s: tensor '%s' does not belong with the other tensors of its unit", mpath, set.t[i].name);
  if (!rc) {
    cnnb_layer *l = next_param_layer(&m);
    if (l)
      rc = cnnb_error(CNNB_ESHAPE,
                      "%s: layer %d [%s] of %s gets no tensor: the manifest's %zu tensors (%zu values) end before it "
                      "(the model has %zu trainable parameters)",
                      mpath, l->index, cnnb_layer_kind(l), net->cfg.path, set.n, set.total, cnnb_net_num_trainable(net));
  }
  free(units);
  set_free(&set);
  return rc;
}

int cnnb_tfjs_convert(const char *mpath, const char *model_path, const char *out_path)
{
  cnnb_net *net = NULL;
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  o.quiet = 1;
  int rc = cnnb_net_load(&net, model_path, &o);
  if (rc) return rc;
  rc = cnnb_tfjs_load(mpath, net);
  if (!rc) {
    cnnb_ckpt_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.world_size = 1;
    rc = cnnb_ckpt_save(out_path, net, NULL, &meta);
  }
  cnnb_net_free(net);
  return rc;
}
