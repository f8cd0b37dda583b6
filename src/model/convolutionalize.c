/* A classifier's connected layers as convolutions (include/cnnb/sliding.h). The new network is
 * built from generated model text, so that it goes through the same builder and layers as any
 * model, and its parameters are then copied layer by layer by name. */
#include "cnnb/sliding.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"

static int key_int(cnnb_cfg_section *s, const char *key, int def)
{
  cnnb_cfg_kv *kv = cnnb_cfg_find(s, key);
  return kv ? atoi(kv->value) : def;
}

/* Window step and whether layer l (spatial, before the first connected) reads padding. */
static void spatial_geometry(const cnnb_layer *l, cnnb_cfg_section *s, int *stride, int *pads)
{
  const char *kind = cnnb_layer_kind(l);
  *stride = 1;
  *pads = 0;
  if (!strcmp(kind, "convolutional")) {
    int size = key_int(s, "size", 1);
    *stride = key_int(s, "stride", 1);
    *pads = key_int(s, "pad", 0) ? size / 2 > 0 : key_int(s, "padding", 0) > 0;
  } else if (!strcmp(kind, "maxpool")) {
    /* maxpool.c's defaults: size from stride or stride from size; padding size-1 */
    int hs = cnnb_cfg_find(s, "size") != NULL, hst = cnnb_cfg_find(s, "stride") != NULL;
    int size = key_int(s, "size", 1), st = key_int(s, "stride", 1);
    if (!hs && hst) size = st;
    if (hs && !hst) st = size;
    int pad = key_int(s, "padding", size - 1), off = pad / 2;
    *stride = key_int(s, "stride_y", st);
    *pads = off > 0 || (l->out.h - 1) * *stride + size - off > l->in.h ||
            (l->out.w - 1) * key_int(s, "stride_x", st) + size - off > l->in.w;
  } else if (!strcmp(kind, "avgpool")) {
    int size = key_int(s, "size", 1);
    *stride = key_int(s, "stride", size);
    *pads = key_int(s, "padding", 0) > 0;
  }
}

int cnnb_convolutionalize_cfg(const cnnb_net *cls, int h, int w, char **text, int *softmax, float *temperature)
{
  *text = NULL;
  *softmax = 0;
  *temperature = 1.f;
  const cnnb_cfg *cfg = &cls->cfg;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return cnnb_error(CNNB_ENOMEM, "%s: out of memory", cfg->path);
  fprintf(f, "# %s as convolutions (cnn-batch predict --sliding)\n[net]\n", cfg->path);
  cnnb_cfg_section *ns = &cfg->sec[0];
  for (int i = 0; i < ns->nkv; i++) {
    const char *k = ns->kv[i].key;
    if (strcmp(k, "height") && strcmp(k, "width") && strcmp(k, "channels") && strcmp(k, "inputs"))
      fprintf(f, "%s=%s\n", k, ns->kv[i].value);
  }
  fprintf(f, "height=%d\nwidth=%d\nchannels=%d\n", h, w, cls->in.c);
  int rc = 0, seen_connected = 0;
  for (int i = 0; i < cls->n && !rc; i++) {
    const cnnb_layer *l = &cls->layers[i];
    cnnb_cfg_section *s = &cfg->sec[l->cfg_section];
    const char *kind = cnnb_layer_kind(l);
    if (!strcmp(kind, "dropout")) continue; /* the identity at inference */
    if (!strcmp(kind, "softmax")) {
      if (i != cls->n - 1 || key_int(s, "groups", 1) != 1) {
        rc = cnnb_error(CNNB_ESHAPE, "%s:%d: layer %d [softmax] is not the classifier's last layer over all its "
                        "outputs, so it cannot run per window position", cfg->path, s->line, i);
        break;
      }
      cnnb_cfg_kv *t = cnnb_cfg_find(s, "temperature");
      *temperature = t ? strtof(t->value, NULL) : 1.f;
      *softmax = 1;
      continue;
    }
    if (!strcmp(kind, "avgpool") && !cnnb_cfg_find(s, "size")) {
      rc = cnnb_error(CNNB_ESHAPE, "%s:%d: layer %d [avgpool] is a global average pooling: over a larger image it "
                      "would average all windows together, so the classifier cannot run convolutionally",
                      cfg->path, s->line, i);
      break;
    }
    if (!strcmp(kind, "connected")) {
      int size = 1;
      if (!seen_connected) {
        if (l->in.h != l->in.w) {
          rc = cnnb_error(CNNB_ESHAPE, "%s:%d: layer %d [connected] reads a %dx%d (not square) input: it cannot "
                          "become a square convolution", cfg->path, s->line, i, l->in.h, l->in.w);
          break;
        }
        size = l->in.h;
      }
      seen_connected = 1;
      cnnb_cfg_kv *act = cnnb_cfg_find(s, "activation");
      fprintf(f, "\n# layer %d [connected] %s\n[convolutional]\nfilters=%d\nsize=%d\nstride=1\npadding=0\n"
              "activation=%s\nbatch_normalize=%d\n", i, size > 1 ? "over its whole input" : "on 1x1 features",
              l->out.c, size, act ? act->value : "logistic", key_int(s, "batch_normalize", 0));
      continue;
    }
    if (strcmp(kind, "convolutional") && strcmp(kind, "maxpool") && strcmp(kind, "avgpool") &&
        strcmp(kind, "batchnorm")) {
      rc = cnnb_error(CNNB_ESHAPE, "%s:%d: layer %d [%s] cannot run convolutionally (sliding windows take "
                      "convolutional, maxpool, local avgpool, batchnorm, dropout, connected and a last softmax)",
                      cfg->path, s->line, i, s->name);
      break;
    }
    fprintf(f, "\n# layer %d\n[%s]\n", i, kind);
    for (int j = 0; j < s->nkv; j++) fprintf(f, "%s=%s\n", s->kv[j].key, s->kv[j].value);
  }
  if (fclose(f) != 0 && !rc) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", cfg->path);
  if (!rc && !seen_connected)
    rc = cnnb_error(CNNB_ESHAPE, "%s: no [connected] layer: the model is already convolutional", cfg->path);
  if (rc) {
    free(buf);
    return rc;
  }
  *text = buf;
  return 0;
}

