/* [batchnorm]: standalone batch normalisation over the input channels (output shape = input
 * shape, no activation, as Darknet's batchnorm layer), and the shared BN code of
 * batchnorm_impl.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/net.h"
#include "layers/batchnorm_impl.h"
#include "core/parallel.h"

int cnnb_bn_setup(cnnb_bn *bn, cnnb_layer *l, int c, int spatial, cnnb_net *net)
{
  const int max_batch = net->max_batch;
  memset(bn, 0, sizeof *bn);
  bn->net = net;
  bn->c = c;
  bn->spatial = spatial;
  bn->max_batch = max_batch;
  int dims[1] = {c};
  if ((bn->p_scales = cnnb_layer_param(l, "scales", 1, 1, dims)) < 0) return bn->p_scales;
  if ((bn->p_biases = cnnb_layer_param(l, "biases", 1, 1, dims)) < 0) return bn->p_biases;
  if ((bn->p_mean = cnnb_layer_param(l, "rolling_mean", 0, 1, dims)) < 0) return bn->p_mean;
  if ((bn->p_var = cnnb_layer_param(l, "rolling_variance", 0, 1, dims)) < 0) return bn->p_var;
  if (max_batch <= 0) return 0; /* planning only (info): never runs forward */
  /* xhat is kept for backward only: a net that never runs backward (inference) neither
   * allocates nor writes it, which halves the memory its batch-norm layers touch. */
  if (net->backprop) bn->xhat = malloc(sizeof(float) * (size_t)max_batch * c * spatial);
  bn->mean = malloc(sizeof(float) * (size_t)c);
  bn->inv_std = malloc(sizeof(float) * (size_t)c);
  bn->acc = malloc(sizeof(double) * (size_t)(4 * c + 1));
  if ((net->backprop && !bn->xhat) || !bn->mean || !bn->inv_std || !bn->acc) {
    cnnb_bn_free(bn);
    return cnnb_error(CNNB_ENOMEM, "out of memory for batch-norm buffers");
  }
  return 0;
}

void cnnb_bn_free(cnnb_bn *bn)
{
  free(bn->xhat);
  free(bn->mean);
  free(bn->inv_std);
  free(bn->acc);
  bn->xhat = bn->mean = bn->inv_std = NULL;
  bn->acc = NULL;
}

void cnnb_bn_init(cnnb_bn *bn, cnnb_layer *l)
{
  for (int f = 0; f < bn->c; f++) {
    l->param[bn->p_scales].data[f] = 1.f;
    l->param[bn->p_biases].data[f] = 0.f;
    l->param[bn->p_mean].data[f] = 0.f;
    l->param[bn->p_var].data[f] = 1.f;
  }
}

/* Row kernels. The rows are a channel's S values of one sample (S = 1 to 784 in LeNet-5 and
 * ResNet-18-32). Reductions run in CNNB_BN_LANES independent float accumulators, which GCC turns
 * into vector registers (a single serial accumulator, float or double, cannot be vectorised
 * without reassociation); each lane sums at most S/LANES values of the same size, and the rows'
 * results are added in double (float rounding over at most 98 values per lane: an estimated
 * relative error of order 1e-6 on the variance, not measured; the gradient checks
 * pass unchanged). */
#define CNNB_BN_LANES 8
/* GCC's loop vectoriser would vectorise the block loop across blocks, with shuffles and the
 * lanes' reductions in scalar order; without it, the SLP vectoriser maps the 8 lanes onto two
 * vector registers, which is the point. */
#if defined(__GNUC__) && !defined(__clang__)
#define CNNB_BN_ROW __attribute__((optimize("no-tree-loop-vectorize")))
#else
#define CNNB_BN_ROW
#endif

