/* Darknet's letterbox_image, reproduced operation by operation (its resize_image interpolates
 * columns first into an intermediate image, then rows, in float, with corners aligned), because
 * any other bilinear resize (image.h's included) moves the network's input, and with it the
 * boxes, by more than Darknet compatibility allows. */
#include "cnnb/detect.h"

size_t cnnb_letterbox_scratch(int h, int nh, int nw, int nc)
{
  return (size_t)nc * h * nw + (size_t)nc * nh * nw;
}

/* Pixel (x, y) of channel k on Darknet's 0..1 scale (division in double, as its loaders do). */
static inline float px(const unsigned char *hwc, int w, int c, int x, int y, int k)
{
  return (float)(hwc[((size_t)y * w + x) * c + (c == 1 ? 0 : k)] / 255.);
}

void cnnb_letterbox(const unsigned char *hwc, int h, int w, int c, float *out, int nh, int nw, int nc,
                    float *scratch)
{
  int rw, rh; /* size of the resized image inside the canvas */
  if ((float)nw / w < (float)nh / h)
    rw = nw, rh = (h * nw) / w;
  else
    rh = nh, rw = (w * nh) / h;
  if (rw < 1) rw = 1;
  if (rh < 1) rh = 1;
  float *part = scratch, *res = scratch + (size_t)nc * h * nw; /* part: nc x h x rw; res: nc x rh x rw */
  const float w_scale = (float)(w - 1) / (rw - 1), h_scale = (float)(h - 1) / (rh - 1);
  for (int k = 0; k < nc; k++)
    for (int r = 0; r < h; r++)
      for (int x = 0; x < rw; x++) {
        float val;
        if (x == rw - 1 || w == 1) {
          val = px(hwc, w, c, w - 1, r, k);
        } else {
          float sx = x * w_scale;
          int ix = (int)sx;
          float dx = sx - ix;
          val = (1 - dx) * px(hwc, w, c, ix, r, k) + dx * px(hwc, w, c, ix + 1, r, k);
        }
        part[((size_t)k * h + r) * rw + x] = val;
      }
  for (int k = 0; k < nc; k++)
    for (int r = 0; r < rh; r++) {
      float sy = r * h_scale;
      int iy = (int)sy;
      float dy = sy - iy;
      float *o = res + ((size_t)k * rh + r) * rw;
      const float *p0 = part + ((size_t)k * h + iy) * rw;
      for (int x = 0; x < rw; x++) o[x] = (1 - dy) * p0[x];
      /* Darknet adds the second row as a separate step (and skips it on the last row even when
       * rounding put iy one short): kept, since it changes the rounding */
      if (r == rh - 1 || h == 1) continue;
      for (int x = 0; x < rw; x++) o[x] += dy * p0[rw + x];
    }
  const int ox = (nw - rw) / 2, oy = (nh - rh) / 2;
  for (size_t i = 0; i < (size_t)nc * nh * nw; i++) out[i] = 0.5f;
  for (int k = 0; k < nc; k++)
    for (int r = 0; r < rh; r++)
      for (int x = 0; x < rw; x++) {
        int X = ox + x, Y = oy + r;
        if (X < 0 || Y < 0 || X >= nw || Y >= nh) continue;
        out[((size_t)k * nh + Y) * nw + X] = res[((size_t)k * rh + r) * rw + x];
      }
}
