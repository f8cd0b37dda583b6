/* [convolutional]: 2-D cross-correlation (no kernel flip) by im2col + sgemm, with Darknet's
 * keys and defaults (filters 1, size 1, stride 1, pad 0, padding 0, groups 1, batch_normalize 0,
 * activation logistic). pad=1 means padding = size/2 and overrides `padding`.
 * Params: weights [filters, c/groups, size, size], then biases [filters] without BN, or
 * scales, biases, rolling_mean, rolling_variance [filters] with BN (the conv then has no bias of
 * its own: BN's beta plays that role, stored under the same name as Darknet does). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/net.h"
#include "core/im2col.h"
#include "layers/batchnorm_impl.h"

/* The scatter/gather loops below copy runs of out_h*out_w floats (1 in ResNet's last stage):
 * loops, not memcpy calls (see im2col.c). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

/* The batched convolution's scratch, in floats: a chunk of samples is convolved at once, with
 * their column matrices side by side (K x chunk*out_hw) and the GEMM's F x chunk*out_hw result
 * next to it, so that each weight matrix is packed once per chunk rather than once per sample
 * and the GEMM's N is large enough for OpenBLAS to run near its peak. The chunk is as many
 * samples as fit this budget (at least one). */
#ifndef CNNB_CONV_WS_FLOATS
#define CNNB_CONV_WS_FLOATS ((size_t)256 << 10) /* 1 MiB */
#endif

typedef struct conv_priv {
  int filters, size, stride, pad, groups, bn_on;
  int direct;  /* 1x1, stride 1, no padding: the input already is the column matrix */
  int chunk;   /* samples per GEMM (1: one GEMM per sample straight into the output) */
  int window;  /* one output pixel whose kernel window covers the whole input (a 3x3 pad-1 conv
                * on a 1x1 input, 3x3/2 pad 1 on 2x2): see conv_forward_window */
  int p_weights, p_biases;
  float *wwin; /* window path: the weights' windows, packed by forward (G x fg x cg*h*w) and
                * reused by backward (the weights do not change in between) */
  cnnb_bn bn;
} conv_priv;


