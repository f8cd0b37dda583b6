/* TF.js weights manifests (model-weights_manifest.json + binary shards, as face-api.js ships
 * its models) into the parameters of a cnn-batch network; `cnn-batch convert --from tfjs`.
 *
 * Mapping (docs/MODELS.md "face-api.js models"): the manifest's tensors, in file order, are
 * grouped into units by name prefix, and unit k fills the k-th layer with parameters (two for
 * a separable unit):
 *   P/filters [k,k,C,F], P/bias [F]                      -> [convolutional] groups=1
 *   P/conv/filters, P/conv/bias, P/scale/weights, P/scale/biases
 *                                                       -> [convolutional], the per-channel
 *                                                          scale folded in: W*s, b*s + beta
 *   P/depthwise_filter [k,k,C,M], P/pointwise_filter [1,1,C*M,F], P/bias [F]
 *                                                       -> [convolutional] groups=C filters=C*M
 *                                                          (bias 0), then a 1x1 [convolutional]
 *   P/weights [I,O], P/bias [O]; or a lone 2-D P [I,O]    -> [connected] (bias 0 when absent)
 * HWIO is reordered to OIHW ([F, C/groups, k, k]); a [connected] layer's NHWC-flattened rows
 * to cnn-batch's CHW order. Values: float32, or uint8/uint16 quantized, value = q*scale + min
 * computed in double and rounded once to float, as TF.js does. Every shape is checked; a
 * tensor left over or a layer left without one is an error, as is a shard shorter or longer
 * than the manifest says. */
#ifndef CNNB_TFJS_H
#define CNNB_TFJS_H

#include "cnnb/net.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills net's parameters from the manifest at manifest_path (shards relative to its folder).
 * Errors name the manifest or shard, the tensor, the layer and both shapes. */
int cnnb_tfjs_load(const char *manifest_path, cnnb_net *net);
/* Builds model_path, loads the manifest into it and writes a checkpoint (docs/FORMATS.md) to
 * out_path atomically. */
int cnnb_tfjs_convert(const char *manifest_path, const char *model_path, const char *out_path);

#ifdef __cplusplus
}
#endif
#endif