/* sum of (p[k] - K) and of its square over the row */
CNNB_BN_ROW static void row_sums_shifted(const float *restrict p, int n, float K, double *s1, double *s2)
{
  float a[CNNB_BN_LANES] = {0}, q[CNNB_BN_LANES] = {0};
  int k = 0;
  for (; k + CNNB_BN_LANES <= n; k += CNNB_BN_LANES)
    for (int j = 0; j < CNNB_BN_LANES; j++) {
      const float d = p[k + j] - K;
      a[j] += d;
      q[j] += d * d;
    }
  float ra = 0.f, rq = 0.f;
  for (; k < n; k++) {
    const float d = p[k] - K;
    ra += d;
    rq += d * d;
  }
  for (int j = 0; j < CNNB_BN_LANES; j++) ra += a[j], rq += q[j];
  *s1 += ra;
  *s2 += rq;
}

/* sum of dy and of dy*xhat over the row */
CNNB_BN_ROW static void row_sums_dy(const float *restrict dy, const float *restrict xh, int n, double *sdy,
                               double *sdyx)
{
  float a[CNNB_BN_LANES] = {0}, q[CNNB_BN_LANES] = {0};
  int k = 0;
  for (; k + CNNB_BN_LANES <= n; k += CNNB_BN_LANES)
    for (int j = 0; j < CNNB_BN_LANES; j++) {
      a[j] += dy[k + j];
      q[j] += dy[k + j] * xh[k + j];
    }
  float ra = 0.f, rq = 0.f;
  for (; k < n; k++) {
    ra += dy[k];
    rq += dy[k] * xh[k];
  }
  for (int j = 0; j < CNNB_BN_LANES; j++) ra += a[j], rq += q[j];
  *sdy += ra;
  *sdyx += rq;
}

/* Batch statistics into mean[] and var[] (C each): per-channel sums over this rank's samples,
 * summed over all ranks when the network synchronises batch norm (net->stat_sum). Returns the
 * number of values the statistics cover.
 *
 * One pass over x: per channel, the sums of d = x - K and d^2 around a shift K (the channel's
 * mean in the first sample, close to the batch mean, so d is small and its float sums lose
 * nothing to cancellation). The sum of x goes to stat_sum as before; with the global mean mu,
 * this rank's squared deviations are sum d^2 - 2 (mu - K) sum d + n (mu - K)^2 (exact algebra,
 * in double), and those go to the second stat_sum: the same two reductions at the same points. */
/* The per-channel passes below run on the net's threads (core/parallel.h), each thread over a
 * range of channels (statistics: every channel's sums in the same order whatever the thread
 * count) or of samples (element-wise passes). */
typedef struct bn_job {
  cnnb_bn *bn;
  cnnb_layer *l;
  const float *x, *y, *dy;
  float *xw, *mask, *dx;
  int batch, accumulate, train;
  cnnb_act act;
  double *s1, *s2;
  const double *mean, *dinv;
} bn_job;

/* Channels lo..hi-1: the shift K (the channel's mean in the first sample) and the sums of
 * x - K and of its square over the batch (batch_stats). */
static void stats_range(void *ctx, int lo, int hi)
{
  const bn_job *j = ctx;
  const int C = j->bn->c, S = j->bn->spatial;
  float *shift = j->bn->mean;
  for (int f = lo; f < hi; f++) {
    double a = 0, q = 0;
    row_sums_shifted(j->x + (size_t)f * S, S, 0.f, &a, &q);
    shift[f] = (float)(a / S);
    j->s1[f] = j->s2[f] = 0;
  }
  for (int b = 0; b < j->batch; b++)
    for (int f = lo; f < hi; f++)
      row_sums_shifted(j->x + ((size_t)b * C + f) * S, S, shift[f], &j->s1[f], &j->s2[f]);
}

