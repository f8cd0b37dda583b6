/* im2col/col2im (see im2col.h). Row r of the column matrix is (channel, ky, kx); column j is
 * the output pixel (oy, ox); out-of-image taps read as zero and are dropped on the way back.
 * For each kernel column kx the output columns whose tap lies inside the image form one range
 * [lo, hi), computed once per kernel column rather than per element: the inner loops have no
 * bounds checks, and with stride 1 they are plain vectorisable copies (im2col) or adds (col2im).
 * The rows are short (1 to 28 floats in LeNet-5 and ResNet-18 at 32x32), so they are copied by
 * loops, not memcpy/memset calls, whose per-call cost dominated (perf: 7% of a LeNet-5 step in
 * memmove); GCC is told not to turn the loops back into such calls. */
#include "core/im2col.h"

#include <string.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

/* Row pieces; restrict spares the vectorised loops their run-time overlap checks. */
static inline void copy_run(float *restrict d, const float *restrict s, int n)
{
  for (int i = 0; i < n; i++) d[i] = s[i];
}
static inline void copy_run_strided(float *restrict d, const float *restrict s, int n, int stride)
{
  for (int i = 0; i < n; i++) d[i] = s[(size_t)i * stride];
}
static inline void zero_run(float *d, int n)
{
  for (int i = 0; i < n; i++) d[i] = 0.f;
}
static inline void add_run(float *restrict d, const float *restrict s, int n)
{
  for (int i = 0; i < n; i++) d[i] += s[i];
}
static inline void add_run_strided(float *restrict d, const float *restrict s, int n, int stride)
{
  for (int i = 0; i < n; i++) d[(size_t)i * stride] += s[i];
}

/* A row of n floats as 4-float blocks, the last one overlapping the one before when 4 does not
 * divide n: no scalar tail and no vector prologue for these short rows (10 and 28 in LeNet-5).
 * The fixed-size memcpy compiles to one unaligned vector load and store. */
static inline void copy_row(float *restrict d, const float *restrict s, int n)
{
  if (n < 4) {
    copy_run(d, s, n);
    return;
  }
  int i = 0;
  for (; i + 4 <= n; i += 4) memcpy(d + i, s + i, 4 * sizeof(float));
  if (i < n) memcpy(d + n - 4, s + n - 4, 4 * sizeof(float));
}

