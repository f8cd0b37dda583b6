/* JPEG or PNG to RGB (include/cnnb/image_load.h). PNG through libpng's simplified API, which
 * handles every colour type and bit depth in one place. */
#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/image.h"
#include "cnnb/image_load.h"

int cnnb_png_read_rgb(const char *path, unsigned char **hwc, int *h, int *w)
{
  png_image im;
  memset(&im, 0, sizeof im);
  im.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&im, path))
    return cnnb_error(CNNB_EIO, "%s: cannot decode PNG: %s", path, im.message);
  /* alpha is dropped, not blended: Darknet's OpenCV loader does the same with IMREAD_COLOR */
  im.format = PNG_FORMAT_RGB;
  if (im.width > (1u << 15) || im.height > (1u << 15)) {
    png_image_free(&im);
    return cnnb_error(CNNB_EIO, "%s: PNG of %ux%u is too large", path, im.width, im.height);
  }
  unsigned char *buf = malloc(PNG_IMAGE_SIZE(im));
  if (!buf) {
    png_image_free(&im);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
  }
  png_color black = {0, 0, 0};
  if (!png_image_finish_read(&im, &black, buf, 0, NULL)) {
    free(buf);
    return cnnb_error(CNNB_EIO, "%s: cannot decode PNG: %s", path, im.message);
  }
  *hwc = buf, *h = (int)im.height, *w = (int)im.width;
  return 0;
}

int cnnb_image_load_rgb(const char *path, unsigned char **hwc, int *h, int *w)
{
  unsigned char magic[8] = {0};
  FILE *f = fopen(path, "rb");
  if (!f) return cnnb_error(CNNB_EIO, "%s: %s", path, strerror(errno));
  size_t n = fread(magic, 1, sizeof magic, f);
  fclose(f);
  if (n >= 8 && !memcmp(magic, "\x89PNG\r\n\x1a\n", 8)) return cnnb_png_read_rgb(path, hwc, h, w);
  if (n < 3 || magic[0] != 0xff || magic[1] != 0xd8 || magic[2] != 0xff)
    return cnnb_error(CNNB_EIO, "%s: neither a JPEG nor a PNG file", path);
  int c, rc = cnnb_jpeg_read(path, hwc, h, w, &c);
  if (rc) return rc;
  if (c == 3) return 0;
  unsigned char *rgb = malloc((size_t)*h * *w * 3);
  if (!rgb) {
    free(*hwc);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory", path);
  }
  for (size_t i = 0; i < (size_t)*h * *w; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = (*hwc)[i];
  free(*hwc);
  *hwc = rgb;
  return 0;
}
