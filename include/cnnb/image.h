/* Image files: PNG reading and writing (libpng), JPEG reading and writing
 * (libjpeg) and bilinear resampling. Pixels are uint8, rows top to bottom, channels last
 * (H x W x C, the layout of dataset files). Errors name the file. */
#ifndef CNNB_IMAGE_H
#define CNNB_IMAGE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Writes an 8-bit PNG: C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA. */
int cnnb_png_write(const char *path, const unsigned char *hwc, int h, int w, int c);
/* Reads a JPEG (greyscale or colour; CMYK is refused) into a malloc'ed H x W x C buffer,
 * C = 1 or 3. */
int cnnb_jpeg_read(const char *path, unsigned char **hwc, int *h, int *w, int *c);
/* Writes a baseline JPEG of C = 1 or 3 channels at quality 1-100. */
int cnnb_jpeg_write(const char *path, const unsigned char *hwc, int h, int w, int c, int quality);
/* Bilinear resampling of an sh x sw x c image to dh x dw x c with pixel centres aligned
 * (x_src = (x_dst + 0.5) * sw / dw - 0.5, clamped at the borders: PyTorch's
 * align_corners=False, without antialiasing), rounded to the nearest integer. */
void cnnb_image_resize_bilinear(const unsigned char *src, int sh, int sw, int c, unsigned char *dst, int dh,
                                int dw);

/* Reads an 8-bit PNG (any colour type; 16-bit is reduced, alpha dropped, palette expanded) into
 * a malloc'ed H x W x 3 RGB buffer. */
int cnnb_png_read_rgb(const char *path, unsigned char **hwc, int *h, int *w);
/* Reads a JPEG or PNG, told apart by their first bytes, as H x W x 3 RGB (greyscale repeated
 * over the three channels), the way Darknet's loader sees it. Errors name the file. */
int cnnb_image_load_rgb(const char *path, unsigned char **hwc, int *h, int *w);

#ifdef __cplusplus
}
#endif
#endif
