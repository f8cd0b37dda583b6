/* Private: softmax layer helpers beyond its ops table. */
#ifndef CNNB_LAYERS_SOFTMAX_H
#define CNNB_LAYERS_SOFTMAX_H

#include "cnnb/layer.h"

/* Labels outside [0, outputs) that the loss has skipped since setup (their samples add no loss
 * and no gradient). 0 for a layer that is not a softmax. */
long cnnb_softmax_skipped_labels(const cnnb_layer *l);

#endif
