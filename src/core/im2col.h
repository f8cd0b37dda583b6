/* Private: im2col/col2im for NCHW images, square kernel, one stride and one padding for both
 * axes, dilation 1. The column matrix has (c*k*k) rows and (out_h*out_w) columns, row-major, so
 * that a [filters x c*k*k] weight matrix times it gives the [filters x out_h*out_w] output.
 * The _ld variants take the column matrix's row stride (ldcol >= out_h*out_w), so that the
 * columns of several samples can sit side by side in one matrix of ldcol columns (the batched
 * convolution puts sample i at column i*out_h*out_w). */
#ifndef CNNB_IM2COL_H
#define CNNB_IM2COL_H

#include <stddef.h>

/* floor((n + 2*pad - k) / stride) + 1; 0 when the kernel does not fit. */
static inline int cnnb_conv_out_size(int n, int k, int pad, int stride)
{
  int span = n + 2 * pad - k;
  return span < 0 ? 0 : span / stride + 1; /* C division truncates toward 0, so test first */
}

void cnnb_im2col_ld(const float *im, int c, int h, int w, int k, int stride, int pad, float *col,
                    size_t ldcol);
/* Output rows oy0 <= oy < oy1 only: a (c*k*k) x ((oy1-oy0)*out_w) column matrix, so that a large
 * image can be convolved in bands whose columns stay in cache. */
void cnnb_im2col_rows(const float *im, int c, int h, int w, int k, int stride, int pad, int oy0, int oy1,
                      float *col, size_t ldcol);
/* Adds the column matrix back into im (overlapping patches accumulate). */
void cnnb_col2im_add_ld(const float *col, size_t ldcol, int c, int h, int w, int k, int stride, int pad,
                        float *im);

static inline void cnnb_im2col(const float *im, int c, int h, int w, int k, int stride, int pad, float *col)
{
  cnnb_im2col_ld(im, c, h, w, k, stride, pad, col,
                 (size_t)cnnb_conv_out_size(h, k, pad, stride) * cnnb_conv_out_size(w, k, pad, stride));
}
static inline void cnnb_col2im_add(const float *col, int c, int h, int w, int k, int stride, int pad,
                                   float *im)
{
  cnnb_col2im_add_ld(col, (size_t)cnnb_conv_out_size(h, k, pad, stride) * cnnb_conv_out_size(w, k, pad, stride),
                     c, h, w, k, stride, pad, im);
}

#endif
