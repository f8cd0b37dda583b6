/* Augmentation for image classification, applied to a standardised NCHW batch in place:
 * random crop with zero padding (a shift of up to pad pixels; zero is the mean pixel after
 * standardisation) and horizontal flip. Each sample's draw derives from (seed, epoch, step,
 * its position in the global batch), so the result does not depend on the rank count. */
#ifndef CNNB_AUGMENT_H
#define CNNB_AUGMENT_H

#include <stdint.h>

#include "cnnb/layer.h"

typedef struct cnnb_augment {
  int crop_pad; /* 0: no crop */
  int flip;     /* 1: flip half of the images left-right */
} cnnb_augment;

/* x holds n samples of shape s; pos0 is the position of x's first sample in the global batch.
 * scratch needs s.h * s.w floats. */
void cnnb_augment_batch(const cnnb_augment *a, float *x, int n, cnnb_shape s, uint64_t seed, uint64_t epoch,
                        uint64_t step, long pos0, float *scratch);
/* The draw of the sample at global batch position pos: out(y, x) = in(y + dy, x' + dx), x' the
 * column mirrored when flip. Detection training moves its truth boxes with it (boxdata.h). */
void cnnb_augment_draw(const cnnb_augment *a, uint64_t seed, uint64_t epoch, uint64_t step, long pos, int *dx,
                       int *dy, int *flip);
#endif
