/* The `info` table (cnnb_net_print_summary in include/cnnb/net.h): one row per layer, then
 * totals. Works on a planned network (max_batch = 0): it reads only shapes, parameter counts and
 * l->madds, never buffers. */
#include <stdio.h>
#include <string.h>

#include "cnnb/net.h"

/* Writes v with thousands separators ("138,357,544") into buf. */
static const char *grouped(char *buf, size_t n, unsigned long long v)
{
  char digits[32];
  int len = snprintf(digits, sizeof digits, "%llu", v), o = 0;
  for (int i = 0; i < len && (size_t)o + 2 < n; i++) {
    if (i && (len - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = 0;
  return buf;
}

void cnnb_net_print_summary(const cnnb_net *net, void *file)
{
  FILE *f = file ? (FILE *)file : stdout;
  char a[32], b[32], c[32];
  double madds = 0, acts = 0;
  fprintf(f, "%s: input %d x %d x %d, %d layers\n", net->cfg.path, net->in.h, net->in.w, net->in.c, net->n);
  fprintf(f, "%5s  %-14s %20s %14s %14s %16s\n", "layer", "type", "output (H x W x C)", "activations",
          "parameters", "multiply-adds");
  for (int i = 0; i < net->n; i++) {
    const cnnb_layer *l = &net->layers[i];
    char shape[48];
    snprintf(shape, sizeof shape, "%d x %d x %d", l->out.h, l->out.w, l->out.c);
    size_t n = cnnb_shape_size(l->out);
    fprintf(f, "%5d  %-14s %20s %14s %14s %16s\n", i, cnnb_layer_kind(l), shape, grouped(a, sizeof a, n),
            grouped(b, sizeof b, cnnb_layer_num_trainable(l)),
            grouped(c, sizeof c, (unsigned long long)(l->madds + 0.5)));
    madds += l->madds;
    acts += (double)n;
  }
  fprintf(f, "total trainable parameters: %s\n", grouped(a, sizeof a, cnnb_net_num_trainable(net)));
  /* G for ImageNet-sized models, M below, so the number stays readable either way. */
  if (madds >= 1e9)
    fprintf(f, "total multiply-adds: %.2f G per sample\n", madds / 1e9);
  else
    fprintf(f, "total multiply-adds: %.2f M per sample\n", madds / 1e6);
  /* Every layer's output is kept for backward, so their sum is what training holds per sample
   * (deltas double it). */
  double mib = acts * sizeof(float) / (1024.0 * 1024.0);
  fprintf(f, "activation memory: %.2f MiB per sample (float32 layer outputs), %.1f MiB at batch %d\n", mib,
          mib * net->hp.batch, net->hp.batch);
}
