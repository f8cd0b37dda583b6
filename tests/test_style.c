/* Neural style transfer: the Gram matrix and both costs on a hand-worked case, their gradients
 * and the gradient with respect to the image (through the network) against finite differences,
 * a checker that catches a broken gradient, the total cost falling over the iterations, L-BFGS
 * on a convex quadratic (free and in a box) and against Adam on a tiny net, layer names, and the
 * style command with its bad inputs. */
#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "cnnb/ckpt.h"
#include "cnnb/image.h"
#include "cnnb/rng.h"
#include "cnnb/style.h"
#include "cnnb_test.h"

/* A = 2 channels x 3 positions [[1 2 3] [4 5 6]]:
 *   Gram = A A^T = [[14 32] [32 77]]
 *   J_content against a(C) = 0: (1+4+9+16+25+36) / (4*1*3*2) = 91/24
 *   J_style against Gram(S) = 0: (14^2 + 2*32^2 + 77^2) / (2*1*3*2)^2 = 8173/144 */
static const float A[6] = {1, 2, 3, 4, 5, 6};

static void test_hand_worked(void)
{
  float g[4], gg[4];
  cnnb_gram(A, 2, 3, g);
  CNNB_ASSERT_NEAR(g[0], 14, 0);
  CNNB_ASSERT_NEAR(g[1], 32, 0);
  CNNB_ASSERT_NEAR(g[2], 32, 0);
  CNNB_ASSERT_NEAR(g[3], 77, 0);
  const float zero[6] = {0};
  cnnb_shape s = {2, 1, 3};
  CNNB_ASSERT_NEAR(cnnb_content_cost(zero, A, s, 1, NULL), 91.0 / 24.0, 1e-12);
  CNNB_ASSERT_NEAR(cnnb_style_layer_cost(zero, A, s, gg, 1, NULL), 8173.0 / 144.0, 1e-9);
  /* against a(C) = A + 1 everywhere: 6 / 24 */
  float ac[6];
  for (int i = 0; i < 6; i++) ac[i] = A[i] + 1;
  CNNB_ASSERT_NEAR(cnnb_content_cost(ac, A, s, 1, NULL), 0.25, 1e-12);
  /* Gram(S) = Gram(A) gives 0 */
  CNNB_ASSERT_NEAR(cnnb_style_layer_cost(g, A, s, gg, 1, NULL), 0, 0);
}

/* Gradients of both costs with respect to the activations, against central differences. */
static void test_cost_gradients(void)
{
  cnnb_shape s = {3, 2, 2};
  float ag[12], ac[12], gs[9], gg[9], gc[12], gst[12];
  cnnb_rng r;
  cnnb_rng_seed(&r, 3, 0, 0, 0);
  for (int i = 0; i < 12; i++) ag[i] = cnnb_rng_normal(&r), ac[i] = cnnb_rng_normal(&r);
  cnnb_gram(ac, 3, 4, gs);
  memset(gc, 0, sizeof gc);
  memset(gst, 0, sizeof gst);
  cnnb_content_cost(ac, ag, s, 2.f, gc);
  cnnb_style_layer_cost(gs, ag, s, gg, 2.f, gst);
  for (int i = 0; i < 12; i++) {
    const float e = 1e-2f, keep = ag[i];
    ag[i] = keep + e;
    double cp = cnnb_content_cost(ac, ag, s, 1, NULL), sp = cnnb_style_layer_cost(gs, ag, s, gg, 1, NULL);
    ag[i] = keep - e;
    double cm = cnnb_content_cost(ac, ag, s, 1, NULL), sm = cnnb_style_layer_cost(gs, ag, s, gg, 1, NULL);
    ag[i] = keep;
    CNNB_ASSERT_NEAR(gc[i], 2 * (cp - cm) / (2 * e), 1e-4);
    CNNB_ASSERT_NEAR(gst[i], 2 * (sp - sm) / (2 * e), 1e-3 * (fabs(gst[i]) + 1e-2));
  }
}

static const char *tiny_cfg = "[net]\nheight=8\nwidth=8\nchannels=2\n"
                              "[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=tanh\n"
                              "[maxpool]\nsize=2\nstride=2\n"
                              "[convolutional]\nfilters=5\nsize=3\npad=1\nactivation=tanh\n"
                              "[convolutional]\nfilters=3\nsize=1\nactivation=linear\n";

