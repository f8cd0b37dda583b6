/* Private: what the detection code (src/model/detect.c) needs to know about the [yolo] and
 * [region] heads whose state is private to their files. */
#ifndef CNNB_LAYERS_HEADS_H
#define CNNB_LAYERS_HEADS_H

#include "cnnb/layer.h"

/* Anchors of this head (n) and classes; 0 when l is not a head of that kind. */
int cnnb_yolo_info(const cnnb_layer *l, int *n, int *classes);
int cnnb_region_info(const cnnb_layer *l, int *n, int *classes);

#endif
