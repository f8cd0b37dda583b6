/* Convolutional sliding windows (the course notes' trick): a classifier's [connected] layers
 * become convolutions, so that one forward pass over a larger image gives the classifier's
 * output at every window position. The first connected layer, over an f x f x c input, becomes
 * an f x f convolution with c input channels and the same weights (a connected layer's weights
 * [outputs, c*f*f] flatten its input in C x H x W order, which is exactly the layout of
 * convolution weights [filters, c, f, f], so no reordering is needed); later connected layers
 * become 1x1 convolutions. A final [softmax] is applied over the K classes at each position. */
#ifndef CNNB_SLIDING_H
#define CNNB_SLIDING_H

#include "cnnb/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnnb_sliding {
  cnnb_net *net;            /* the convolutional version at the larger input size (owned) */
  int softmax;              /* the classifier ends in [softmax]: applied per position */
  float temperature;
  int window_h, window_w;   /* the classifier's input size */
  int stride;               /* step between neighbouring windows, in input pixels */
  int oh, ow, k;            /* score map: oh x ow positions of k values */
  int padded;               /* some layer pads: positions touching the borders differ from lone crops */
  int uncovered;            /* (H - window) or (W - window) is not a multiple of stride */
} cnnb_sliding;

/* Model text (malloc'ed) of the convolutional version of classifier at input h x w; *softmax
 * and *temperature say whether a final softmax was taken off (it runs per position instead).
 * Errors: a layer that cannot run convolutionally (global average pooling, route, ...), a
 * first connected layer over a non-square input; each names the model, layer and reason. */
int cnnb_convolutionalize_cfg(const cnnb_net *classifier, int h, int w, char **text, int *softmax,
                              float *temperature);
/* Builds the convolutional version at h x w for max_batch images and copies every weight and
 * running statistic from classifier. */
int cnnb_sliding_init(cnnb_sliding *sw, const cnnb_net *classifier, int h, int w, int max_batch);
void cnnb_sliding_free(cnnb_sliding *sw);
/* Score maps of n images (NCHW at h x w): scores n x oh x ow x k (channels last). Window (i, j)
 * covers input rows i*stride .. i*stride+window_h-1, columns j*stride .. j*stride+window_w-1. */
void cnnb_sliding_forward(cnnb_sliding *sw, const float *x, int n, float *scores);
/* The reference: the classifier itself on every window cut out of the n images, up to
 * classifier->max_batch crops per forward; crops holds classifier->max_batch inputs; scores as
 * above. */
void cnnb_sliding_crops(cnnb_net *classifier, const cnnb_sliding *sw, const float *x, int n, float *crops,
                        float *scores);

#ifdef __cplusplus
}
#endif
#endif