int cnnb_sliding_init(cnnb_sliding *sw, const cnnb_net *cls, int h, int w, int max_batch)
{
  memset(sw, 0, sizeof *sw);
  if (h < cls->in.h || w < cls->in.w)
    return cnnb_error(CNNB_ESHAPE, "%s: images of %dx%d are smaller than the classifier's %dx%d window", cls->cfg.path,
                      h, w, cls->in.h, cls->in.w);
  char *text;
  int rc = cnnb_convolutionalize_cfg(cls, h, w, &text, &sw->softmax, &sw->temperature);
  if (rc) return rc;
  char name[4096];
  snprintf(name, sizeof name, "%s (as convolutions at %dx%d)", cls->cfg.path, h, w);
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = max_batch;
  o.quiet = 1;
  rc = cnnb_net_from_string(&sw->net, text, name, &o);
  free(text);
  if (rc) return rc;
  /* Copy parameters: the new network has the same layers, less dropout and softmax. */
  sw->stride = 1;
  int j = 0, spatial = 1;
  for (int i = 0; i < cls->n; i++) {
    cnnb_layer *src = &cls->layers[i];
    const char *kind = cnnb_layer_kind(src);
    if (!strcmp(kind, "dropout") || !strcmp(kind, "softmax")) continue;
    if (!strcmp(kind, "connected")) spatial = 0;
    if (spatial) {
      int st, pads;
      spatial_geometry(src, &cls->cfg.sec[src->cfg_section], &st, &pads);
      sw->stride *= st;
      sw->padded |= pads;
    }
    cnnb_layer *dst = &sw->net->layers[j++];
    for (int p = 0; p < src->nparam; p++) {
      cnnb_param *d = cnnb_layer_find_param(dst, src->param[p].name);
      if (!d || d->count != src->param[p].count) {
        cnnb_sliding_free(sw);
        return cnnb_error(CNNB_ESHAPE, "%s: layer %d [%s]: parameter '%s' does not map onto the convolutional version",
                          cls->cfg.path, i, kind, src->param[p].name);
      }
      memcpy(d->data, src->param[p].data, d->count * sizeof(float));
    }
  }
  const cnnb_layer *last = cnnb_net_output_layer(sw->net);
  sw->window_h = cls->in.h;
  sw->window_w = cls->in.w;
  sw->oh = last->out.h;
  sw->ow = last->out.w;
  sw->k = last->out.c;
  sw->uncovered = (h - cls->in.h) % sw->stride || (w - cls->in.w) % sw->stride;
  return 0;
}

void cnnb_sliding_free(cnnb_sliding *sw)
{
  cnnb_net_free(sw->net);
  sw->net = NULL;
}

void cnnb_sliding_forward(cnnb_sliding *sw, const float *x, int n, float *scores)
{
  const float *y = cnnb_net_forward(sw->net, x, n);
  const int K = sw->k, P = sw->oh * sw->ow;
  const float invt = 1.f / sw->temperature;
  for (int b = 0; b < n; b++)
    for (int p = 0; p < P; p++) {
      float *o = scores + ((size_t)b * P + p) * K;
      /* NCHW -> channels last, so that a position's K scores are contiguous */
      for (int k = 0; k < K; k++) o[k] = y[((size_t)b * K + k) * P + p];
      if (!sw->softmax) continue;
      float mx = -FLT_MAX;
      for (int k = 0; k < K; k++) mx = o[k] > mx ? o[k] : mx;
      double sum = 0;
      for (int k = 0; k < K; k++) sum += o[k] = expf((o[k] - mx) * invt);
      for (int k = 0; k < K; k++) o[k] = (float)(o[k] / sum);
    }
}

void cnnb_sliding_crops(cnnb_net *cls, const cnnb_sliding *sw, const float *x, int n, float *crops, float *scores)
{
  const int C = cls->in.c, H = sw->net->in.h, W = sw->net->in.w, wh = sw->window_h, ww = sw->window_w;
  const int P = sw->oh * sw->ow, K = sw->k, B = cls->max_batch;
  const size_t csz = (size_t)C * wh * ww;
  long total = (long)n * P;
  for (long t0 = 0; t0 < total; t0 += B) {
    int m = (int)(total - t0 < B ? total - t0 : B);
    for (int q = 0; q < m; q++) {
      long t = t0 + q;
      int b = (int)(t / P), p = (int)(t % P), i = p / sw->ow, j = p % sw->ow;
      for (int c = 0; c < C; c++)
        for (int r = 0; r < wh; r++)
          memcpy(crops + q * csz + ((size_t)c * wh + r) * ww,
                 x + (((size_t)b * C + c) * H + (size_t)i * sw->stride + r) * W + (size_t)j * sw->stride,
                 (size_t)ww * sizeof(float));
    }
    const float *y = cnnb_net_forward(cls, crops, m);
    memcpy(scores + t0 * K, y, (size_t)m * K * sizeof(float));
  }
}