/* The output columns ox with 0 <= ox*stride - pad + kx < w: [*lo, *hi) (possibly empty). */
static inline void valid_range(int ow, int w, int kx, int stride, int pad, int *lo, int *hi)
{
  const int a = pad - kx;         /* ox*stride >= a */
  const int b = w - 1 + pad - kx; /* ox*stride <= b */
  int l, h;
  if (stride == 1) {
    l = a < 0 ? 0 : a;
    h = b < 0 ? 0 : b + 1;
  } else {
    l = a <= 0 ? 0 : (a + stride - 1) / stride;
    h = b < 0 ? 0 : b / stride + 1;
  }
  if (h > ow) h = ow;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

/* valid_range for every kx < k, in rng[2*kx], rng[2*kx+1]; kernels up to RNG_MAX wide use the
 * table, wider ones compute it per row. */
#define RNG_MAX 16

/* Padded stride-1 path: each channel is first copied into a zero-bordered (h+2pad) x (w+2pad)
 * image on the stack, so that every row of the column matrix is one plain copy of ow floats
 * (no zero runs, no ranges). Used when the padded image fits PAD_MAX floats (16 KiB): LeNet-5's
 * 28x28 input with pad 2 and ResNet-18-32's 8x8 and smaller stages; without padding the
 * image itself serves, whatever its size. */
#define PAD_MAX 4096

static void im2col_padded_s1(const float *im, int c, int h, int w, int k, int pad, float *col, size_t ldcol)
{
  const int oh = h + 2 * pad - k + 1, ow = w + 2 * pad - k + 1, pw = w + 2 * pad, ph = h + 2 * pad;
  float pb[PAD_MAX];
  if (pad) zero_run(pb, ph * pw); /* the border stays zero: only the interior is rewritten */
  for (int ch = 0; ch < c; ch++) {
    const float *src = im + (size_t)ch * h * w, *img = src; /* no padding: the image itself */
    if (pad) {
      for (int y = 0; y < h; y++) copy_run(pb + (size_t)(y + pad) * pw + pad, src + (size_t)y * w, w);
      img = pb;
    }
    for (int ky = 0; ky < k; ky++)
      for (int kx = 0; kx < k; kx++) {
        float *dst = col + ((size_t)(ch * k + ky) * k + kx) * ldcol;
        const float *s = img + (size_t)ky * pw + kx;
        for (int oy = 0; oy < oh; oy++) copy_row(dst + (size_t)oy * ow, s + (size_t)oy * pw, ow);
      }
  }
}

void cnnb_im2col_ld(const float *im, int c, int h, int w, int k, int stride, int pad, float *col,
                    size_t ldcol)
{
  if (stride == 1 && k > 1 && k <= h + 2 * pad && k <= w + 2 * pad &&
      (pad == 0 || (size_t)(h + 2 * pad) * (size_t)(w + 2 * pad) <= PAD_MAX)) {
    im2col_padded_s1(im, c, h, w, k, pad, col, ldcol);
    return;
  }
  cnnb_im2col_rows(im, c, h, w, k, stride, pad, 0, cnnb_conv_out_size(h, k, pad, stride), col, ldcol);
}

void cnnb_im2col_rows(const float *im, int c, int h, int w, int k, int stride, int pad, int oy0, int oy1,
                      float *col, size_t ldcol)
{
  const int ow = cnnb_conv_out_size(w, k, pad, stride);
  int rng[2 * RNG_MAX];
  for (int kx = 0; kx < k && kx < RNG_MAX; kx++) valid_range(ow, w, kx, stride, pad, &rng[2 * kx], &rng[2 * kx + 1]);
  for (int ch = 0; ch < c; ch++) {
    const float *src = im + (size_t)ch * h * w;
    for (int ky = 0; ky < k; ky++)
      for (int kx = 0; kx < k; kx++) {
        float *dst = col + ((size_t)(ch * k + ky) * k + kx) * ldcol;
        int lo, hi;
        if (kx < RNG_MAX)
          lo = rng[2 * kx], hi = rng[2 * kx + 1];
        else
          valid_range(ow, w, kx, stride, pad, &lo, &hi);
        const int shift = kx - pad;
        for (int oy = oy0; oy < oy1; oy++) {
          const int iy = oy * stride - pad + ky;
          float *d = dst + (size_t)(oy - oy0) * ow;
          if (iy < 0 || iy >= h) {
            zero_run(d, ow);
            continue;
          }
          zero_run(d, lo);
          if (lo < hi) {
            /* the first valid tap: lo*stride + shift >= 0 */
            const float *s = src + (size_t)iy * w + (lo * stride + shift);
            if (stride == 1)
              copy_run(d + lo, s, hi - lo);
            else
              copy_run_strided(d + lo, s, hi - lo, stride);
          }
          zero_run(d + hi, ow - hi);
        }
      }
  }
}

void cnnb_col2im_add_ld(const float *col, size_t ldcol, int c, int h, int w, int k, int stride, int pad,
                        float *im)
{
  const int oh = cnnb_conv_out_size(h, k, pad, stride), ow = cnnb_conv_out_size(w, k, pad, stride);
  int rng[2 * RNG_MAX];
  for (int kx = 0; kx < k && kx < RNG_MAX; kx++) valid_range(ow, w, kx, stride, pad, &rng[2 * kx], &rng[2 * kx + 1]);
  for (int ch = 0; ch < c; ch++) {
    float *dst = im + (size_t)ch * h * w;
    for (int ky = 0; ky < k; ky++)
      for (int kx = 0; kx < k; kx++) {
        const float *src = col + ((size_t)(ch * k + ky) * k + kx) * ldcol;
        int lo, hi;
        if (kx < RNG_MAX)
          lo = rng[2 * kx], hi = rng[2 * kx + 1];
        else
          valid_range(ow, w, kx, stride, pad, &lo, &hi);
        if (lo >= hi) continue;
        const int shift = kx - pad;
        for (int oy = 0; oy < oh; oy++) {
          const int iy = oy * stride - pad + ky;
          if (iy < 0 || iy >= h) continue;
          const float *s = src + (size_t)oy * ow;
          float *d = dst + (size_t)iy * w + (lo * stride + shift);
          if (stride == 1)
            add_run(d, s + lo, hi - lo);
          else
            add_run_strided(d, s + lo, hi - lo, stride);
        }
      }
  }
}
