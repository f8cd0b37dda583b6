/* Private: Winograd forward for 3x3, stride 1, groups 1 convolutions at inference
 * (docs/BENCHMARKS.md items 16 and 17). Input tiles and 3x3 filters are transformed, the
 * transformed positions are GEMMs over the channels (F x C times C x tiles), and each result is
 * transformed back into an output tile. Two tile sizes: F(2x2,3x3) (4x4 input tiles, 16 GEMMs,
 * 16 multiply-adds per 4 outputs and channel instead of 36) and F(4x4,3x3) (6x6 input tiles, 36
 * GEMMs, 36 per 16 outputs instead of 144, with larger rounding error), chosen per layer by
 * cnnb_wino_tile. The transformed filters are cached and recomputed whenever the weights'
 * contents differ from the copy they were made from, so reloading weights is safe.
 * CNNB_WINOGRAD in the environment: 0 uses the im2col path everywhere, 2 or 4 forces that tile
 * size (A/B runs); unset or anything else: the measured choice. */
#ifndef CNNB_WINOGRAD_H
#define CNNB_WINOGRAD_H

#include "cnnb/layer.h"

typedef struct cnnb_wino cnnb_wino;

/* 0 when the environment has CNNB_WINOGRAD=0 (or any value starting with 0), else 1. */
int cnnb_wino_enabled(void);

/* 1 when a forward of b samples through a 3x3 stride-1 layer of c input channels, f filters
 * and an oh x ow output is large enough for the Winograd path to beat im2col + sgemm
 * (measured, see item 16). */
int cnnb_wino_worth(int b, int c, int f, int oh, int ow);

/* The output tile size, 2 or 4, that cnnb_wino_forward uses for such a forward (measured, see
 * item 17; CNNB_WINOGRAD=2 or 4 forces it). */
int cnnb_wino_tile(int b, int c, int f, int oh, int ow);

/* out (B x F x oh x ow, oh = H + 2*pad - 2, likewise ow) = the 3x3 cross-correlation of in
 * (B x C x H x W) with weights (F x C x 3 x 3), without bias, with the tile of cnnb_wino_tile.
 * *st is the layer's cache (NULL at first; allocated here). Returns 0, or -1 when memory ran
 * out (nothing written to out: the caller uses its other path). One *st is not for two threads
 * at once; forwards of different caches may come from several threads and take turns (all
 * layers share one scratch, under a lock). */
int cnnb_wino_forward(cnnb_wino **st, const float *weights, int F, int C, const float *in, int B, int H,
                      int W, int pad, float *out);

/* The same with the tile size m (2 or 4; anything else: cnnb_wino_tile's choice). */
int cnnb_wino_forward_tile(cnnb_wino **st, int m, const float *weights, int F, int C, const float *in, int B,
                           int H, int W, int pad, float *out);

/* What cnnb_wino_forward_ep applies to the output as it is written, per filter f:
 * out = act(scale[f] * out + shift[f]) (scale NULL: 1; shift NULL: 0), e.g. a bias, or batch
 * norm folded for inference, and the activation: one pass less over the output. */
typedef struct cnnb_wino_ep {
  const float *scale, *shift;
  cnnb_act act;
} cnnb_wino_ep;

/* cnnb_wino_forward_tile with ep (NULL: none) applied to each block of output rows right after
 * the output transform wrote it, while it is in cache. */
int cnnb_wino_forward_ep(cnnb_wino **st, int m, const float *weights, int F, int C, const float *in, int B,
                         int H, int W, int pad, float *out, const cnnb_wino_ep *ep);

void cnnb_wino_free(cnnb_wino *st);

/* Forwards done by this path since the process started, and how many of them with F(4x4,3x3)
 * (tests check that it ran). */
unsigned long cnnb_wino_count(void);
unsigned long cnnb_wino_count4(void);

#endif
