/* Random crop with padding and horizontal flip (include/cnnb/augment.h). */
#include "cnnb/augment.h"

#include <string.h>

#include "cnnb/rng.h"

void cnnb_augment_draw(const cnnb_augment *a, uint64_t seed, uint64_t epoch, uint64_t step, long pos, int *dx,
                       int *dy, int *flip)
{
  const int P = a->crop_pad;
  cnnb_rng r;
  cnnb_rng_seed(&r, seed ^ 0xa11a5eedULL, epoch, step, (uint64_t)pos);
  *dy = P ? (int)cnnb_rng_below(&r, 2 * (uint64_t)P + 1) - P : 0;
  *dx = P ? (int)cnnb_rng_below(&r, 2 * (uint64_t)P + 1) - P : 0;
  *flip = a->flip && (cnnb_rng_u64(&r) >> 63);
}

void cnnb_augment_batch(const cnnb_augment *a, float *x, int n, cnnb_shape s, uint64_t seed, uint64_t epoch,
                        uint64_t step, long pos0, float *scratch)
{
  if (!a->crop_pad && !a->flip) return;
  const int H = s.h, W = s.w;
  for (int i = 0; i < n; i++) {
    int dx, dy, flip;
    cnnb_augment_draw(a, seed, epoch, step, pos0 + i, &dx, &dy, &flip);
    if (!dx && !dy && !flip) continue;
    for (int c = 0; c < s.c; c++) {
      float *img = x + ((size_t)i * s.c + c) * H * W;
      memcpy(scratch, img, sizeof(float) * H * W);
      /* out(y, x) = in(y + dy, x' + dx) where x' is x mirrored when flipping; outside is 0. */
      for (int y = 0; y < H; y++) {
        int sy = y + dy;
        for (int xo = 0; xo < W; xo++) {
          int sx = (flip ? W - 1 - xo : xo) + dx;
          img[y * W + xo] = sy >= 0 && sy < H && sx >= 0 && sx < W ? scratch[sy * W + sx] : 0.0f;
        }
      }
    }
  }
}
