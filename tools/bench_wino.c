/* cnnb-bench-wino: F(2x2,3x3) against F(4x4,3x3) (src/core/winograd.c, docs/BENCHMARKS.md
 * item 17) on the 3x3 layer shapes of yolov3-tiny and the face descriptor, at several batch
 * sizes: ms per forward of each tile size (best of R interleaved repetitions, each at least 50
 * ms of calls, CPU time of the thread), their ratio and the tile cnnb_wino_tile picks. What
 * the chooser's rule is measured with.
 *
 *   cnnb-bench-wino [--reps R] [B C H W F ...]   (shapes: 5 numbers each, pad 1; default: the list below)
 *
 * Timings are the thread's CPU time (a descheduled moment does not count, but a busy sibling
 * core's cache traffic does): on a loaded machine read the ratios, not the times. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/winograd.h"

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ms per call of tile m, at least 50 ms of calls after one warm-up call */
static double time_tile(cnnb_wino **st, int m, const float *w, int F, int C, const float *x, int B, int H, int W,
                        float *y)
{
  if (cnnb_wino_forward_tile(st, m, w, F, C, x, B, H, W, 1, y) < 0) return -1;
  int n = 0;
  const double t0 = now_s();
  double t;
  do {
    cnnb_wino_forward_tile(st, m, w, F, C, x, B, H, W, 1, y);
    n++;
  } while ((t = now_s() - t0) < 0.05);
  return 1e3 * t / n;
}

int main(int argc, char **argv)
{
  static const int def[][5] = {
    /* yolov3-tiny 416: B C H W F */
    {8, 16, 208, 208, 32}, {8, 32, 104, 104, 64}, {8, 64, 52, 52, 128}, {8, 128, 26, 26, 256},
    {8, 256, 13, 13, 512}, {8, 512, 13, 13, 1024}, {8, 384, 26, 26, 256}, {5, 512, 13, 13, 1024},
    {2, 512, 13, 13, 1024}, {2, 256, 13, 13, 512}, {1, 384, 26, 26, 256}, {1, 64, 52, 52, 128},
    /* face descriptor (ResNet-34, 150x150 crops) */
    {8, 32, 35, 35, 32}, {8, 64, 17, 17, 64}, {8, 128, 8, 8, 128}, {3, 32, 35, 35, 32}, {3, 64, 17, 17, 64},
    {3, 128, 8, 8, 128}, {1, 32, 35, 35, 32}, {1, 64, 17, 17, 64}, {16, 128, 8, 8, 128}, {16, 256, 3, 3, 256},
    {32, 256, 3, 3, 256},
  };
  int reps = 3, nshape = (int)(sizeof def / sizeof def[0]);
  int(*shapes)[5] = malloc(sizeof *shapes * (size_t)(argc / 5 + nshape));
  int own = 0;
  for (int i = 1; i < argc; i++) {
    if (argv[i][0] == '-' && argv[i][1] == '-' && i + 1 < argc) {
      reps = atoi(argv[++i]);
      continue;
    }
    if (i + 4 >= argc) {
      fprintf(stderr, "usage: cnnb-bench-wino [--reps R] [B C H W F ...]\n");
      return 2;
    }
    for (int k = 0; k < 5; k++) shapes[own][k] = atoi(argv[i + k]);
    own++;
    i += 4;
  }
  if (!own)
    for (int s = 0; s < nshape; s++)
      for (int k = 0; k < 5; k++) shapes[s][k] = def[s][k];
  else
    nshape = own;
  printf("%-24s %9s %9s %7s %6s %6s\n", "B x C x H x W > F", "F2 ms", "F4 ms", "F4/F2", "worth", "tile");
  for (int s = 0; s < nshape; s++) {
    const int B = shapes[s][0], C = shapes[s][1], H = shapes[s][2], W = shapes[s][3], F = shapes[s][4];
    const size_t nx = (size_t)B * C * H * W, nw = (size_t)F * C * 9, ny = (size_t)B * F * H * W;
    float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w), *y = malloc(ny * sizeof *y);
    if (!x || !w || !y) return 1;
    for (size_t i = 0; i < nx; i++) x[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < nw; i++) w[i] = (float)((i * 40503u) % 1000) * 1e-4f - 0.05f;
    cnnb_wino *st = NULL;
    double best[2] = {1e30, 1e30};
    for (int r = 0; r < reps; r++)
      for (int k = 0; k < 2; k++) {
        const double t = time_tile(&st, 2 + 2 * k, w, F, C, x, B, H, W, y);
        if (t >= 0 && t < best[k]) best[k] = t;
      }
    char name[64];
    snprintf(name, sizeof name, "%dx%dx%dx%d > %d", B, C, H, W, F);
    printf("%-24s %9.3f %9.3f %7.2f %6d %6d\n", name, best[0], best[1], best[1] / best[0],
           cnnb_wino_worth(B, C, F, H, W), cnnb_wino_tile(B, C, F, H, W));
    fflush(stdout);
    cnnb_wino_free(st);
    free(x);
    free(w);
    free(y);
  }
  free(shapes);
  return 0;
}
