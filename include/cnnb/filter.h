/* Classic hand-made filters (the course notes' edge detectors, or any square kernel from a
 * file) run through the network's own [convolutional] layer: a one-layer depthwise network
 * (groups = channels) that applies the same kernel to every channel on its own. */
#ifndef CNNB_FILTER_H
#define CNNB_FILTER_H

#include "cnnb/net.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CNNB_KERNEL_MAX 31 /* largest kernel side */

typedef struct cnnb_kernel {
  int size;                                   /* k: the kernel is k x k */
  float w[CNNB_KERNEL_MAX * CNNB_KERNEL_MAX]; /* row-major, row 0 on top; not flipped */
  char name[64];                              /* "vertical", ... or the file's base name */
} cnnb_kernel;

/* vertical [1 0 -1] rows, horizontal (its transpose), sobel [1 0 -1; 2 0 -2; 1 0 -1],
 * scharr [3 0 -3; 10 0 -10; 3 0 -3], as in the notes (vertical-edge forms). Returns
 * CNNB_EINVAL for another name. */
int cnnb_kernel_named(const char *name, cnnb_kernel *k);
/* A kernel file: k lines of k whitespace-separated numbers (blank lines and '#' comments
 * skipped). A row of another length, a non-number or a non-square kernel is an error naming the
 * file and line. */
int cnnb_kernel_load(const char *path, cnnb_kernel *k);
/* A built-in name, else a file. */
int cnnb_kernel_get(const char *spec, cnnb_kernel *k);

/* One [convolutional] layer, filters = groups = c, size k, the given stride and padding (zeros
 * on every side), linear activation, no bias: every channel filtered by the same kernel.
 * Input h x w x c; the network is built for max_batch images and its weights are set. */
int cnnb_filter_net(cnnb_net **net, const cnnb_kernel *k, int h, int w, int c, int stride, int pad, int max_batch);

#ifdef __cplusplus
}
#endif
#endif
