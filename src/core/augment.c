/* Random crop with padding and horizontal flip (include/cnnb/augment.h). */
#include "cnnb/augment.h"

#include <string.h>

#include "cnnb/rng.h"

void cnnb_augment_batch(const cnnb_augment *a, float *x, int n, cnnb_shape s, uint64_t seed, uint64_t epoch,
                        uint64_t step, long pos0, float *scratch)
{
  if (!a->crop_pad && !a->flip) return;
  const int H = s.h, W = s.w, P = a->crop_pad;
  for (int i = 0; i < n; i++) {
    cnnb_rng r;
    cnnb_rng_seed(&r, seed ^ 0xa11a5eedULL, epoch, step, (uint64_t)(pos0 + i));
    int dy = P ? (int)cnnb_rng_below(&r, 2 * (uint64_t)P + 1) - P : 0;
    int dx = P ? (int)cnnb_rng_below(&r, 2 * (uint64_t)P + 1) - P : 0;
    int flip = a->flip && (cnnb_rng_u64(&r) >> 63);
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