static double batch_stats(cnnb_bn *bn, const float *x, int batch, double *mean, double *var)
{
  const int C = bn->c, S = bn->spatial;
  double *acc = bn->acc; /* [0,C) sums, [C] count, [C+1, 2C+1) squared deviations */
  double *s1 = mean, *s2 = var; /* scratch until the end: shifted sums */
  float *shift = bn->mean;      /* C floats, overwritten by the caller afterwards */
  cnnb_net *net = bn->net;
  const double n = (double)batch * S;
  bn_job j = {.bn = bn, .x = x, .batch = batch, .s1 = s1, .s2 = s2};
  cnnb_pool_for(net->pool, C, stats_range, &j);
  for (int f = 0; f < C; f++) acc[f] = s1[f] + n * shift[f];
  acc[C] = n;
  if (net->stat_sum) net->stat_sum(acc, C + 1, net->stat_sum_ctx);
  const double m = acc[C];
  for (int f = 0; f < C; f++) {
    const double mu = acc[f] / m, dk = mu - shift[f];
    double sq = s2[f] - 2 * dk * s1[f] + n * dk * dk;
    acc[C + 1 + f] = sq > 0 ? sq : 0;
    mean[f] = mu;
  }
  if (net->stat_sum) net->stat_sum(acc + C + 1, C, net->stat_sum_ctx);
  /* unbiased like Darknet; a single value has variance 0, not 0/0 */
  for (int f = 0; f < C; f++) var[f] = acc[C + 1 + f] / (m > 1 ? m - 1 : 1);
  return m;
}

static void normalize_range(void *ctx, int lo, int hi);

void cnnb_bn_fold(cnnb_bn *bn, const cnnb_layer *l, float *a, float *b)
{
  const int C = bn->c;
  const float *g = l->param[bn->p_scales].data, *s = l->param[bn->p_biases].data;
  const float *rmean = l->param[bn->p_mean].data, *rvar = l->param[bn->p_var].data;
  double *da = bn->acc + 3 * C + 1, *db = bn->acc + 2 * C + 1;
  for (int f = 0; f < C; f++) {
    cnnb_bn_fold1(g[f], s[f], rmean[f], rvar[f], &da[f], &db[f]);
    if (a) a[f] = (float)da[f];
    if (b) b[f] = (float)db[f];
  }
}

/* Samples lo..hi-1 of inference's folded pass: scale and shift in bn->acc (cnnb_bn_fold). */
static void affine_range(void *ctx, int lo, int hi)
{
  const bn_job *j = ctx;
  const int C = j->bn->c, S = j->bn->spatial;
  for (int b = lo; b < hi; b++)
    for (int f = 0; f < C; f++)
      cnnb_act_affine(j->act, j->xw + ((size_t)b * C + f) * S, (size_t)S, (float)j->dinv[f], (float)j->mean[f]);
}

void cnnb_bn_forward(cnnb_bn *bn, cnnb_layer *l, float *x, int batch, int train)
{
  cnnb_bn_forward_act(bn, l, x, batch, train, CNNB_ACT_LINEAR);
}

void cnnb_bn_forward_act(cnnb_bn *bn, cnnb_layer *l, float *x, int batch, int train, cnnb_act act)
{
  const int C = bn->c;
  float *rmean = l->param[bn->p_mean].data, *rvar = l->param[bn->p_var].data;
  double *mean = bn->acc + 2 * C + 1, *var = bn->acc + 3 * C + 1;
  if (train) {
    bn->count = batch_stats(bn, x, batch, mean, var);
    for (int f = 0; f < C; f++) {
      rmean[f] = (float)(CNNB_BN_MOMENTUM * rmean[f] + (1.0 - CNNB_BN_MOMENTUM) * mean[f]);
      rvar[f] = (float)(CNNB_BN_MOMENTUM * rvar[f] + (1.0 - CNNB_BN_MOMENTUM) * var[f]);
    }
  } else {
    for (int f = 0; f < C; f++) mean[f] = rmean[f], var[f] = rvar[f];
  }
  for (int f = 0; f < C; f++) {
    const double inv = 1.0 / sqrt(var[f] + CNNB_BN_EPS);
    bn->mean[f] = (float)mean[f];
    bn->inv_std[f] = (float)inv;
    var[f] = inv; /* var[] is scratch from here on */
  }
  if (!bn->xhat) { /* inference only: y = act(a*x + b), folded in double, applied in float */
    cnnb_bn_fold(bn, l, NULL, NULL);
    bn_job j = {.bn = bn, .l = l, .xw = x, .act = act, .mean = mean, .dinv = var};
    cnnb_pool_for(bn->net->pool, batch, affine_range, &j);
    return;
  }
  /* xhat = (x - mean) * inv in double, rounded once to float: normalising in double keeps the
   * statistics' rounding out of xhat (finite-difference checks of deep stacks drown in it; a
   * float version with the mean and 1/std split into hi+lo parts still failed them). The loop
   * has no reduction, so it vectorises anyway. Then y = scales*xhat + biases and, when asked,
   * the activation, in the same pass. */
  bn_job j = {.bn = bn, .l = l, .xw = x, .act = act, .mean = mean, .dinv = var};
  cnnb_pool_for(bn->net->pool, batch, normalize_range, &j);
}

