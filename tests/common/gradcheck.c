/* Finite-difference gradient checker shared by every layer's test (cnnb_test.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb_test.h"

static double objective(cnnb_net *net, const float *x, int batch, const float *r)
{
  cnnb_rng_seed(&net->rng, 1234, 0, 0, 0); /* the same dropout mask / crop every time */
  const float *y = cnnb_net_forward(net, x, batch);
  size_t n = (size_t)batch * cnnb_shape_size(net->layers[net->n - 1].out);
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)r[i] * y[i];
  return s;
}

/* Relative error with a floor that follows the gradient's own scale: float rounding in the
 * objective leaves an absolute noise of about 1e-4 of the typical gradient, which a fixed floor
 * would count as error for the smallest entries. A wrong backward is off by O(1) anyway. */
static double rel_err(double a, double n, double floor) { return fabs(a - n) / fmax(floor, fabs(a) + fabs(n)); }

static double rms(const float *v, size_t n)
{
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
  return n ? sqrt(s / (double)n) : 0;
}

int cnnb_gradcheck(const char *cfg_text, int batch, unsigned seed, int train, int max_checks,
                   cnnb_gradcheck_result *res)
{
  memset(res, 0, sizeof *res);
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = batch;
  o.train = 1; /* gradients are needed either way */
  o.input_grad = 1;
  o.quiet = 1;
  cnnb_net *net;
  int rc = cnnb_net_from_string(&net, cfg_text, "gradcheck.cfg", &o);
  if (rc) {
    fprintf(stderr, "\n  gradcheck: %s\n", cnnb_error_message());
    return rc;
  }
  net->train = train;
  cnnb_net_init_params(net, seed);
  cnnb_rng g;
  cnnb_rng_seed(&g, seed, 99, 0, 0);
  /* Perturb every parameter a little so that zero biases or unit scales do not hide errors. */
  for (size_t i = 0; i < net->nparams; i++) net->params[i] += 0.1f * cnnb_rng_normal(&g);
  size_t nin = (size_t)batch * cnnb_shape_size(net->in);
  size_t nout = (size_t)batch * cnnb_shape_size(net->layers[net->n - 1].out);
  float *x = malloc(nin * sizeof *x), *r = malloc(nout * sizeof *r);
  for (size_t i = 0; i < nin; i++) x[i] = cnnb_rng_normal(&g);
  for (size_t i = 0; i < nout; i++) r[i] = cnnb_rng_normal(&g);

  objective(net, x, batch, r);
  memcpy(net->layers[net->n - 1].delta, r, nout * sizeof *r);
  cnnb_net_zero_grads(net);
  cnnb_net_backward(net);
  float *gx = malloc(nin * sizeof *gx), *gp = malloc((net->nparams + 1) * sizeof *gp);
  memcpy(gx, net->input_delta, nin * sizeof *gx);
  memcpy(gp, net->grads, net->nparams * sizeof *gp);

  const float eps = 1e-3f;
  const double floor_x = 0.05 * rms(gx, nin) + 1e-4, floor_p = 0.05 * rms(gp, net->nparams) + 1e-4;
  for (int k = 0; k < max_checks && k < (int)nin; k++) {
    size_t i = (int)nin <= max_checks ? (size_t)k : (size_t)cnnb_rng_below(&g, nin);
    float v = x[i];
    x[i] = v + eps;
    double lp = objective(net, x, batch, r);
    x[i] = v - eps;
    double lm = objective(net, x, batch, r);
    x[i] = v;
    double num = (lp - lm) / (2 * eps), e = rel_err(gx[i], num, floor_x);
    if (e > res->max_rel_input) res->max_rel_input = e;
    if (e > 1e-2) fprintf(stderr, "\n  input[%zu]: analytic %.6g numeric %.6g", i, gx[i], num);
    res->checked++;
  }
  for (int k = 0; k < max_checks && k < (int)net->nparams; k++) {
    size_t i = (int)net->nparams <= max_checks ? (size_t)k : (size_t)cnnb_rng_below(&g, net->nparams);
    float v = net->params[i];
    net->params[i] = v + eps;
    double lp = objective(net, x, batch, r);
    net->params[i] = v - eps;
    double lm = objective(net, x, batch, r);
    net->params[i] = v;
    double num = (lp - lm) / (2 * eps), e = rel_err(gp[i], num, floor_p);
    if (e > res->max_rel_param) res->max_rel_param = e;
    if (e > 1e-2) fprintf(stderr, "\n  param[%zu]: analytic %.6g numeric %.6g", i, gp[i], num);
    res->checked++;
  }
  free(x);
  free(r);
  free(gx);
  free(gp);
  cnnb_net_free(net);
  return 0;
}