static cnnb_net *build(const char *cfg, int input_grad)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = 1;
  o.input_grad = input_grad;
  o.quiet = 1;
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net, cfg, "tiny.cfg", &o);
  if (rc) fprintf(stderr, "\n  build: %s\n", cnnb_error_message());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  cnnb_net_init_params(net, 5);
  return net;
}

static void random_image(float *x, size_t n, unsigned seed)
{
  cnnb_rng r;
  cnnb_rng_seed(&r, seed, 9, 9, 9);
  for (size_t i = 0; i < n; i++) x[i] = cnnb_rng_normal(&r);
}

/* Worst relative error |a-n| / max(floor, |a|+|n|) of the analytic dJ/dG `grad` against central
 * differences of J on every input value; floor = 5% of the gradient's RMS. */
static double image_grad_error(cnnb_style *st, float *g, const float *grad, size_t n)
{
  double rms = 0, worst = 0;
  for (size_t i = 0; i < n; i++) rms += (double)grad[i] * grad[i];
  rms = sqrt(rms / (double)n);
  for (size_t i = 0; i < n; i++) {
    const float e = 1e-2f, keep = g[i];
    g[i] = keep + e;
    double jp = cnnb_style_cost(st, g, NULL, NULL);
    g[i] = keep - e;
    double jm = cnnb_style_cost(st, g, NULL, NULL);
    g[i] = keep;
    double num = (jp - jm) / (2 * e), a = grad[i];
    double rel = fabs(a - num) / fmax(0.05 * rms, fabs(a) + fabs(num));
    worst = rel > worst ? rel : worst;
  }
  return worst;
}

static void test_image_gradient(void)
{
  cnnb_net *net = build(tiny_cfg, 1);
  cnnb_style_opts o;
  cnnb_style_opts_init(&o);
  o.content_layer = 2;
  o.nstyle = 2;
  o.style_layers[0] = 0, o.style_weights[0] = 0.7f;
  o.style_layers[1] = 3, o.style_weights[1] = 0.3f;
  o.alpha = 2.f, o.beta = 5.f;
  cnnb_style st;
  CU_ASSERT_EQUAL_FATAL(cnnb_style_init(&st, net, &o), 0);
  CNNB_ASSERT_EQ_INT(st.last, 3);
  const size_t n = cnnb_shape_size(net->in);
  float c[128], s[128], g[128], grad[128];
  random_image(c, n, 1);
  random_image(s, n, 2);
  random_image(g, n, 3);
  cnnb_style_set_style(&st, s);
  cnnb_style_set_content(&st, c);
  double jc, js;
  double J = cnnb_style_cost(&st, g, &jc, &js);
  CNNB_ASSERT_NEAR(J, 2 * jc + 5 * js, 1e-9 * J);
  CU_ASSERT(jc > 0 && js > 0);
  memcpy(grad, net->input_delta, n * sizeof *grad);
  double err = image_grad_error(&st, g, grad, n);
  if (err > 1e-2) fprintf(stderr, "\n  worst relative error %g\n", err);
  CU_ASSERT(err < 1e-2);
  /* The checker catches a broken gradient: the analytic one of a different cost (style weight
   * doubled) against differences of the true cost. */
  st.o.beta = 10.f;
  cnnb_style_cost(&st, g, NULL, NULL);
  memcpy(grad, net->input_delta, n * sizeof *grad);
  st.o.beta = 5.f;
  double bad = image_grad_error(&st, g, grad, n);
  CU_ASSERT(bad > 0.05);
  /* ... and a gradient that misses the content term (alpha 0 in the backward only) */
  st.o.alpha = 0.f;
  cnnb_style_cost(&st, g, NULL, NULL);
  memcpy(grad, net->input_delta, n * sizeof *grad);
  st.o.alpha = 2.f;
  CU_ASSERT(image_grad_error(&st, g, grad, n) > 0.05);
  cnnb_style_free(&st);
  cnnb_net_free(net);
}