static int conv_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int filters, size, stride, pad, padding, groups, bn_on, dilation, rc;
  if ((rc = cnnb_cfg_int(cfg, s, "filters", 1, 1, 1 << 20, &filters)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "size", 1, 1, 1 << 12, &size)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "stride", 1, 1, 1 << 12, &stride)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "pad", 0, 0, 1 << 12, &pad)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "padding", 0, 0, 1 << 12, &padding)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "groups", 1, 1, 1 << 20, &groups)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "batch_normalize", 0, 0, 1, &bn_on)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "dilation", 1, 1, 1 << 12, &dilation)) < 0) return rc;
  if (dilation != 1)
    return cnnb_error(CNNB_ECFG, "dilation=%d is not supported (only 1)", dilation);
  const char *an = cnnb_cfg_str(s, "activation", "logistic");
  int act = cnnb_act_parse(an);
  if (act < 0)
    return cnnb_error(CNNB_ECFG, "unknown activation '%s' (known: linear, relu, leaky, logistic, tanh, relu6)", an);
  if (pad) padding = size / 2;

  const int c = l->in.c, h = l->in.h, w = l->in.w;
  if (c < 1 || h < 1 || w < 1)
    return cnnb_error(CNNB_ESHAPE, "empty input %dx%dx%d", c, h, w);
  if (c % groups || filters % groups)
    return cnnb_error(CNNB_ESHAPE,
                      "groups=%d must divide input channels %d and filters %d", groups, c, filters);
  if (size > h + 2 * padding || size > w + 2 * padding)
    return cnnb_error(CNNB_ESHAPE,
                      "filter %dx%d larger than padded input %dx%d (pad %d)", size, size, h + 2 * padding, w + 2 * padding, padding);

  l->out.c = filters;
  l->out.h = cnnb_conv_out_size(h, size, padding, stride);
  l->out.w = cnnb_conv_out_size(w, size, padding, stride);
  l->act = (cnnb_act)act;

  conv_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "out of memory");
  p->filters = filters;
  p->size = size;
  p->stride = stride;
  p->pad = padding;
  p->groups = groups;
  p->bn_on = bn_on;
  p->direct = size == 1 && stride == 1 && padding == 0;
  p->window = l->out.h == 1 && l->out.w == 1 && size >= h + padding && size >= w + padding && !p->direct;

  int wd[4] = {filters, c / groups, size, size};
  if ((rc = p->p_weights = cnnb_layer_param(l, "weights", 1, 4, wd)) < 0) goto fail;
  if (bn_on) {
    if ((rc = cnnb_bn_setup(&p->bn, l, filters, l->out.h * l->out.w, net)) < 0) goto fail;
    p->p_biases = p->bn.p_biases;
  } else {
    int bd[1] = {filters};
    if ((rc = p->p_biases = cnnb_layer_param(l, "biases", 1, 1, bd)) < 0) goto fail;
  }
  l->priv = p;
  /* per sample and group: the column matrix (kk x out_hw) and the GEMM result (fg x out_hw);
   * groups are processed in turn. With one sample per chunk the GEMM writes the output directly,
   * and a direct 1x1 convolution needs no scratch at all. */
  const size_t ohw = (size_t)l->out.h * l->out.w, kk = (size_t)(c / groups) * size * size;
  const size_t per = (kk + (size_t)(filters / groups)) * ohw;
  size_t chunk = CNNB_CONV_WS_FLOATS / (per ? per : 1);
  if (chunk > (size_t)net->max_batch) chunk = (size_t)net->max_batch;
  if (chunk < 1) chunk = 1;
  p->chunk = (int)chunk;
  if (p->window) { /* the weights' window (fg x cg*h*w) for dW; the packed weights in p->wwin */
    l->workspace = (size_t)(filters / groups) * (size_t)(c / groups) * h * w;
    p->wwin = malloc(sizeof(float) * (size_t)filters * (size_t)(c / groups) * h * w);
    if (!p->wwin) {
      l->priv = NULL;
      if (bn_on) cnnb_bn_free(&p->bn);
      rc = cnnb_error(CNNB_ENOMEM, "out of memory");
      goto fail;
    }
  }
  else if (chunk == 1)
    l->workspace = p->direct ? 0 : kk * ohw;
  else
    l->workspace = chunk * per;
  l->madds = (double)l->out.h * l->out.w * filters * (c / groups) * size * size;
  return 0;
fail:
  free(p);
  return rc;
}

static void conv_init(cnnb_layer *l, cnnb_rng *rng)
{
  conv_priv *p = l->priv;
  cnnb_param *wp = &l->param[p->p_weights];
  /* He-normal: keeps activation variance roughly constant through ReLU-like layers */
  const float sd = sqrtf(2.f / (float)(wp->dims[1] * p->size * p->size));
  for (size_t i = 0; i < wp->count; i++) wp->data[i] = sd * cnnb_rng_normal(rng);
  if (p->bn_on)
    cnnb_bn_init(&p->bn, l);
  else
    memset(l->param[p->p_biases].data, 0, sizeof(float) * (size_t)p->filters);
}

/* Sample b's group g of the layer input (cg channels of H x W). */
static inline const float *in_at(const cnnb_layer *l, int b, int g, int cg)
{
  return l->input + ((size_t)b * l->in.c + (size_t)g * cg) * l->in.h * l->in.w;
}

/* The window path. When the layer has one output pixel and its kernel window covers the whole
 * input (ResNet-18-32's last stage: 3x3 pad 1 on 1x1 inputs, 3x3/2 pad 1 on 2x2), the column
 * matrix of a sample is its input image itself, restricted to the kernel taps that land inside
 * the image: K shrinks from cg*k*k to cg*h*w (9x for a 1x1 input), and no im2col or col2im is
 * needed. The batch's inputs form a B x (C*h*w) row-major matrix and outputs/deltas a B x F one,
 * so each GEMM runs over the whole batch with the weights' window packed as an fg x cg*h*w
 * matrix in the workspace. */
