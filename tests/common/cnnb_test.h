/* Shared test helpers: assertions that print both values, a temp directory, and the
 * finite-difference gradient checker used by every layer's test. */
#ifndef CNNB_TEST_H
#define CNNB_TEST_H

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>

#include "cnnb/error.h"
#include "cnnb/net.h"

/* Asserts |a-b| <= tol and prints both values when it fails. */
#define CNNB_ASSERT_NEAR(a, b, tol)                                                                \
  do {                                                                                             \
    double _a = (a), _b = (b), _t = (tol);                                                         \
    if (!(fabs(_a - _b) <= _t))                                                                    \
      fprintf(stderr, "\n  %s:%d: %s = %.8g, expected %s = %.8g (tol %g)\n", __FILE__, __LINE__,   \
              #a, _a, #b, _b, _t);                                                                 \
    CU_ASSERT(fabs(_a - _b) <= _t);                                                                \
  } while (0)

#define CNNB_ASSERT_EQ_INT(a, b)                                                                   \
  do {                                                                                             \
    long long _a = (a), _b = (b);                                                                  \
    if (_a != _b) fprintf(stderr, "\n  %s:%d: %s = %lld, expected %lld\n", __FILE__, __LINE__, #a, _a, _b); \
    CU_ASSERT_EQUAL(_a, _b);                                                                       \
  } while (0)

/* A fresh temporary directory for this test process (created once, removed by the OS later). */
const char *cnnb_test_tmpdir(void);
/* Builds a path inside the temp dir into a static rotating buffer. */
const char *cnnb_test_path(const char *name);
/* Source tree root (CNNB_SOURCE_DIR from ctest, else "."). */
const char *cnnb_test_source_dir(void);

/* The network of cfg (text; its [net] gives the input) with max batch max_batch, in train mode
 * or not, quietly; asserts that it builds (printing the error) and returns it, or NULL. */
cnnb_net *cnnb_test_net(const char *cfg, int max_batch, int train);

typedef struct cnnb_gradcheck_result {
  double max_rel_input;  /* worst relative error of dL/d input */
  double max_rel_param;  /* worst relative error over all trainable parameters */
  int checked;           /* number of values compared */
} cnnb_gradcheck_result;

/* Builds the network of cfg_text (its [net] gives the input size) with max batch `batch`,
 * random parameters and input from seed, train mode `train` (dropout is seeded per forward
 * so the same mask repeats), loss L = sum(r . output) with a fixed random r, and compares the
 * analytic dL/d input and dL/d params against central differences (eps 1e-3, in float, on up
 * to `max_checks` randomly chosen entries of each). Relative error is
 * |a-n| / max(floor, |a|+|n|) with floor = 5% of the gradient's RMS (float rounding noise sits
 * well below it; a wrong backward does not). Prints the worst entries. Returns 0 or an error. */
int cnnb_gradcheck(const char *cfg_text, int batch, unsigned seed, int train, int max_checks,
                   cnnb_gradcheck_result *res);

/* For a net ending in a loss layer whose truth is set (net->truth or truth_f, loss_scale):
 * one train step on x (n samples) gives dL/d input and dL/d params, compared over every entry
 * against central differences (step eps) of cnnb_net_loss. Relative error is
 * |a-n| / (floor_abs + floor_rel * max|dL/dx| + |a| + |n|); prints entries above 1e-2 and
 * returns the worst. x is restored; the net keeps the gradients of the train step. */
double cnnb_gradcheck_loss(cnnb_net *net, float *x, int n, float eps, double floor_abs, double floor_rel);

/* The largest |y - direct convolution| over a convolution's output (B x F x oh x ow, weights
 * F x C/G x K x K, stride S, padding P on every side, bias optional), computed in double by
 * plain loops; a NaN in y counts as infinite. *scale (if given): the largest |reference|. */
double cnnb_test_conv_diff(const float *x, const float *w, const float *bias, int B, int C, int H, int W, int F,
                           int G, int K, int S, int P, const float *y, double *scale);

/* Runs a CUnit registry in verbose basic mode; returns the process exit code. */
int cnnb_test_run(void);

#endif
