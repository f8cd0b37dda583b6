/* Hand-made kernels and the one-layer depthwise network that applies them (include/cnnb/filter.h).
 * Running them through [convolutional] rather than a loop of our own keeps one convolution in
 * the code base, so filters, padding and stride mean what they mean in models. */
#include "cnnb/filter.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"

int cnnb_kernel_named(const char *name, cnnb_kernel *k)
{
  static const struct {
    const char *name;
    float w[9];
  } named[] = {
    {"vertical", {1, 0, -1, 1, 0, -1, 1, 0, -1}},
    {"horizontal", {1, 1, 1, 0, 0, 0, -1, -1, -1}},
    {"sobel", {1, 0, -1, 2, 0, -2, 1, 0, -1}},
    {"scharr", {3, 0, -3, 10, 0, -10, 3, 0, -3}},
  };
  for (size_t i = 0; i < sizeof named / sizeof *named; i++)
    if (!strcmp(name, named[i].name)) {
      memset(k, 0, sizeof *k);
      k->size = 3;
      memcpy(k->w, named[i].w, sizeof named[i].w);
      snprintf(k->name, sizeof k->name, "%s", name);
      return 0;
    }
  return cnnb_error(CNNB_EINVAL, "unknown kernel '%s' (known: vertical, horizontal, sobel, scharr, or a file)", name);
}

int cnnb_kernel_load(const char *path, cnnb_kernel *k)
{
  memset(k, 0, sizeof *k);
  FILE *f = fopen(path, "r");
  if (!f) return cnnb_error(CNNB_EIO, "%s: %s", path, errno == ENOENT ? "no such file" : strerror(errno));
  char line[4096];
  int lineno = 0, rows = 0, cols = 0, last = 0, rc = 0;
  while (!rc && fgets(line, sizeof line, f)) {
    lineno++;
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *p = line;
    float row[CNNB_KERNEL_MAX];
    int n = 0;
    for (;;) {
      while (isspace((unsigned char)*p)) p++;
      if (!*p) break;
      char *end;
      double v = strtod(p, &end);
      if (end == p || (*end && !isspace((unsigned char)*end))) {
        int len = (int)strcspn(p, " \t\r\n");
        rc = cnnb_error(CNNB_EINVAL, "%s:%d: '%.*s' is not a number", path, lineno, len, p);
        break;
      }
      if (n == CNNB_KERNEL_MAX) {
        rc = cnnb_error(CNNB_EINVAL, "%s:%d: more than %d numbers in a row (largest kernel %dx%d)", path, lineno,
                        CNNB_KERNEL_MAX, CNNB_KERNEL_MAX, CNNB_KERNEL_MAX);
        break;
      }
      row[n++] = (float)v;
      p = end;
    }
    if (rc || !n) continue;
    if (!rows) cols = n;
    if (n != cols)
      rc = cnnb_error(CNNB_EINVAL, "%s:%d: row %d has %d numbers but row 1 has %d (a kernel is k rows of k numbers)",
                      path, lineno, rows + 1, n, cols);
    else if (rows == cols)
      rc = cnnb_error(CNNB_EINVAL, "%s:%d: row %d of a kernel %d numbers wide: a kernel is square (k rows of k numbers)",
                      path, lineno, rows + 1, cols);
    else
      memcpy(k->w + (size_t)rows++ * cols, row, sizeof(float) * (size_t)n);
    last = lineno;
  }
  fclose(f);
  if (rc) return rc;
  if (!rows) return cnnb_error(CNNB_EINVAL, "%s: no kernel rows (expected k lines of k numbers)", path);
  if (rows != cols)
    return cnnb_error(CNNB_EINVAL, "%s:%d: the kernel ends after %d rows of %d numbers: a kernel is square (k rows of k numbers)",
                      path, last, rows, cols);
  k->size = cols;
  const char *base = strrchr(path, '/');
  snprintf(k->name, sizeof k->name, "%s", base ? base + 1 : path);
  return 0;
}

int cnnb_kernel_get(const char *spec, cnnb_kernel *k)
{
  static const char *const names[] = {"vertical", "horizontal", "sobel", "scharr"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (!strcmp(spec, names[i])) return cnnb_kernel_named(spec, k);
  return cnnb_kernel_load(spec, k);
}

int cnnb_filter_net(cnnb_net **out, const cnnb_kernel *k, int h, int w, int c, int stride, int pad, int max_batch)
{
  *out = NULL;
  if (k->size < 1 || k->size > CNNB_KERNEL_MAX)
    return cnnb_error(CNNB_EINVAL, "kernel '%s': bad size %d", k->name, k->size);
  char cfg[512];
  snprintf(cfg, sizeof cfg,
           "[net]\nheight=%d\nwidth=%d\nchannels=%d\n"
           "[convolutional]\nfilters=%d\ngroups=%d\nsize=%d\nstride=%d\npadding=%d\nactivation=linear\n",
           h, w, c, c, c, k->size, stride, pad);
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = max_batch;
  o.quiet = 1;
  cnnb_net *net;
  int rc = cnnb_net_from_string(&net, cfg, "filter-layer", &o); /* the prefix below names the kernel */
  if (rc) return cnnb_error_prefix(rc, "kernel %s (%dx%d) on %dx%dx%d images, stride %d, padding %d: ", k->name,
                                   k->size, k->size, h, w, c, stride, pad);
  cnnb_layer *l = &net->layers[0];
  cnnb_param *wp = cnnb_layer_find_param(l, "weights"), *bp = cnnb_layer_find_param(l, "biases");
  /* weights [c, 1, k, k]: the same kernel for every channel (depthwise) */
  size_t kk = (size_t)k->size * k->size;
  for (int ch = 0; ch < c; ch++) memcpy(wp->data + ch * kk, k->w, kk * sizeof(float));
  memset(bp->data, 0, bp->count * sizeof(float));
  *out = net;
  return 0;
}