static void test_cost_falls(void)
{
  cnnb_net *net = build("[net]\nheight=16\nwidth=16\nchannels=3\n"
                        "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=relu\n"
                        "[maxpool]\nsize=2\nstride=2\n"
                        "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=relu\n",
                        1);
  cnnb_style_opts o;
  cnnb_style_opts_init(&o);
  o.content_layer = 2;
  o.nstyle = 2;
  o.style_layers[0] = 0, o.style_weights[0] = 0.5f;
  o.style_layers[1] = 2, o.style_weights[1] = 0.5f;
  o.steps = 80;
  o.lr = 0.05f;
  cnnb_style st;
  CU_ASSERT_EQUAL_FATAL(cnnb_style_init(&st, net, &o), 0);
  const size_t n = cnnb_shape_size(net->in);
  float *c = malloc(n * sizeof *c), *s = malloc(n * sizeof *s), *g = malloc(n * sizeof *g);
  double hist[80], j0, j1;
  random_image(c, n, 4);
  random_image(s, n, 5);
  cnnb_style_set_style(&st, s);
  cnnb_style_set_content(&st, c);
  CU_ASSERT_EQUAL(cnnb_style_run(&st, c, 0, g, &j0, &j1, hist), 0);
  printf("\n  J: %.4g (step 0) %.4g (20) %.4g (40) %.4g (79) -> %.4g\n", hist[0], hist[20], hist[40], hist[79], j1);
  CNNB_ASSERT_NEAR(j0, hist[0], 0);
  CU_ASSERT(hist[20] < hist[0]);
  CU_ASSERT(hist[40] < hist[20]);
  CU_ASSERT(j1 < hist[40]);
  CU_ASSERT(j1 < 0.3 * j0);
  /* the same seed and image give the same result */
  float *g2 = malloc(n * sizeof *g2);
  double k0, k1;
  cnnb_style_run(&st, c, 0, g2, &k0, &k1, NULL);
  CU_ASSERT(memcmp(g, g2, n * sizeof *g) == 0);
  free(g2);
  free(c);
  free(s);
  free(g);
  cnnb_style_free(&st);
  cnnb_net_free(net);
}

/* ---- L-BFGS ---- */

/* f(x) = 1/2 x'Ax - b'x with A = M'M + I (n x n, condition ~ 40), minimum x* chosen first,
 * b = A x*. The two-loop recursion has to get the off-diagonal curvature right to converge fast. */
enum { QN = 16 };
typedef struct quad {
  double A[QN][QN], b[QN];
  int evals;
} quad;

static double quad_fg(void *ctx, const float *x, float *g)
{
  quad *q = ctx;
  double f = 0;
  q->evals++;
  for (int i = 0; i < QN; i++) {
    double ax = 0;
    for (int j = 0; j < QN; j++) ax += q->A[i][j] * x[j];
    g[i] = (float)(ax - q->b[i]);
    f += 0.5 * x[i] * ax - q->b[i] * x[i];
  }
  return f;
}

static void quad_box(void *ctx, float *x)
{
  (void)ctx;
  for (int i = 0; i < QN; i++) x[i] = x[i] < -1.f ? -1.f : x[i] > 1.f ? 1.f : x[i];
}

static void make_quad(quad *q, float *xs, int diagonal)
{
  cnnb_rng r;
  cnnb_rng_seed(&r, 11, 0, 0, 0);
  double M[QN][QN];
  for (int i = 0; i < QN; i++)
    for (int j = 0; j < QN; j++) M[i][j] = diagonal ? (i == j) * (0.5 + 0.4 * i) : 0.5 * cnnb_rng_normal(&r);
  for (int i = 0; i < QN; i++) {
    for (int j = 0; j < QN; j++) {
      double a = i == j;
      for (int k = 0; k < QN; k++) a += M[k][i] * M[k][j];
      q->A[i][j] = a;
    }
    xs[i] = 2.f * cnnb_rng_normal(&r);
  }
  for (int i = 0; i < QN; i++) {
    q->b[i] = 0;
    for (int j = 0; j < QN; j++) q->b[i] += q->A[i][j] * xs[j];
  }
  q->evals = 0;
}

