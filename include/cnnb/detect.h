/* Object detection: boxes, intersection over union, per-class non-max suppression, decoding of
 * the [yolo] (v3) and [region] (v2) heads with Darknet's formulas, Darknet's letterbox resize,
 * and Darknet .weights files. Boxes are (x, y, w, h) with (x, y) the centre.
 *
 *   cnnb_letterbox(rgb, h, w, 3, x, net->in.h, net->in.w, scratch);   // network input
 *   cnnb_net_forward(net, x, 1);
 *   int n = cnnb_detect(net, 0, w, h, 0.25f, 0.45f, dets, cap);         // boxes in pixels
 */
#ifndef CNNB_DETECT_H
#define CNNB_DETECT_H

#include <stddef.h>

#include "cnnb/net.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Truths for the [yolo] loss: net->truth_f holds, per sample, CNNB_YOLO_MAX_TRUTH rows of
 * x, y, w, h (centre and size relative to the network input, 0..1) and the class; a row with
 * w <= 0 ends the sample's list. */
#define CNNB_YOLO_MAX_TRUTH 32

typedef struct cnnb_box {
  float x, y, w, h; /* centre and size */
} cnnb_box;

/* One candidate: a box and one class whose score (objectness x class probability) passed the
 * threshold. A box that passes for several classes gives several candidates, as in Darknet. */
typedef struct cnnb_det {
  cnnb_box box;
  float score;
  float objectness;
  int cls;
} cnnb_det;

/* Intersection area over union area; 0 for disjoint boxes or an empty union. */
float cnnb_box_iou(cnnb_box a, cnnb_box b);

/* Non-max suppression per class, in place: within each class, take the candidate with the
 * highest score, drop every remaining one of that class whose IoU with it exceeds thresh,
 * repeat. The kept candidates are moved to the front, ordered by class then falling score;
 * returns their count. No allocation. */
int cnnb_nms(cnnb_det *d, int n, float thresh);

/* Decoding of one detection head's output for sample b (after its forward), into candidates
 * in network-relative coordinates (0..1 of the network input), Darknet's rules: a box is
 * considered when its objectness > thresh, and gives a candidate per class whose
 * objectness x class probability > thresh. Appends at most cap candidates to out and returns
 * how many it would have written (more than cap means some were dropped). */
size_t cnnb_yolo_decode(const cnnb_layer *l, int b, int netw, int neth, float thresh, cnnb_det *out, size_t cap);
size_t cnnb_region_decode(const cnnb_layer *l, int b, float thresh, cnnb_det *out, size_t cap);
/* Most candidates one image can give: sum over the heads of cells x anchors x classes. */
size_t cnnb_detect_capacity(const cnnb_net *net);
/* 1 if the network has at least one [yolo] or [region] layer. */
int cnnb_detect_has_heads(const cnnb_net *net);
/* Number of classes of the network's first head (0 when there is none). */
int cnnb_detect_num_classes(const cnnb_net *net);

/* Darknet's correct_yolo_boxes: maps network-relative boxes of a letterboxed input back to
 * the original image of imw x imh, relative (0..1) to it. */
void cnnb_detect_unletterbox(cnnb_det *d, size_t n, int imw, int imh, int netw, int neth);

/* All of the above for sample b of the last forward: decode every head (in layer order),
 * undo the letterbox, non-max suppression (nms <= 0: none), then scale to the image's pixels;
 * the candidates come out ordered by class, then falling score.
 * Returns the count kept, or CNNB_ESHAPE when cap (cnnb_detect_capacity) is too small. */
int cnnb_detect(const cnnb_net *net, int b, int imw, int imh, float thresh, float nms, cnnb_det *d, size_t cap);

/* Darknet's letterbox_image: the H x W x C uint8 image (C = 1 is repeated to the network's 3
 * channels when nc = 3) scaled to fit nh x nw keeping its aspect ratio with Darknet's
 * resize_image (bilinear, corners aligned, columns first then rows), centred on a 0.5 grey
 * canvas. Writes nc x nh x nw floats on the 0..1 scale. scratch holds
 * cnnb_letterbox_scratch(h, nh, nw, nc) floats. */
size_t cnnb_letterbox_scratch(int h, int nh, int nw, int nc);
void cnnb_letterbox(const unsigned char *hwc, int h, int w, int c, float *out, int nh, int nw, int nc,
                    float *scratch);

/* Mean average precision the standard way: per class, detections of all images by falling
 * score, each a true positive when its best-IoU truth of that class in its image has IoU >=
 * iou_thresh and was not matched before (else a false positive); AP is the area under the
 * all-point interpolated precision-recall curve (precision made monotone from the right).
 * Detections of image i are rows doff[i]..doff[i+1] (class dcls, score dscore, box dbox x 4),
 * truths rows toff[i]..toff[i+1] of truth (x, y, w, h, class; any consistent box units).
 * ap[k] for k < nclasses (NAN for a class without truths); *map: their mean over the classes
 * with truths (NAN when none). Allocates its working arrays; returns 0 or CNNB_ENOMEM/EINVAL. */
int cnnb_detect_map(long nimg, const long long *doff, const long long *dcls, const float *dscore, const float *dbox,
                    const long long *toff, const float *truth, int nclasses, float iou_thresh, double *ap,
                    double *map);

/* Darknet .weights files: int32 major, minor, revision; images seen as uint64 when
 * major*10+minor >= 2, else as uint32; then per layer in cfg order, float32 little-endian:
 * [convolutional] biases, (scales, rolling_mean, rolling_variance with batch_normalize),
 * weights; [connected] biases, weights, (scales, rolling_mean, rolling_variance);
 * [batchnorm] scales, rolling_mean, rolling_variance. */
/* Bytes a .weights file for net has (with the 64-bit seen field). */
size_t cnnb_darknet_weights_size(const cnnb_net *net);
/* Fills net's parameters; the file must have exactly the size the network needs (the error
 * gives both). seen may be NULL. */
int cnnb_darknet_weights_load(cnnb_net *net, const char *path, long long *seen);
/* Writes version 0.2.0 with seen (atomic: PATH.tmp then rename). */
int cnnb_darknet_weights_save(const cnnb_net *net, const char *path, long long seen);

#ifdef __cplusplus
}
#endif
#endif
