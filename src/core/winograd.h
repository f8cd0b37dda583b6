/* Private: Winograd F(2x2,3x3) forward for 3x3, stride 1, groups 1 convolutions at inference
 * (docs/BENCHMARKS.md item 16). Each 4x4 input tile and each 3x3 filter are transformed, the
 * 16 transformed positions are 16 GEMMs over the channels (F x C times C x tiles), and each
 * 4x4 result is transformed back into a 2x2 output tile: 16 multiply-adds per 4 outputs and
 * channel instead of 36. The transformed filters are cached and recomputed whenever the
 * weights' contents differ from the copy they were made from, so reloading weights is safe.
 * Set CNNB_WINOGRAD=0 in the environment to use the im2col path everywhere (A/B runs). */
#ifndef CNNB_WINOGRAD_H
#define CNNB_WINOGRAD_H

typedef struct cnnb_wino cnnb_wino;

/* 0 when the environment has CNNB_WINOGRAD=0 (or any value starting with 0), else 1. */
int cnnb_wino_enabled(void);

/* 1 when a forward of b samples through a 3x3 stride-1 layer of c input channels, f filters
 * and an oh x ow output is large enough for the Winograd path to beat im2col + sgemm
 * (measured, see item 16). */
int cnnb_wino_worth(int b, int c, int f, int oh, int ow);

/* out (B x F x oh x ow, oh = H + 2*pad - 2, likewise ow) = the 3x3 cross-correlation of in
 * (B x C x H x W) with weights (F x C x 3 x 3), without bias. *st is the layer's cache (NULL
 * at first; allocated here). Returns 0, or -1 when memory ran out (nothing written to out: the
 * caller uses its other path). */
int cnnb_wino_forward(cnnb_wino **st, const float *weights, int F, int C, const float *in, int B, int H,
                      int W, int pad, float *out);

void cnnb_wino_free(cnnb_wino *st);

/* Forwards done by this path since the process started (tests check that it ran). */
unsigned long cnnb_wino_count(void);

#endif