static void window_pack(const conv_priv *p, const cnnb_layer *l, const float *wg, float *wp)
{
  const int cg = l->in.c / p->groups, fg = p->filters / p->groups, k = p->size, h = l->in.h, w = l->in.w;
  if (h == 1 && w == 1) { /* one tap per (filter, channel) */
    const size_t kk = (size_t)k * k, off = (size_t)p->pad * k + p->pad, n = (size_t)fg * cg;
    for (size_t i = 0; i < n; i++) wp[i] = wg[i * kk + off];
    return;
  }
  for (int f = 0; f < fg; f++)
    for (int c = 0; c < cg; c++) {
      const float *src = wg + ((size_t)f * cg + c) * k * k + (size_t)p->pad * k + p->pad;
      float *dst = wp + ((size_t)f * cg + c) * h * w;
      for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) dst[y * w + x] = src[(size_t)y * k + x];
    }
}

static void window_unpack_add(const conv_priv *p, const cnnb_layer *l, const float *wp, float *gg)
{
  const int cg = l->in.c / p->groups, fg = p->filters / p->groups, k = p->size, h = l->in.h, w = l->in.w;
  if (h == 1 && w == 1) {
    const size_t kk = (size_t)k * k, off = (size_t)p->pad * k + p->pad, n = (size_t)fg * cg;
    for (size_t i = 0; i < n; i++) gg[i * kk + off] += wp[i];
    return;
  }
  for (int f = 0; f < fg; f++)
    for (int c = 0; c < cg; c++) {
      float *dst = gg + ((size_t)f * cg + c) * k * k + (size_t)p->pad * k + p->pad;
      const float *src = wp + ((size_t)f * cg + c) * h * w;
      for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) dst[(size_t)y * k + x] += src[y * w + x];
    }
}

static void conv_forward_window(cnnb_layer *l, cnnb_net *net)
{
  conv_priv *p = l->priv;
  const int C = l->in.c, F = p->filters, G = p->groups, cg = C / G, fg = F / G;
  const int hw = l->in.h * l->in.w, kw = cg * hw, kk = cg * p->size * p->size;
  const float *weights = l->param[p->p_weights].data;
  for (int g = 0; g < G; g++) {
    float *wp = p->wwin + (size_t)g * fg * kw;
    window_pack(p, l, weights + (size_t)g * fg * kk, wp);
    /* out (B x fg, ld F) = in (B x kw, ld C*hw) * Wwin^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, net->batch, fg, kw, 1.f, l->input + (size_t)g * kw,
                C * hw, wp, kw, 0.f, l->output + (size_t)g * fg, F);
  }
}

static void conv_backward_window(cnnb_layer *l, cnnb_net *net, float *gw)
{
  conv_priv *p = l->priv;
  const int C = l->in.c, F = p->filters, G = p->groups, cg = C / G, fg = F / G;
  const int hw = l->in.h * l->in.w, kw = cg * hw, kk = cg * p->size * p->size;
  for (int g = 0; g < G; g++) {
    if (gw) { /* dWwin (fg x kw) = delta^T (fg x B) * in (B x kw), added into the window of dW */
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, fg, kw, net->batch, 1.f, l->delta + (size_t)g * fg, F,
                  l->input + (size_t)g * kw, C * hw, 0.f, net->workspace, kw);
      window_unpack_add(p, l, net->workspace, gw + (size_t)g * fg * kk);
    }
    if (l->input_delta) { /* dIn (B x kw) += delta (B x fg) * Wwin (fg x kw), packed by forward */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, net->batch, kw, fg, 1.f, l->delta + (size_t)g * fg, F,
                  p->wwin + (size_t)g * fg * kw, kw, 1.f, l->input_delta + (size_t)g * kw, C * hw);
    }
  }
}

