/* Detection training data: an image set (imageset.h) with truth boxes (/truth, /truth_offsets;
 * docs/FORMATS.md "Image sets") read as a detection network's input, letterboxed exactly as
 * `detect` does (cnnb_letterbox, 0..1 pixels), with each image's truths mapped the same way into
 * the rows the [yolo]/[region] losses read from net->truth_f (detect.h CNNB_YOLO_MAX_TRUTH).
 *
 *   cnnb_boxdata *bd;
 *   if (cnnb_boxdata_open(&bd, "scenes.h5", net) < 0) fprintf(stderr, "%s\n", cnnb_error_message());
 *   cnnb_boxdata_read(bd, rows, n, x, truth);     // x: n network inputs, truth: n x MAX_TRUTH x 5
 *   net->truth_f = truth; cnnb_net_train_step(net, x, n);
 *   cnnb_boxdata_close(bd);
 */
#ifndef CNNB_BOXDATA_H
#define CNNB_BOXDATA_H

#include <stdint.h>

#include "cnnb/augment.h"
#include "cnnb/detect.h"
#include "cnnb/detect.h"
#include "cnnb/dist.h"
#include "cnnb/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnnb_boxdata cnnb_boxdata; /* opaque; one per process; not shared between threads */

/* 1 when net trains on boxes: its last layer is a [yolo] or [region] head. */
int cnnb_boxdata_wanted(const cnnb_net *net);

/* Opens the image set path for the detection network net and validates every truth: /truth
 * (M x 5 float32) and /truth_offsets (N + 1 int64, from 0 to M, not decreasing) must exist;
 * each box must have a positive size and lie inside its image (half a pixel of slack), and its
 * class must be an integer in [0, classes of net). Errors name the file, the dataset and the
 * row. Images whose pixels total at most 512 MiB are read into memory once, here. */
int cnnb_boxdata_open(cnnb_boxdata **out, const char *path, const cnnb_net *net);
void cnnb_boxdata_close(cnnb_boxdata *bd); /* NULL is a no-op */
long cnnb_boxdata_count(const cnnb_boxdata *bd);
const char *cnnb_boxdata_path(const cnnb_boxdata *bd);
/* Size of image i and its truths in pixels (rows of x, y, w, h, class), *n of them. */
void cnnb_boxdata_image(const cnnb_boxdata *bd, long i, int *h, int *w, const float **truth, int *n);

/* Reads images rows[0..n) into x (n network inputs, C x H x W, letterboxed) and, when truth is
 * not NULL, their truths into truth (n x CNNB_YOLO_MAX_TRUTH x 5: x, y, w, h relative to the
 * network input, class; the rows after an image's last truth are zero). An image with more
 * truths than CNNB_YOLO_MAX_TRUTH keeps the first ones (a warning, once). */
int cnnb_boxdata_read(cnnb_boxdata *bd, const long *rows, int n, float *x, float *truth);

/* Moves the truths of n samples as cnnb_augment_batch moved their pixels (same arguments):
 * mirrored with a flip, shifted with a crop, clipped to the input; a box left narrower or lower
 * than one pixel is dropped. */
void cnnb_boxdata_augment(const cnnb_augment *a, float *truth, int n, cnnb_shape s, uint64_t seed, uint64_t epoch,
                          uint64_t step, long pos0);

/* Mean average precision of net on the first n images of bd (n <= 0: all), images split in
 * contiguous ranges over the ranks: detections as `detect` makes them (thresh, nms), then
 * cnnb_detect_map at iou on rank 0. ap (classes entries, may be NULL) and *map are valid on
 * rank 0. Collective; evaluates in inference mode and restores net->train. */
int cnnb_boxdata_map(const cnnb_dist *d, cnnb_net *net, cnnb_boxdata *bd, long n, float thresh, float nms,
                     float iou, double *ap, double *map);

#ifdef __cplusplus
}
#endif
#endif
