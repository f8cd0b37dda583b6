/* Activations in Darknet's vocabulary. Derivatives are written in terms of the activated output
 * y so that backward needs no copy of the pre-activation values. */
#include <math.h>
#include <string.h>

#include "cnnb/layer.h"
#include "core/simd.h"

/* Without trapping math GCC may evaluate both arms of a select (0.1f * x for leaky), so that the
 * leaky loops become vector blends instead of a branch per element (18% of a yolov3-tiny
 * forward). Results are unchanged: it only drops the assumption that FP exceptions trap. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

static const char *const act_names[CNNB_ACT_COUNT] = {"linear", "relu", "leaky", "logistic", "tanh",
                                                      "relu6"};

int cnnb_act_parse(const char *name)
{
  if (!name) return -1;
  for (int i = 0; i < CNNB_ACT_COUNT; i++)
    if (!strcmp(name, act_names[i])) return i;
  if (!strcmp(name, "sigmoid")) return CNNB_ACT_SIGMOID; /* common synonym, same function */
  return -1;
}

const char *cnnb_act_name(cnnb_act a)
{
  return (a >= 0 && a < CNNB_ACT_COUNT) ? act_names[a] : "unknown";
}

void cnnb_act_forward(cnnb_act a, float *x, size_t n)
{
  size_t i;
  switch (a) {
  case CNNB_ACT_LINEAR: break;
  case CNNB_ACT_RELU:
    for (i = 0; i < n; i++) x[i] = x[i] > 0.f ? x[i] : 0.f;
    break;
  case CNNB_ACT_LEAKY:
    for (i = 0; i < n; i++) x[i] = x[i] > 0.f ? x[i] : 0.1f * x[i];
    break;
  case CNNB_ACT_SIGMOID:
    for (i = 0; i < n; i++) x[i] = 1.f / (1.f + expf(-x[i]));
    break;
  case CNNB_ACT_TANH:
    for (i = 0; i < n; i++) x[i] = tanhf(x[i]);
    break;
  case CNNB_ACT_RELU6:
    for (i = 0; i < n; i++) {
      const float v = x[i] < 0.f ? 0.f : x[i]; /* the same selects as before, NaN stays NaN */
      x[i] = v > 6.f ? 6.f : v;
    }
    break;
  default: break;
  }
}

CNNB_CLONES void cnnb_act_affine(cnnb_act a, float *x, size_t n, float scale, float shift)
{
  size_t i;
  switch (a) { /* the common ones in one pass; the others after the affine pass */
  case CNNB_ACT_LINEAR:
    for (i = 0; i < n; i++) x[i] = scale * x[i] + shift;
    break;
  case CNNB_ACT_RELU:
    for (i = 0; i < n; i++) {
      const float v = scale * x[i] + shift;
      x[i] = v > 0.f ? v : 0.f;
    }
    break;
  case CNNB_ACT_LEAKY:
    for (i = 0; i < n; i++) {
      const float v = scale * x[i] + shift;
      x[i] = v > 0.f ? v : 0.1f * v;
    }
    break;
  default:
    for (i = 0; i < n; i++) x[i] = scale * x[i] + shift;
    cnnb_act_forward(a, x, n);
    break;
  }
}

void cnnb_act_backward(cnnb_act a, const float *y, float *delta, size_t n)
{
  /* Branch-free selects (one unconditional store per element): the compiler vectorises these
   * to a compare and a blend/and, where a conditional store on random signs mispredicts. */
  size_t i;
  switch (a) {
  case CNNB_ACT_LINEAR: break;
  case CNNB_ACT_RELU:
    for (i = 0; i < n; i++) delta[i] = y[i] > 0.f ? delta[i] : 0.f;
    break;
  case CNNB_ACT_LEAKY:
    /* y > 0 exactly when x > 0 because the slope is positive */
    for (i = 0; i < n; i++) delta[i] = y[i] > 0.f ? delta[i] : 0.1f * delta[i];
    break;
  case CNNB_ACT_SIGMOID:
    for (i = 0; i < n; i++) delta[i] *= y[i] * (1.f - y[i]);
    break;
  case CNNB_ACT_TANH:
    for (i = 0; i < n; i++) delta[i] *= 1.f - y[i] * y[i];
    break;
  case CNNB_ACT_RELU6:
    for (i = 0; i < n; i++) delta[i] = (y[i] > 0.f) & (y[i] < 6.f) ? delta[i] : 0.f;
    break;
  default: break;
  }
}
