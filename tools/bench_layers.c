/* cnnb-bench-layers: where a training step (or a forward) goes, layer by layer
 * (docs/BENCHMARKS.md). Builds MODEL.cfg with cnnb_net_load, feeds random inputs and labels,
 * and times every layer's forward and backward, the gradient and delta zeroing and the SGD step
 * over S steps after 3 warm-up steps; prints one line per layer (ms per step, share, GFLOP/s at
 * 2 (forward) or 6 (training) flops per multiply-add) and the total as images/s.
 *
 *   cnnb-bench-layers MODEL.cfg [--h H] [--w W] [--batch B] [--steps S] [--train 0|1]
 *
 * Timings are wall-clock: on a loaded machine compare builds interleaved, not across minutes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnnb/error.h"
#include "cnnb/net.h"
#include "cnnb/optim.h"

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
  const char *model = NULL;
  int H = 0, W = 0, B = 32, steps = 20, train = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--h") && i + 1 < argc)
      H = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--w") && i + 1 < argc)
      W = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
      B = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--train") && i + 1 < argc)
      train = atoi(argv[++i]);
    else if (argv[i][0] != '-' && !model)
      model = argv[i];
    else
      model = NULL, i = argc;
  }
  if (!model || B < 1 || steps < 1) {
    fprintf(stderr, "usage: cnnb-bench-layers MODEL.cfg [--h H] [--w W] [--batch B] [--steps S] [--train 0|1]\n");
    return 2;
  }
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = B;
  o.train = train;
  o.h = H;
  o.w = W;
  o.quiet = 1;
  cnnb_net *net = NULL;
  if (cnnb_net_load(&net, model, &o) < 0) {
    fprintf(stderr, "cnnb-bench-layers: %s\n", cnnb_error_message());
    return 1;
  }
  cnnb_net_init_params(net, 1);
  const size_t in = cnnb_shape_size(net->in);
  float *x = malloc(sizeof *x * in * (size_t)B);
  int *y = malloc(sizeof *y * (size_t)B);
  double *tf = calloc((size_t)net->n, sizeof *tf), *tb = calloc((size_t)net->n, sizeof *tb);
  cnnb_optim opt;
  int rc = !x || !y || !tf || !tb ? 1 : 0;
  if (!rc && train && cnnb_optim_init(&opt, CNNB_OPTIM_SGD, net) < 0) rc = 1;
  if (rc) {
    fprintf(stderr, "cnnb-bench-layers: out of memory\n");
    return 1;
  }
  srand(1);
  for (size_t i = 0; i < in * (size_t)B; i++) x[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  for (int i = 0; i < B; i++) y[i] = i % 10;
  net->truth = y;
  double tzero = 0, topt = 0;
  for (int s = 0; s < steps + 3; s++) {
    const int rec = s >= 3;
    double t0 = now_s();
    if (train) cnnb_net_zero_grads(net);
    if (rec) tzero += now_s() - t0;
    net->batch = B;
    net->input = x;
    net->layers[0].input = x;
    for (int i = 0; i < net->n; i++) {
      const double a = now_s();
      net->layers[i].ops->forward(&net->layers[i], net);
      if (rec) tf[i] += now_s() - a;
    }
    if (!train) continue;
    cnnb_net_loss(net);
    t0 = now_s();
    for (int i = 0; i < net->n - 1; i++)
      memset(net->layers[i].delta, 0, (size_t)B * cnnb_shape_size(net->layers[i].out) * sizeof(float));
    if (rec) tzero += now_s() - t0;
    for (int i = net->n - 1; i >= 0; i--) {
      const double a = now_s();
      net->layers[i].ops->backward(&net->layers[i], net);
      if (rec) tb[i] += now_s() - a;
    }
    t0 = now_s();
    cnnb_optim_step(&opt, net->params, net->grads, 0.001f);
    if (rec) topt += now_s() - t0;
  }
  double total = tzero + topt;
  for (int i = 0; i < net->n; i++) total += tf[i] + tb[i];
  printf("# %s, batch %d, %s, %d steps\n", model, B, train ? "training" : "forward", steps);
  for (int i = 0; i < net->n; i++) {
    const cnnb_layer *l = &net->layers[i];
    const double t = (tf[i] + tb[i]) / steps;
    printf("%3d %-14s %4dx%4dx%4d > %4dx%4dx%4d  fwd %8.3f ms  bwd %8.3f ms  %5.1f%%  %7.1f GFLOP/s\n", i,
           l->ops->section, l->in.c, l->in.h, l->in.w, l->out.c, l->out.h, l->out.w, tf[i] / steps * 1e3,
           tb[i] / steps * 1e3, 100 * (tf[i] + tb[i]) / total,
           t > 0 ? (train ? 6 : 2) * l->madds * B / t / 1e9 : 0.0);
  }
  if (train)
    printf("zeroing (gradients, deltas) %.3f ms, SGD step %.3f ms\n", tzero / steps * 1e3, topt / steps * 1e3);
  printf("total %.2f ms per step = %.1f images/s\n", total / steps * 1e3, B * steps / total);
  if (train) cnnb_optim_free(&opt);
  free(x);
  free(y);
  free(tf);
  free(tb);
  cnnb_net_free(net);
  return 0;
}