static void test_lbfgs_quadratic(void)
{
  quad q;
  float xs[QN], x[QN], g[QN];
  make_quad(&q, xs, 0);
  cnnb_lbfgs lb;
  CU_ASSERT_EQUAL_FATAL(cnnb_lbfgs_init(&lb, QN, 10), 0);
  memset(x, 0, sizeof x);
  double f = quad_fg(&q, x, g);
  int it = 0;
  double err = 1;
  for (; it < 60 && err > 1e-5; it++) {
    CU_ASSERT(cnnb_lbfgs_step(&lb, x, &f, g, quad_fg, NULL, &q) != CNNB_LBFGS_DONE);
    err = 0;
    for (int i = 0; i < QN; i++) err = fmax(err, fabs((double)x[i] - xs[i]));
  }
  printf("\n  quadratic n %d m 10: |x - x*|max %.2g after %d iterations, %d evaluations", QN, err, it, q.evals);
  CU_ASSERT(err < 1e-4);
  CU_ASSERT(it <= 30); /* steepest descent needs hundreds at this conditioning */
  /* m = 1: still converges, more slowly; the ring buffer wraps every iteration */
  cnnb_lbfgs_free(&lb);
  CU_ASSERT_EQUAL_FATAL(cnnb_lbfgs_init(&lb, QN, 1), 0);
  memset(x, 0, sizeof x);
  f = quad_fg(&q, x, g);
  for (it = 0, err = 1; it < 400 && err > 1e-5; it++) {
    cnnb_lbfgs_step(&lb, x, &f, g, quad_fg, NULL, &q);
    err = 0;
    for (int i = 0; i < QN; i++) err = fmax(err, fabs((double)x[i] - xs[i]));
  }
  printf("; m 1: %.2g after %d", err, it);
  CU_ASSERT(err < 1e-4);
  cnnb_lbfgs_free(&lb);
  /* In the box [-1, 1]^n with a diagonal A the minimum is x* clamped: the projected path and the
   * skipped pairs still get there. */
  make_quad(&q, xs, 1);
  CU_ASSERT_EQUAL_FATAL(cnnb_lbfgs_init(&lb, QN, 10), 0);
  memset(x, 0, sizeof x);
  f = quad_fg(&q, x, g);
  for (it = 0, err = 1; it < 100 && err > 1e-5; it++) {
    if (cnnb_lbfgs_step(&lb, x, &f, g, quad_fg, quad_box, &q) == CNNB_LBFGS_DONE) break;
    err = 0;
    for (int i = 0; i < QN; i++) err = fmax(err, fabs((double)x[i] - (xs[i] < -1 ? -1 : xs[i] > 1 ? 1 : xs[i])));
  }
  printf("; in a box: %.2g after %d\n", err, it);
  CU_ASSERT(err < 1e-4);
  cnnb_lbfgs_free(&lb);
}

/* L-BFGS on test_cost_falls's case: below the start, below Adam after the same iterations. */
static void test_lbfgs_vs_adam(void)
{
  cnnb_net *net = build("[net]\nheight=16\nwidth=16\nchannels=3\n"
                        "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=relu\n"
                        "[maxpool]\nsize=2\nstride=2\n"
                        "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=relu\n",
                        1);
  cnnb_style_opts o;
  cnnb_style_opts_init(&o);
  o.content_layer = 2;
  o.nstyle = 2;
  o.style_layers[0] = 0, o.style_weights[0] = 0.5f;
  o.style_layers[1] = 2, o.style_weights[1] = 0.5f;
  o.steps = 80;
  o.lr = 0.05f;
  /* the command's clamp, to [-2, 2], so that the projection is exercised too */
  o.clamp = 1;
  for (int k = 0; k < 3; k++) o.lo[k] = -2.f, o.hi[k] = 2.f;
  o.noise = 0.025f; /* 0.1 of the 4-wide range, like the command's 0.1 on [0, 1] */
  const size_t n = cnnb_shape_size(net->in);
  float *c = malloc(n * sizeof *c), *s = malloc(n * sizeof *s), *g = malloc(n * sizeof *g);
  random_image(c, n, 4);
  random_image(s, n, 5);
  for (size_t i = 0; i < n; i++) c[i] = c[i] < -2 ? -2 : c[i] > 2 ? 2 : c[i];
  double ja0, ja1, jl0, jl1, hist[80];
  cnnb_style st;
  CU_ASSERT_EQUAL_FATAL(cnnb_style_init(&st, net, &o), 0);
  cnnb_style_set_style(&st, s);
  cnnb_style_set_content(&st, c);
  CU_ASSERT_EQUAL(cnnb_style_run(&st, c, 0, g, &ja0, &ja1, NULL), 0);
  long adam_evals = st.evals;
  cnnb_style_free(&st);
  o.optimizer = CNNB_STYLE_LBFGS;
  CU_ASSERT_EQUAL_FATAL(cnnb_style_init(&st, net, &o), 0);
  cnnb_style_set_style(&st, s);
  cnnb_style_set_content(&st, c);
  CU_ASSERT_EQUAL(cnnb_style_run(&st, c, 0, g, &jl0, &jl1, hist), 0);
  printf("\n  80 iterations from J0 %.4g: Adam (lr 0.05) %.4g in %ld evaluations, L-BFGS %.4g in %ld (J %.4g at 10, "
         "%.4g at 20)\n",
         jl0, ja1, adam_evals, jl1, st.evals, hist[10], hist[20]);
  CNNB_ASSERT_NEAR(jl0, ja0, 0); /* the same G0 */
  CU_ASSERT(jl1 < jl0);
  CU_ASSERT(jl1 < ja1);
  for (int t = 1; t < 80; t++) CU_ASSERT(hist[t] <= hist[t - 1]); /* Armijo: never up */
  CU_ASSERT(st.evals >= 81 && st.evals <= 1 + 80L * CNNB_LBFGS_MAX_EVALS);
  for (size_t i = 0; i < n; i++) CU_ASSERT_FATAL(g[i] >= -2.f && g[i] <= 2.f);
  /* deterministic, and the state of a previous run does not leak into the next */
  float *g2 = malloc(n * sizeof *g2);
  double k0, k1;
  cnnb_style_run(&st, c, 0, g2, &k0, &k1, NULL);
  CU_ASSERT(memcmp(g, g2, n * sizeof *g) == 0);
  cnnb_style_free(&st);
  /* Far past convergence it stops at J's float precision instead of spending up to
   * CNNB_LBFGS_MAX_EVALS trials per iteration on rounding-level gains. */
  o.steps = 400;
  CU_ASSERT_EQUAL_FATAL(cnnb_style_init(&st, net, &o), 0);
  cnnb_style_set_style(&st, s);
  cnnb_style_set_content(&st, c);
  CU_ASSERT_EQUAL(cnnb_style_run(&st, c, 0, g2, &k0, &k1, NULL), 0);
  printf("  400 iterations: L-BFGS %.6g in %ld evaluations\n", k1, st.evals);
  CU_ASSERT(k1 <= jl1);
  CU_ASSERT(st.evals < 400);
  free(g2);
  free(c);
  free(s);
  free(g);
  cnnb_style_free(&st);
  cnnb_net_free(net);
}

