/* im2col/col2im (see im2col.h). Row r of the column matrix is (channel, ky, kx); column j is
 * the output pixel (oy, ox); out-of-image taps read as zero and are dropped on the way back.
 * For each kernel column kx the output columns whose tap lies inside the image form one range
 * [ox0, ox1), computed once per row: the inner loops have no bounds checks, and with stride 1 a
 * row is one memcpy (im2col) or one vectorisable add (col2im). */
#include "core/im2col.h"

#include <string.h>

/* The output columns ox with 0 <= ox*stride - pad + kx < w: [*lo, *hi) (possibly empty). */
static inline void valid_range(int ow, int w, int kx, int stride, int pad, int *lo, int *hi)
{
  const int a = pad - kx; /* ox*stride >= a */
  int l = a <= 0 ? 0 : (a + stride - 1) / stride;
  const int b = w - 1 + pad - kx; /* ox*stride <= b */
  int h = b < 0 ? 0 : b / stride + 1;
  if (h > ow) h = ow;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

void cnnb_im2col_ld(const float *im, int c, int h, int w, int k, int stride, int pad, float *col,
                    size_t ldcol)
{
  const int oh = cnnb_conv_out_size(h, k, pad, stride), ow = cnnb_conv_out_size(w, k, pad, stride);
  for (int ch = 0; ch < c; ch++) {
    const float *src = im + (size_t)ch * h * w;
    for (int ky = 0; ky < k; ky++)
      for (int kx = 0; kx < k; kx++) {
        float *dst = col + ((size_t)(ch * k + ky) * k + kx) * ldcol;
        int lo, hi;
        valid_range(ow, w, kx, stride, pad, &lo, &hi);
        const int shift = kx - pad;
        for (int oy = 0; oy < oh; oy++) {
          const int iy = oy * stride - pad + ky;
          float *d = dst + (size_t)oy * ow;
          if (iy < 0 || iy >= h) {
            memset(d, 0, sizeof(float) * (size_t)ow);
            continue;
          }
          /* the first valid tap: lo*stride + shift >= 0 */
          const float *s = src + (size_t)iy * w + (lo * stride + shift);
          for (int ox = 0; ox < lo; ox++) d[ox] = 0.f;
          if (stride == 1) {
            /* (an inlined copy loop measured more instructions than the call, even for runs of 8) */
            memcpy(d + lo, s, sizeof(float) * (size_t)(hi - lo));
          } else {
            for (int ox = lo; ox < hi; ox++) d[ox] = s[(ox - lo) * stride];
          }
          for (int ox = hi; ox < ow; ox++) d[ox] = 0.f;
        }
      }
  }
}

void cnnb_col2im_add_ld(const float *col, size_t ldcol, int c, int h, int w, int k, int stride, int pad,
                        float *im)
{
  const int oh = cnnb_conv_out_size(h, k, pad, stride), ow = cnnb_conv_out_size(w, k, pad, stride);
  for (int ch = 0; ch < c; ch++) {
    float *dst = im + (size_t)ch * h * w;
    for (int ky = 0; ky < k; ky++)
      for (int kx = 0; kx < k; kx++) {
        const float *src = col + ((size_t)(ch * k + ky) * k + kx) * ldcol;
        int lo, hi;
        valid_range(ow, w, kx, stride, pad, &lo, &hi);
        const int shift = kx - pad;
        for (int oy = 0; oy < oh; oy++) {
          const int iy = oy * stride - pad + ky;
          if (iy < 0 || iy >= h) continue;
          const float *s = src + (size_t)oy * ow;
          float *d = dst + (size_t)iy * w + (lo * stride + shift);
          if (stride == 1) {
            for (int ox = lo; ox < hi; ox++) d[ox - lo] += s[ox];
          } else {
            for (int ox = lo; ox < hi; ox++) d[(ox - lo) * stride] += s[ox];
          }
        }
      }
  }
}
