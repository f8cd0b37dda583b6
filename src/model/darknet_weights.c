/* Darknet .weights files to and from a built network (layout in include/cnnb/detect.h and
 * docs/FORMATS.md "Darknet weights"). Parameters are looked up by name, not by position, so
 * the order of declaration inside a layer kind does not matter; the order of a kind's arrays in
 * the file is Darknet's. The size is checked before anything is read: Darknet itself reads a
 * short or long file silently, which is how a wrong cfg goes unnoticed. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cnnb/detect.h"
#include "cnnb/error.h"

#define MAX_ARRAYS 4

/* The arrays of layer l in file order; 0 for a kind without any in Darknet's files. A layer
 * with trainable parameters that Darknet's format cannot hold gives -1. */
static int layer_arrays(cnnb_layer *l, cnnb_param **a)
{
  const char *kind = cnnb_layer_kind(l);
  static const char *const conv[] = {"biases", "scales", "rolling_mean", "rolling_variance", "weights", NULL};
  static const char *const conn[] = {"biases", "weights", "scales", "rolling_mean", "rolling_variance", NULL};
  static const char *const bn[] = {"scales", "rolling_mean", "rolling_variance", NULL};
  const char *const *names = !strcmp(kind, "convolutional") ? conv
                             : !strcmp(kind, "connected")   ? conn
                             : !strcmp(kind, "batchnorm")   ? bn
                                                            : NULL;
  if (!names) return l->nparam ? -1 : 0;
  int n = 0;
  for (int i = 0; names[i]; i++) {
    cnnb_param *p = cnnb_layer_find_param(l, names[i]);
    if (p) a[n++] = p; /* scales etc. exist only with batch_normalize */
  }
  return n;
}

static int arrays_or_error(const cnnb_net *net, cnnb_layer *l, cnnb_param **a)
{
  int n = layer_arrays(l, a);
  if (n < 0)
    return cnnb_error(CNNB_EINVAL, "%s: layer %d [%s] has parameters that Darknet .weights files cannot hold",
                      net->cfg.path, l->index, cnnb_layer_kind(l));
  return n;
}

static size_t payload_floats(const cnnb_net *net, int *rc)
{
  size_t n = 0;
  *rc = 0;
  for (int i = 0; i < net->n; i++) {
    cnnb_param *a[2 * MAX_ARRAYS];
    int k = arrays_or_error(net, &net->layers[i], a);
    if (k < 0) {
      *rc = k;
      return 0;
    }
    for (int j = 0; j < k; j++) n += a[j]->count;
  }
  return n;
}

size_t cnnb_darknet_weights_size(const cnnb_net *net)
{
  int rc;
  return 20 + 4 * payload_floats(net, &rc);
}

int cnnb_darknet_weights_load(cnnb_net *net, const char *path, long long *seen)
{
  int rc;
  size_t nfloats = payload_floats(net, &rc);
  if (rc) return rc;
  FILE *f = fopen(path, "rb");
  if (!f) return cnnb_error(CNNB_EIO, "%s: %s", path, strerror(errno));
  struct stat st;
  int32_t hdr[3] = {0, 0, 0};
  if (fstat(fileno(f), &st) || fread(hdr, 4, 3, f) != 3) {
    fclose(f);
    return cnnb_error(CNNB_EIO, "%s: not a Darknet weights file (shorter than its 12-byte header)", path);
  }
  /* images seen: size_t from version 0.2 on, int before (Darknet's parser.c) */
  const int wide = hdr[0] * 10 + hdr[1] >= 2 && hdr[0] < 1000 && hdr[1] < 1000;
  const size_t head = wide ? 20 : 16, want = head + 4 * nfloats;
  if (hdr[0] > 1000 || hdr[1] > 1000) {
    fclose(f);
    return cnnb_error(CNNB_EIO, "%s: transposed weights (version %d.%d) are not supported", path, hdr[0], hdr[1]);
  }
  if ((size_t)st.st_size != want) {
    fclose(f);
    return cnnb_error(CNNB_EIO,
                      "%s: %lld bytes, but %s needs %zu (%zu-byte header + %zu floats): the weights are for "
                      "another model",
                      path, (long long)st.st_size, net->cfg.path, want, head, nfloats);
  }
  uint64_t s = 0;
  if (wide) {
    if (fread(&s, 8, 1, f) != 1) rc = -1;
  } else {
    uint32_t s32 = 0;
    if (fread(&s32, 4, 1, f) != 1) rc = -1;
    s = s32;
  }
  for (int i = 0; i < net->n && !rc; i++) {
    cnnb_param *a[2 * MAX_ARRAYS];
    int k = layer_arrays(&net->layers[i], a);
    for (int j = 0; j < k && !rc; j++)
      if (fread(a[j]->data, sizeof(float), a[j]->count, f) != a[j]->count) rc = -1;
  }
  fclose(f);
  if (rc) return cnnb_error(CNNB_EIO, "%s: read error", path);
  if (seen) *seen = (long long)s;
  return 0;
}

int cnnb_darknet_weights_save(const cnnb_net *net, const char *path, long long seen)
{
  int rc;
  payload_floats(net, &rc);
  if (rc) return rc;
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return cnnb_error(CNNB_EINVAL, "%s: path too long", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) return cnnb_error(CNNB_EIO, "%s: %s", tmp, strerror(errno));
  const int32_t hdr[3] = {0, 2, 0};
  const uint64_t s = (uint64_t)seen;
  int ok = fwrite(hdr, 4, 3, f) == 3 && fwrite(&s, 8, 1, f) == 1;
  for (int i = 0; i < net->n && ok; i++) {
    cnnb_param *a[2 * MAX_ARRAYS];
    int k = layer_arrays(&net->layers[i], a);
    for (int j = 0; j < k && ok; j++) ok = fwrite(a[j]->data, sizeof(float), a[j]->count, f) == a[j]->count;
  }
  if (fclose(f)) ok = 0;
  if (!ok || rename(tmp, path)) {
    remove(tmp);
    return cnnb_error(CNNB_EIO, "%s: write failed: %s", path, strerror(errno));
  }
  return 0;
}