/* Samples lo..hi-1 of cnnb_bn_forward_act's last pass. */
static void normalize_range(void *ctx, int lo, int hi)
{
  const bn_job *j = ctx;
  cnnb_bn *bn = j->bn;
  const int C = bn->c, S = bn->spatial;
  const float *scales = j->l->param[bn->p_scales].data, *biases = j->l->param[bn->p_biases].data;
  const cnnb_act act = j->act;
  for (int b = lo; b < hi; b++)
    for (int f = 0; f < C; f++) {
      const size_t o = ((size_t)b * C + f) * S;
      float *restrict p = j->xw + o;
      const float g = scales[f], s = biases[f];
      const double mu = j->mean[f], dinv = j->dinv[f];
      float *restrict xh = bn->xhat + o;
      if (act == CNNB_ACT_RELU) {
        for (int k = 0; k < S; k++) {
          const float v = (float)((p[k] - mu) * dinv);
          const float y = g * v + s;
          xh[k] = v;
          p[k] = y > 0.f ? y : 0.f;
        }
      } else {
        for (int k = 0; k < S; k++) {
          const float v = (float)((p[k] - mu) * dinv);
          xh[k] = v;
          p[k] = g * v + s;
        }
        if (act != CNNB_ACT_LINEAR) cnnb_act_forward(act, p, (size_t)S);
      }
    }
}

static void bn_backward(cnnb_bn *bn, cnnb_layer *l, const float *y, float *mask, const float *dy, float *dx,
                        int batch, int train, int accumulate);

void cnnb_bn_backward(cnnb_bn *bn, cnnb_layer *l, const float *dy, float *dx, int batch, int train,
                      int accumulate)
{
  bn_backward(bn, l, NULL, NULL, dy, dx, batch, train, accumulate);
}

void cnnb_bn_backward_relu(cnnb_bn *bn, cnnb_layer *l, const float *y, float *delta, int batch, int train)
{
  bn_backward(bn, l, y, delta, delta, delta, batch, train, 0);
}

/* Channels lo..hi-1 of bn_backward's sums (with y set, ReLU's derivative applied first). */
static void dsums_range(void *ctx, int lo, int hi)
{
  const bn_job *j = ctx;
  const int C = j->bn->c, S = j->bn->spatial;
  double *acc = j->bn->acc;
  for (int f = lo; f < hi; f++) acc[f] = acc[C + f] = 0;
  for (int b = 0; b < j->batch; b++)
    for (int f = lo; f < hi; f++) {
      const size_t o = ((size_t)b * C + f) * S;
      if (j->y) {
        float *restrict d = j->mask + o;
        const float *restrict yy = j->y + o;
        for (int k = 0; k < S; k++) d[k] = yy[k] > 0.f ? d[k] : 0.f;
      }
      row_sums_dy(j->dy + o, j->bn->xhat + o, S, &acc[f], &acc[C + f]);
    }
}

/* Samples lo..hi-1 of dx: g*inv*(dy - mean(dy) - xhat*sum(dy*xhat)/(m-1)) in training (the
 * statistics depend on x); just g*inv*dy in inference (they are constants). s1 and s2 hold the
 * per-channel a and c of that formula. */
static void dx_range(void *ctx, int lo, int hi)
{
  const bn_job *j = ctx;
  const cnnb_bn *bn = j->bn;
  const int C = bn->c, S = bn->spatial;
  const float *scales = j->l->param[bn->p_scales].data;
  for (int b = lo; b < hi; b++)
    for (int f = 0; f < C; f++) {
      const float g = scales[f] * bn->inv_std[f], a = (float)j->s1[f], c = (float)j->s2[f];
      const size_t o = ((size_t)b * C + f) * S;
      const float *d = j->dy + o, *xh = bn->xhat + o;
      float *t = j->dx + o; /* may alias d: each element is read before it is written */
      if (j->accumulate)
        for (int k = 0; k < S; k++) t[k] += g * (d[k] - a - xh[k] * c);
      else
        for (int k = 0; k < S; k++) t[k] = g * (d[k] - a - xh[k] * c);
    }
}