static void conv_forward(cnnb_layer *l, cnnb_net *net)
{
  conv_priv *p = l->priv;
  const int C = l->in.c, H = l->in.h, W = l->in.w, F = p->filters, G = p->groups;
  const int cg = C / G, fg = F / G, ohw = l->out.h * l->out.w, kk = cg * p->size * p->size;
  const float *weights = l->param[p->p_weights].data;
  if (p->window) conv_forward_window(l, net);
  for (int b0 = p->window ? net->batch : 0; b0 < net->batch; b0 += p->chunk) {
    const int nb = net->batch - b0 < p->chunk ? net->batch - b0 : p->chunk;
    const size_t ld = (size_t)nb * ohw;
    for (int g = 0; g < G; g++) {
      const float *wg = weights + (size_t)g * fg * kk;
      if (nb == 1) { /* one sample: the GEMM writes the output in place */
        const float *col = in_at(l, b0, g, cg);
        if (!p->direct) {
          cnnb_im2col(col, cg, H, W, p->size, p->stride, p->pad, net->workspace);
          col = net->workspace;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, fg, ohw, kk, 1.f, wg, kk, col, ohw, 0.f,
                    l->output + ((size_t)b0 * F + (size_t)g * fg) * ohw, ohw);
        continue;
      }
      /* columns of the chunk side by side: sample i at column i*ohw */
      float *col = net->workspace, *res = net->workspace + (size_t)kk * ld;
      for (int i = 0; i < nb; i++)
        cnnb_im2col_ld(in_at(l, b0 + i, g, cg), cg, H, W, p->size, p->stride, p->pad, col + (size_t)i * ohw, ld);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, fg, (int)ld, kk, 1.f, wg, kk, col, (int)ld, 0.f,
                  res, (int)ld);
      /* fg x (nb*ohw) -> NCHW */
      for (int i = 0; i < nb; i++) {
        float *out = l->output + ((size_t)(b0 + i) * F + (size_t)g * fg) * ohw;
        for (int f = 0; f < fg; f++) {
          float *o = out + (size_t)f * ohw;
          const float *r = res + (size_t)f * ld + (size_t)i * ohw;
          for (int j = 0; j < ohw; j++) o[j] = r[j];
        }
      }
    }
  }
  if (p->bn_on) { /* normalise, scale, shift and activate in one pass */
    cnnb_bn_forward_act(&p->bn, l, l->output, net->batch, net->train, l->act);
    return;
  } else {
    const float *bias = l->param[p->p_biases].data;
    for (int b = 0; b < net->batch; b++)
      for (int f = 0; f < F; f++) {
        float *o = l->output + ((size_t)b * F + f) * ohw;
        for (int k = 0; k < ohw; k++) o[k] += bias[f];
      }
  }
  cnnb_act_forward(l->act, l->output, (size_t)net->batch * F * ohw);
}

