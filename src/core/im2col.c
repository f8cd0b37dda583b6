/* im2col/col2im (see im2col.h). Row r of the column matrix is (channel, ky, kx); column j is
 * the output pixel (oy, ox); out-of-image taps read as zero and are dropped on the way back. */
#include "core/im2col.h"

#include <string.h>

void cnnb_im2col(const float *im, int c, int h, int w, int k, int stride, int pad, float *col)
{
  const int oh = cnnb_conv_out_size(h, k, pad, stride), ow = cnnb_conv_out_size(w, k, pad, stride);
  const int rows = c * k * k;
  for (int r = 0; r < rows; r++) {
    const int kx = r % k, ky = (r / k) % k, ch = r / (k * k);
    const float *src = im + (size_t)ch * h * w;
    float *dst = col + (size_t)r * oh * ow;
    for (int oy = 0; oy < oh; oy++) {
      const int iy = oy * stride - pad + ky;
      float *d = dst + (size_t)oy * ow;
      if (iy < 0 || iy >= h) {
        memset(d, 0, sizeof(float) * (size_t)ow);
        continue;
      }
      const float *s = src + (size_t)iy * w;
      for (int ox = 0; ox < ow; ox++) {
        const int ix = ox * stride - pad + kx;
        d[ox] = (ix >= 0 && ix < w) ? s[ix] : 0.f;
      }
    }
  }
}

void cnnb_col2im_add(const float *col, int c, int h, int w, int k, int stride, int pad, float *im)
{
  const int oh = cnnb_conv_out_size(h, k, pad, stride), ow = cnnb_conv_out_size(w, k, pad, stride);
  const int rows = c * k * k;
  for (int r = 0; r < rows; r++) {
    const int kx = r % k, ky = (r / k) % k, ch = r / (k * k);
    float *dst = im + (size_t)ch * h * w;
    const float *src = col + (size_t)r * oh * ow;
    for (int oy = 0; oy < oh; oy++) {
      const int iy = oy * stride - pad + ky;
      if (iy < 0 || iy >= h) continue;
      const float *s = src + (size_t)oy * ow;
      float *d = dst + (size_t)iy * w;
      for (int ox = 0; ox < ow; ox++) {
        const int ix = ox * stride - pad + kx;
        if (ix >= 0 && ix < w) d[ix] += s[ox];
      }
    }
  }
}