/* With y set, first applies ReLU's derivative to each row of mask (delta = y > 0 ? delta : 0,
 * as cnnb_act_backward), while the row is in cache for its sums; mask then is dy. */
static void bn_backward(cnnb_bn *bn, cnnb_layer *l, const float *y, float *mask, const float *dy, float *dx,
                        int batch, int train, int accumulate)
{
  const int C = bn->c, S = bn->spatial;
  float *gscales = l->param[bn->p_scales].grad, *gbiases = l->param[bn->p_biases].grad;
  double *acc = bn->acc; /* [0,C) sum dy, [C, 2C) sum dy*xhat; then a and c of dx_range */
  bn_job j = {.bn = bn, .l = l, .y = y, .mask = mask, .dy = dy, .dx = dx, .batch = batch,
              .accumulate = accumulate, .s1 = acc, .s2 = acc + C};
  cnnb_pool_for(bn->net->pool, C, dsums_range, &j);
  /* Parameter gradients from this rank's share: the allreduce of gradients sums them. */
  for (int f = 0; f < C; f++) {
    if (gscales) gscales[f] += (float)acc[C + f];
    if (gbiases) gbiases[f] += (float)acc[f];
  }
  if (!dx) return;
  /* The statistics depend on every sample they cover: with synchronised batch norm the input
   * gradient needs the global sums. */
  const double m = train ? bn->count : (double)batch * S;
  if (train && bn->net->stat_sum) bn->net->stat_sum(acc, 2 * C, bn->net->stat_sum_ctx);
  for (int f = 0; f < C; f++) {
    acc[f] = train ? acc[f] / m : 0.0;
    acc[C + f] = train ? acc[C + f] / (m > 1 ? m - 1 : 1) : 0.0;
  }
  cnnb_pool_for(bn->net->pool, batch, dx_range, &j);
}

/* ---- the [batchnorm] layer ---- */

static int bn_layer_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  (void)s;
  if (l->in.c < 1 || l->in.h < 1 || l->in.w < 1)
    return cnnb_error(CNNB_ESHAPE, "empty input %dx%dx%d", l->in.c,
                      l->in.h, l->in.w);
  l->out = l->in;
  l->act = CNNB_ACT_LINEAR;
  cnnb_bn *bn = calloc(1, sizeof *bn);
  if (!bn) return cnnb_error(CNNB_ENOMEM, "out of memory");
  int rc = cnnb_bn_setup(bn, l, l->in.c, l->in.h * l->in.w, net);
  if (rc < 0) {
    free(bn);
    return rc;
  }
  l->priv = bn;
  l->madds = 2.0 * (double)cnnb_shape_size(l->out);
  l->workspace = 0;
  return 0;
}

static void bn_layer_init(cnnb_layer *l, cnnb_rng *rng)
{
  (void)rng;
  cnnb_bn_init(l->priv, l);
}

static void bn_layer_forward(cnnb_layer *l, cnnb_net *net)
{
  const size_t n = (size_t)net->batch * cnnb_shape_size(l->out);
  memcpy(l->output, l->input, sizeof(float) * n);
  cnnb_bn_forward(l->priv, l, l->output, net->batch, net->train);
}

static void bn_layer_backward(cnnb_layer *l, cnnb_net *net)
{
  cnnb_bn_backward(l->priv, l, l->delta, l->input_delta, net->batch, net->train, 1);
}

static void bn_layer_free(cnnb_layer *l)
{
  if (!l->priv) return;
  cnnb_bn_free(l->priv);
  free(l->priv);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_batchnorm_ops = {
  .section = "batchnorm",
  .setup = bn_layer_setup,
  .init = bn_layer_init,
  .forward = bn_layer_forward,
  .backward = bn_layer_backward,
  .free = bn_layer_free,
  .loss = NULL,
};
