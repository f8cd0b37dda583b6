/* Reading photos of any format the project decodes (JPEG through image.h, PNG here), told apart
 * by their first bytes rather than their names. Kept apart from image.h, which another part of
 * the project owns. */
#ifndef CNNB_IMAGE_LOAD_H
#define CNNB_IMAGE_LOAD_H

#ifdef __cplusplus
extern "C" {
#endif

/* Reads an 8-bit PNG (any colour type; 16-bit is reduced, alpha dropped, palette expanded) into
 * a malloc'ed H x W x 3 RGB buffer. */
int cnnb_png_read_rgb(const char *path, unsigned char **hwc, int *h, int *w);
/* Reads a JPEG or PNG as H x W x 3 RGB (greyscale repeated over the three channels), the way
 * Darknet's loader sees it. Errors name the file. */
int cnnb_image_load_rgb(const char *path, unsigned char **hwc, int *h, int *w);

#ifdef __cplusplus
}
#endif
#endif