static void test_layer_names(void)
{
  cnnb_net *net = build(tiny_cfg, 0);
  char name[64];
  const char *want[] = {"conv1_1", "maxpool_1", "conv2_1", "conv2_2"};
  for (int i = 0; i < 4; i++) {
    cnnb_net_layer_name(net, i, name, sizeof name);
    CU_ASSERT_STRING_EQUAL(name, want[i]);
    int k = -1;
    CU_ASSERT_EQUAL(cnnb_net_find_layer(net, want[i], &k), 0);
    CNNB_ASSERT_EQ_INT(k, i);
  }
  int k;
  CU_ASSERT_EQUAL(cnnb_net_find_layer(net, "2", &k), 0);
  CNNB_ASSERT_EQ_INT(k, 2);
  CU_ASSERT_EQUAL(cnnb_net_find_layer(net, "conv4_2", &k), CNNB_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "tiny.cfg: no layer 'conv4_2'"));
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "conv1_1 .. conv2_2"));
  CU_ASSERT_EQUAL(cnnb_net_find_layer(net, "7", &k), CNNB_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "no layer 7"));
  cnnb_net_free(net);
}

/* ---- the command, in process ---- */

static const char *write_text(const char *name, const char *text)
{
  const char *p = cnnb_test_path(name);
  FILE *f = fopen(p, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs(text, f);
  fclose(f);
  return p;
}

static const char *cmd_cfg = "[net]\nheight=12\nwidth=12\nchannels=3\n"
                             "[convolutional]\nfilters=6\nsize=3\npad=1\nactivation=relu\n"
                             "[maxpool]\nsize=2\nstride=2\n"
                             "[convolutional]\nfilters=6\nsize=3\npad=1\nactivation=relu\n";

static void make_files(void)
{
  const char *cfg = write_text("style_net.cfg", cmd_cfg);
  cnnb_net_opts o = cnnb_net_opts_default();
  cnnb_net *net;
  CU_ASSERT_EQUAL_FATAL(cnnb_net_load(&net, cfg, &o), 0);
  cnnb_net_init_params(net, 3);
  CU_ASSERT_EQUAL_FATAL(cnnb_ckpt_save(cnnb_test_path("style_w.h5"), net, NULL, NULL), 0);
  cnnb_net_free(net);
  unsigned char px[3 * 12 * 12 * 3];
  cnnb_rng r;
  cnnb_rng_seed(&r, 1, 2, 3, 4);
  for (size_t i = 0; i < sizeof px; i++) px[i] = (unsigned char)cnnb_rng_below(&r, 256);
  hid_t f = H5Fcreate(cnnb_test_path("content.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t dims[4] = {3, 12, 12, 3};
  hid_t sp = H5Screate_simple(4, dims, NULL);
  hid_t d = H5Dcreate2(f, "images", H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, px);
  H5Dclose(d);
  H5Sclose(sp);
  H5Fclose(f);
  unsigned char st[20 * 16 * 3], grey[20 * 16];
  for (int i = 0; i < 20 * 16; i++) {
    grey[i] = (unsigned char)((i % 16) * 16);
    for (int k = 0; k < 3; k++) st[i * 3 + k] = (unsigned char)(((i / 16) * 12 + k * 80 + (i % 16) * 5) % 256);
  }
  CU_ASSERT_EQUAL_FATAL(cnnb_jpeg_write(cnnb_test_path("style.jpg"), st, 20, 16, 3, 90), 0);
  CU_ASSERT_EQUAL_FATAL(cnnb_jpeg_write(cnnb_test_path("grey.jpg"), grey, 20, 16, 1, 90), 0);
}

static int run_style(const char *style, const char *out, const char *extra1, const char *extra2)
{
  char *argv[24];
  int n = 0;
  argv[n++] = "style";
  argv[n++] = (char *)cnnb_test_path("style_net.cfg");
  argv[n++] = "--weights";
  argv[n++] = (char *)cnnb_test_path("style_w.h5");
  argv[n++] = "--content";
  argv[n++] = (char *)cnnb_test_path("content.h5");
  argv[n++] = "--style";
  argv[n++] = (char *)style;
  argv[n++] = "-o";
  argv[n++] = (char *)out;
  argv[n++] = "--steps";
  argv[n++] = "30";
  argv[n++] = "--lr";
  argv[n++] = "0.05";
  if (extra1) argv[n++] = (char *)extra1;
  if (extra2) argv[n++] = (char *)extra2;
  argv[n] = NULL;
  return cnnb_cmd_style(n, argv);
}

static void test_style_command(void)
{
  make_files();
  const char *conf = write_text("style.ini", "# tiny net\n[style]\ncontent_layer = conv2_1\nstyle_layers = conv1_1, 2\n"
                                             "style_weights = 0.25, 0.75\nalpha = 10\nbeta = 40\n");
  const char *out = cnnb_test_path("styled.h5");
  CU_ASSERT_EQUAL_FATAL(run_style(cnnb_test_path("style.jpg"), out, "--config", conf), CNNB_EXIT_OK);
  hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
  CU_ASSERT_FATAL(f >= 0);
  hid_t d = H5Dopen2(f, "images", H5P_DEFAULT), sp = H5Dget_space(d), t = H5Dget_type(d);
  hsize_t got[4] = {0};
  CNNB_ASSERT_EQ_INT(H5Sget_simple_extent_dims(sp, got, NULL), 4);
  CU_ASSERT(got[0] == 3 && got[1] == 12 && got[2] == 12 && got[3] == 3);
  CU_ASSERT(H5Tget_size(t) == 1);
  H5Tclose(t);
  H5Sclose(sp);
  H5Dclose(d);
  float cost[6];
  d = H5Dopen2(f, "cost", H5P_DEFAULT);
  H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, cost);
  H5Dclose(d);
  H5Fclose(f);
  for (int i = 0; i < 3; i++) CU_ASSERT(cost[2 * i + 1] < cost[2 * i]);
  /* L-BFGS by the settings file and by the flag (which wins over the file) */
  const char *lconf = write_text("style_l.ini", "[style]\ncontent_layer = conv2_1\nstyle_layers = conv1_1, 2\n"
                                                "optimizer = adam\nhistory = 5\n");
  for (int by_flag = 0; by_flag < 2; by_flag++) {
    char cf[512];
    snprintf(cf, sizeof cf, "%s", by_flag ? lconf : write_text("style_l2.ini", "[style]\ncontent_layer = conv2_1\n"
                                                                               "style_layers = conv1_1, 2\noptimizer = lbfgs\n"));
    char o2[512];
    snprintf(o2, sizeof o2, "%s", cnnb_test_path(by_flag ? "styled_l2.h5" : "styled_l.h5"));
    char *argv[] = {"style", (char *)cnnb_test_path("style_net.cfg"), "--weights", (char *)cnnb_test_path("style_w.h5"),
                    "--content", (char *)cnnb_test_path("content.h5"), "--style", (char *)cnnb_test_path("style.jpg"),
                    "-o", o2, "--steps", "10", "--config", cf, by_flag ? "--optimizer" : "--seed",
                    by_flag ? "lbfgs" : "1", NULL};
    CU_ASSERT_EQUAL_FATAL(cnnb_cmd_style(16, argv), CNNB_EXIT_OK);
    f = H5Fopen(o2, H5F_ACC_RDONLY, H5P_DEFAULT);
    CU_ASSERT_FATAL(f >= 0);
    d = H5Dopen2(f, "cost", H5P_DEFAULT);
    H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, cost);
    H5Dclose(d);
    char *name = NULL; /* a variable-length string attribute */
    hid_t a = H5Aopen(f, "optimizer", H5P_DEFAULT), at = H5Aget_type(a);
    H5Aread(a, at, &name);
    H5Tclose(at);
    H5Aclose(a);
    H5Fclose(f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(name);
    CU_ASSERT_STRING_EQUAL(name, "lbfgs");
    H5free_memory(name);
    for (int i = 0; i < 3; i++) CU_ASSERT(cost[2 * i + 1] < cost[2 * i]);
  }
}

static void test_style_command_errors(void)
{
  /* cnnb_test_path's buffers rotate: keep copies of paths used across calls */
  char out[512], grey[512];
  snprintf(out, sizeof out, "%s", cnnb_test_path("bad.h5"));
  snprintf(grey, sizeof grey, "%s", cnnb_test_path("grey.jpg"));
  const char *good = write_text("good.ini", "[style]\ncontent_layer=conv2_1\nstyle_layers=conv1_1,conv2_1\n");
  CU_ASSERT_EQUAL(run_style(grey, out, "--config", good), CNNB_EXIT_FAIL);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "grey.jpg: the style image has 1 channel (greyscale) but"));
  /* the default content layer, conv4_2, is not in this model */
  CU_ASSERT_EQUAL(run_style(cnnb_test_path("style.jpg"), out, NULL, NULL), CNNB_EXIT_FAIL);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "content layer: "));
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "style_net.cfg: no layer 'conv4_2'"));
  const char *opt = write_text("opt.ini", "[style]\ncontent_layer=0\nstyle_layers=0\noptimizer=sgd\n");
  CU_ASSERT_EQUAL(run_style(cnnb_test_path("style.jpg"), out, "--config", opt), CNNB_EXIT_FAIL);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "optimizer = 'sgd': expected adam or lbfgs"));
  const char *conf = write_text("bad.ini", "[style]\ncontent_layer=0\nstyle_layer=0\n");
  CU_ASSERT_EQUAL(run_style(cnnb_test_path("style.jpg"), out, "--config", conf), CNNB_EXIT_FAIL);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "bad.ini:3: unknown key 'style_layer'"));
  FILE *g = fopen(out, "rb");
  CU_ASSERT_PTR_NULL(g);
  if (g) fclose(g);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (CU_initialize_registry() != CUE_SUCCESS) {
    MPI_Finalize();
    return 1;
  }
  CU_pSuite s = CU_add_suite("style", NULL, NULL);
  CU_add_test(s, "Gram matrix and both costs, worked by hand", test_hand_worked);
  CU_add_test(s, "cost gradients against finite differences", test_cost_gradients);
  CU_add_test(s, "dJ/d image through the network against finite differences", test_image_gradient);
  CU_add_test(s, "total cost falls over the iterations", test_cost_falls);
  CU_add_test(s, "L-BFGS on a convex quadratic, free and in a box", test_lbfgs_quadratic);
  CU_add_test(s, "L-BFGS on the image: below the start and below Adam", test_lbfgs_vs_adam);
  CU_add_test(s, "layer names and lookup", test_layer_names);
  CU_add_test(s, "style command", test_style_command);
  CU_add_test(s, "style command: bad inputs", test_style_command_errors);
  int rc = cnnb_test_run();
  MPI_Finalize();
  return rc;
}