/* Loss layers compute their own objective from net->truth/truth_f, so they are checked on the
 * network's loss rather than on sum(r . output): one train step gives the analytic gradients,
 * central differences of cnnb_net_loss the numeric ones, over every input and parameter. */
double cnnb_gradcheck_loss(cnnb_net *net, float *x, int n, float eps, double floor_abs, double floor_rel)
{
  const size_t nin = (size_t)n * cnnb_shape_size(net->in);
  float *gx = malloc(sizeof(float) * nin), *gp = malloc(sizeof(float) * (net->nparams + 1));
  cnnb_net_zero_grads(net);
  double L = cnnb_net_train_step(net, x, n);
  CU_ASSERT(isfinite(L));
  memcpy(gx, net->input_delta, sizeof(float) * nin);
  memcpy(gp, net->grads, sizeof(float) * net->nparams);
  double gmax = 0, worst = 0;
  for (size_t i = 0; i < nin; i++) gmax = fmax(gmax, fabs(gx[i]));
  const double fl = floor_abs + floor_rel * gmax;
  for (size_t k = 0; k < nin + net->nparams; k++) {
    float *v = k < nin ? x + k : net->params + (k - nin);
    const float a = k < nin ? gx[k] : gp[k - nin], v0 = *v;
    *v = v0 + eps;
    cnnb_net_forward(net, x, n);
    double lp = cnnb_net_loss(net);
    *v = v0 - eps;
    cnnb_net_forward(net, x, n);
    double lm = cnnb_net_loss(net);
    *v = v0;
    double num = (lp - lm) / (2.0 * eps), e = fabs(num - a) / (fl + fabs(num) + fabs(a));
    if (e > 1e-2)
      fprintf(stderr, "\n  %s[%zu]: analytic %.6g numeric %.6g", k < nin ? "input" : "param",
              k < nin ? k : k - nin, a, num);
    worst = fmax(worst, e);
  }
  free(gx);
  free(gp);
  return worst;
}

double cnnb_test_conv_diff(const float *x, const float *w, const float *bias, int B, int C, int H, int W, int F,
                           int G, int K, int S, int P, const float *y, double *scale)
{
  const int oh = (H + 2 * P - K) / S + 1, ow = (W + 2 * P - K) / S + 1, cg = C / G, fg = F / G;
  double worst = 0, big = 0;
  for (int b = 0; b < B; b++)
    for (int f = 0; f < F; f++)
      for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++) {
          double s = bias ? bias[f] : 0;
          const int g = f / fg;
          for (int c = 0; c < cg; c++)
            for (int ky = 0; ky < K; ky++)
              for (int kx = 0; kx < K; kx++) {
                const int iy = oy * S - P + ky, ix = ox * S - P + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                s += (double)w[(((size_t)f * cg + c) * K + ky) * K + kx] *
                     x[(((size_t)b * C + g * cg + c) * H + iy) * W + ix];
              }
          const double got = y[(((size_t)b * F + f) * oh + oy) * ow + ox];
          const double e = isnan(got) ? INFINITY : fabs(s - got);
          worst = fmax(worst, e);
          big = fmax(big, fabs(s));
        }
  if (scale) *scale = big;
  return worst;
}
