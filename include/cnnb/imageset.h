/* Image sets: photos of any size in one HDF5 file (docs/FORMATS.md "Image sets"), written by
 * `cnn-batch import images` and read by `detect`. Pixels are decoded once at import and kept at
 * their original size (RGB, H x W x 3, rows top to bottom), all images end to end in one 1-D
 * uint8 dataset, so that reading image i is one contiguous hyperslab; letterboxing happens at
 * detection time, for the network being run. */
#ifndef CNNB_IMAGESET_H
#define CNNB_IMAGESET_H

#ifdef __cplusplus
extern "C" {
#endif

#define CNNB_IMAGESET_SCHEMA "cnnb-images"
#define CNNB_IMAGESET_VERSION 1

/* Imports the JPEG and PNG files of dir (names ending .jpg, .jpeg, .png in any case, sorted by
 * name) into out (atomically: out.tmp then rename). A file that cannot be decoded is reported
 * as a warning naming its index and path, skipped and counted in *skipped. No decodable
 * image at all is an error. */
int cnnb_imageset_import_dir(const char *dir, const char *out, int compress, long *count, long *skipped);

typedef struct cnnb_imageset cnnb_imageset; /* opaque; one per process, read-only */
int cnnb_imageset_open(cnnb_imageset **s, const char *path);
void cnnb_imageset_close(cnnb_imageset *s);
long cnnb_imageset_count(const cnnb_imageset *s);
/* Height and width of image i. */
void cnnb_imageset_size(const cnnb_imageset *s, long i, int *h, int *w);
/* Source path of image i as imported (a pointer valid while s is open). */
const char *cnnb_imageset_path(const cnnb_imageset *s, long i);
/* Reads image i's H x W x 3 pixels into buf (at least h*w*3 bytes). */
int cnnb_imageset_read(cnnb_imageset *s, long i, unsigned char *buf);

#ifdef __cplusplus
}
#endif
#endif
