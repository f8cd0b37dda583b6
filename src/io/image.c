/* PNG and JPEG files and bilinear resampling (include/cnnb/image.h). Both libraries report
 * errors by longjmp from their error handlers: every object touched after setjmp is volatile
 * or freed in one place, so an error leaves nothing behind. */
#include "cnnb/image.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* jpeglib.h uses size_t and FILE without including their headers */
#include <jpeglib.h>
#include <png.h>

#include "cnnb/error.h"

static FILE *open_file(const char *path, const char *mode, int *rc)
{
  FILE *f = fopen(path, mode);
  if (!f)
    *rc = cnnb_error(CNNB_EIO, "%s: %s", path, errno == ENOENT && *mode == 'r' ? "no such file" : strerror(errno));
  return f;
}

int cnnb_png_write(const char *path, const unsigned char *hwc, int h, int w, int c)
{
  static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                               PNG_COLOR_TYPE_RGBA};
  if (h < 1 || w < 1 || c < 1 || c > 4)
    return cnnb_error(CNNB_EINVAL, "%s: cannot write a %dx%dx%d image as PNG (1-4 channels)", path, h, w, c);
  int rc = 0;
  FILE *f = open_file(path, "wb", &rc);
  if (!f) return rc;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!png || !info) {
    png_destroy_write_struct(&png, NULL);
    fclose(f);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory for libpng", path);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    fclose(f);
    remove(path);
    return cnnb_error(CNNB_EIO, "%s: writing the PNG failed (disk full?)", path);
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, types[c], PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(hwc + (size_t)y * w * c));
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  if (fclose(f) != 0) {
    remove(path);
    return cnnb_error(CNNB_EIO, "%s: writing the PNG failed: %s", path, strerror(errno));
  }
  return 0;
}

typedef struct jerr {
  struct jpeg_error_mgr mgr;
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
} jerr;

static void jpeg_fail(j_common_ptr cinfo)
{
  jerr *e = (jerr *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, e->msg);
  longjmp(e->jb, 1);
}

static void jpeg_quiet(j_common_ptr cinfo, int level) { (void)cinfo, (void)level; }

int cnnb_jpeg_read(const char *path, unsigned char **out, int *h, int *w, int *c)
{
  *out = NULL;
  int rc = 0;
  FILE *f = open_file(path, "rb", &rc);
  if (!f) return rc;
  struct jpeg_decompress_struct ci;
  jerr e;
  unsigned char *volatile buf = NULL;
  ci.err = jpeg_std_error(&e.mgr);
  e.mgr.error_exit = jpeg_fail;
  e.mgr.emit_message = jpeg_quiet; /* warnings (corrupt data recovered) stay silent */
  if (setjmp(e.jb)) {
    jpeg_destroy_decompress(&ci);
    fclose(f);
    free(buf);
    return cnnb_error(CNNB_EIO, "%s: not a readable JPEG file (%s)", path, e.msg);
  }
  jpeg_create_decompress(&ci);
  jpeg_stdio_src(&ci, f);
  jpeg_read_header(&ci, TRUE);
  if (ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&ci);
    fclose(f);
    return cnnb_error(CNNB_EIO, "%s: CMYK JPEG images are not supported (convert to RGB)", path);
  }
  ci.out_color_space = ci.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&ci);
  const int W = (int)ci.output_width, H = (int)ci.output_height, C = ci.output_components;
  buf = malloc((size_t)W * H * C);
  if (!buf) {
    jpeg_destroy_decompress(&ci);
    fclose(f);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory for a %dx%d image", path, W, H);
  }
  while (ci.output_scanline < ci.output_height) {
    JSAMPROW row = buf + (size_t)ci.output_scanline * W * C;
    jpeg_read_scanlines(&ci, &row, 1);
  }
  jpeg_finish_decompress(&ci);
  jpeg_destroy_decompress(&ci);
  fclose(f);
  *out = buf;
  *h = H, *w = W, *c = C;
  return 0;
}

int cnnb_jpeg_write(const char *path, const unsigned char *hwc, int h, int w, int c, int quality)
{
  if (h < 1 || w < 1 || (c != 1 && c != 3))
    return cnnb_error(CNNB_EINVAL, "%s: cannot write a %dx%dx%d image as JPEG (1 or 3 channels)", path, h, w, c);
  int rc = 0;
  FILE *f = open_file(path, "wb", &rc);
  if (!f) return rc;
  struct jpeg_compress_struct ci;
  jerr e;
  ci.err = jpeg_std_error(&e.mgr);
  e.mgr.error_exit = jpeg_fail;
  if (setjmp(e.jb)) {
    jpeg_destroy_compress(&ci);
    fclose(f);
    remove(path);
    return cnnb_error(CNNB_EIO, "%s: writing the JPEG failed (%s)", path, e.msg);
  }
  jpeg_create_compress(&ci);
  jpeg_stdio_dest(&ci, f);
  ci.image_width = (JDIMENSION)w;
  ci.image_height = (JDIMENSION)h;
  ci.input_components = c;
  ci.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&ci);
  jpeg_set_quality(&ci, quality < 1 ? 1 : quality > 100 ? 100 : quality, TRUE);
  jpeg_start_compress(&ci, TRUE);
  while (ci.next_scanline < ci.image_height) {
    JSAMPROW row = (JSAMPROW)(hwc + (size_t)ci.next_scanline * w * c);
    jpeg_write_scanlines(&ci, &row, 1);
  }
  jpeg_finish_compress(&ci);
  jpeg_destroy_compress(&ci);
  if (fclose(f) != 0) {
    remove(path);
    return cnnb_error(CNNB_EIO, "%s: writing the JPEG failed: %s", path, strerror(errno));
  }
  return 0;
}

/* Source coordinate of a destination pixel centre, split into a base index and a weight. */
static void src_pos(int d, int dn, int sn, int *i0, int *i1, float *t)
{
  float x = ((float)d + 0.5f) * (float)sn / (float)dn - 0.5f;
  if (x < 0) x = 0;
  int i = (int)x;
  if (i > sn - 1) i = sn - 1;
  *i0 = i;
  *i1 = i + 1 < sn ? i + 1 : sn - 1;
  *t = x - (float)i;
  if (*t > 1) *t = 1;
}

void cnnb_image_resize_bilinear(const unsigned char *src, int sh, int sw, int c, unsigned char *dst, int dh, int dw)
{
  for (int y = 0; y < dh; y++) {
    int y0, y1;
    float ty;
    src_pos(y, dh, sh, &y0, &y1, &ty);
    for (int x = 0; x < dw; x++) {
      int x0, x1;
      float tx;
      src_pos(x, dw, sw, &x0, &x1, &tx);
      for (int k = 0; k < c; k++) {
        float a = src[((size_t)y0 * sw + x0) * c + k], b = src[((size_t)y0 * sw + x1) * c + k];
        float p = src[((size_t)y1 * sw + x0) * c + k], q = src[((size_t)y1 * sw + x1) * c + k];
        float top = a + (b - a) * tx, bot = p + (q - p) * tx;
        float v = top + (bot - top) * ty + 0.5f;
        dst[((size_t)y * dw + x) * c + k] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
    }
  }
}

/* PNG through libpng's simplified API, which handles every colour type and bit depth in one
 * place. */
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
