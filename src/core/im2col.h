/* Private: im2col/col2im for NCHW images, square kernel, one stride and one padding for both
 * axes, dilation 1. The column matrix has (c*k*k) rows and (out_h*out_w) columns, row-major, so
 * that a [filters x c*k*k] weight matrix times it gives the [filters x out_h*out_w] output. */
#ifndef CNNB_IM2COL_H
#define CNNB_IM2COL_H

/* floor((n + 2*pad - k) / stride) + 1; 0 when the kernel does not fit. */
static inline int cnnb_conv_out_size(int n, int k, int pad, int stride)
{
  int span = n + 2 * pad - k;
  return span < 0 ? 0 : span / stride + 1; /* C division truncates toward 0, so test first */
}

void cnnb_im2col(const float *im, int c, int h, int w, int k, int stride, int pad, float *col);
/* Adds the column matrix back into im (overlapping patches accumulate). */
void cnnb_col2im_add(const float *col, int c, int h, int w, int k, int stride, int pad, float *im);

#endif