static void conv_backward(cnnb_layer *l, cnnb_net *net)
{
  conv_priv *p = l->priv;
  const int C = l->in.c, H = l->in.h, W = l->in.w, F = p->filters, G = p->groups;
  const int cg = C / G, fg = F / G, ohw = l->out.h * l->out.w, kk = cg * p->size * p->size;
  const float *weights = l->param[p->p_weights].data;
  float *gw = l->param[p->p_weights].grad;
  float *delta = l->delta;

  if (p->bn_on && l->act == CNNB_ACT_RELU) { /* the activation's derivative inside BN's sweep */
    cnnb_bn_backward_relu(&p->bn, l, l->output, delta, net->batch, net->train);
  } else if (p->bn_on) {
    cnnb_act_backward(l->act, l->output, delta, (size_t)net->batch * F * ohw);
    cnnb_bn_backward(&p->bn, l, delta, delta, net->batch, net->train, 0);
  } else {
    cnnb_act_backward(l->act, l->output, delta, (size_t)net->batch * F * ohw);
  }
  if (!p->bn_on && l->param[p->p_biases].grad) {
    float *gb = l->param[p->p_biases].grad;
    for (int b = 0; b < net->batch; b++)
      for (int f = 0; f < F; f++) {
        const float *d = delta + ((size_t)b * F + f) * ohw;
        float s = 0.f;
        for (int k = 0; k < ohw; k++) s += d[k];
        gb[f] += s;
      }
  }
  if (!gw && !l->input_delta) return;
  if (p->window) {
    conv_backward_window(l, net, gw);
    return;
  }

  for (int b0 = 0; b0 < net->batch; b0 += p->chunk) {
    const int nb = net->batch - b0 < p->chunk ? net->batch - b0 : p->chunk;
    const size_t ld = (size_t)nb * ohw;
    for (int g = 0; g < G; g++) {
      const float *wg = weights + (size_t)g * fg * kk;
      const size_t in_off = ((size_t)b0 * C + (size_t)g * cg) * H * W;
      if (nb == 1) { /* one sample: delta and input are the GEMM operands as they are */
        const float *d = delta + ((size_t)b0 * F + (size_t)g * fg) * ohw;
        if (gw) {
          const float *col = l->input + in_off;
          if (!p->direct) {
            cnnb_im2col(col, cg, H, W, p->size, p->stride, p->pad, net->workspace);
            col = net->workspace;
          }
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, fg, kk, ohw, 1.f, d, ohw, col, ohw, 1.f,
                      gw + (size_t)g * fg * kk, kk);
        }
        if (l->input_delta) {
          float *id = l->input_delta + in_off;
          if (p->direct) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, ohw, fg, 1.f, wg, kk, d, ohw, 1.f,
                        id, ohw);
          } else {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, ohw, fg, 1.f, wg, kk, d, ohw, 0.f,
                        net->workspace, ohw);
            cnnb_col2im_add(net->workspace, cg, H, W, p->size, p->stride, p->pad, id);
          }
        }
        continue;
      }
      float *col = net->workspace, *dm = net->workspace + (size_t)kk * ld;
      /* NCHW -> fg x (nb*ohw) */
      for (int i = 0; i < nb; i++) {
        const float *d = delta + ((size_t)(b0 + i) * F + (size_t)g * fg) * ohw;
        for (int f = 0; f < fg; f++) {
          float *o = dm + (size_t)f * ld + (size_t)i * ohw;
          const float *r = d + (size_t)f * ohw;
          for (int j = 0; j < ohw; j++) o[j] = r[j];
        }
      }
      if (gw) { /* dW += delta(fg x nb*ohw) * col^T: the batch folded into the inner dimension */
        for (int i = 0; i < nb; i++)
          cnnb_im2col_ld(in_at(l, b0 + i, g, cg), cg, H, W, p->size, p->stride, p->pad, col + (size_t)i * ohw, ld);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, fg, kk, (int)ld, 1.f, dm, (int)ld, col, (int)ld, 1.f,
                    gw + (size_t)g * fg * kk, kk);
      }
      if (l->input_delta) { /* dcol = W^T * delta for the chunk, then col2im per sample */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kk, (int)ld, fg, 1.f, wg, kk, dm, (int)ld, 0.f, col,
                    (int)ld);
        for (int i = 0; i < nb; i++)
          cnnb_col2im_add_ld(col + (size_t)i * ohw, ld, cg, H, W, p->size, p->stride, p->pad,
                             l->input_delta + ((size_t)(b0 + i) * C + (size_t)g * cg) * H * W);
      }
    }
  }
}

static void conv_free(cnnb_layer *l)
{
  conv_priv *p = l->priv;
  if (!p) return;
  if (p->bn_on) cnnb_bn_free(&p->bn);
  free(p->wwin);
  free(p);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_convolutional_ops = {
  .section = "convolutional",
  .setup = conv_setup,
  .init = conv_init,
  .forward = conv_forward,
  .backward = conv_backward,
  .free = conv_free,
  .loss = NULL,
};
