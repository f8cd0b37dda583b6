/* Faces: face-api.js's pipeline in C, on its own trained networks converted by tools/face-models
 * (.h5 checkpoints in $CACHE/face-models holding their model text): the Tiny-YOLOv2 face
 * detector, the 68-point landmark net, dlib's ResNet-34 descriptor. For each photo, as
 * face-api.js's detectAllFaces(TinyFaceDetectorOptions).withFaceLandmarks()
 * .withFaceDescriptors() does:
 *   1. the photo padded with zeros at the bottom or right to a square, resized (TensorFlow's
 *      legacy bilinear: align_corners = half_pixel_centers = false) to input_size, the net run,
 *      boxes with score > min_score decoded, scaled back to the photo, non-max suppression at
 *      IoU 0.4 (highest score first);
 *   2. each box clipped to the photo and floored, that crop padded to a square (zeros split
 *      around it, the larger half after), resized to 112; its 136 outputs mapped back to the
 *      crop, then shifted by the (unclipped) box corner;
 *   3. dlib's alignment from the eye and mouth centres (size = floor(mean eye-mouth distance /
 *      0.45), corner at (0.5, 0.43) of it), that crop clipped, floored, padded and resized to
 *      150, the 128-d descriptor.
 *
 *   cnnb_faces *f;
 *   cnnb_faces_opts o = cnnb_faces_opts_default();
 *   if (cnnb_faces_open(&f, "/root/.cache/cnnb/face-models", &o) < 0) ...cnnb_error_message()...
 *   cnnb_face_list out = {0};
 *   cnnb_faces_run(f, 1, &rgb, &h, &w, &out, counts);   // faces of photo 0: out.f[0..counts[0])
 *   free(out.f); cnnb_faces_close(f);
 */
#ifndef CNNB_FACES_H
#define CNNB_FACES_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CNNB_FACE_POINTS 68
#define CNNB_FACE_DIM 128
/* File names of the three models inside the models directory. */
#define CNNB_FACE_DETECTOR "face-detector-tiny.h5"
#define CNNB_FACE_LANDMARKS "face-landmarks68.h5"
#define CNNB_FACE_DESCRIPTOR "face-descriptor-resnet34.h5"

typedef struct cnnb_face {
  float box[4];                          /* x, y, w, h: top-left corner and size, photo pixels */
  float score;                           /* detector score (sigmoid of objectness) */
  float landmarks[2 * CNNB_FACE_POINTS]; /* x0, y0, x1, y1, ... photo pixels */
  int aligned[4];                        /* x, y, w, h of the crop the descriptor saw */
  float descriptor[CNNB_FACE_DIM];
} cnnb_face;

/* A growable list of faces; the caller frees f. */
typedef struct cnnb_face_list {
  cnnb_face *f;
  size_t n, cap;
} cnnb_face_list;

typedef struct cnnb_faces_opts {
  int input_size;  /* detector input, a multiple of 32 (face-api's inputSize, default 416) */
  float min_score; /* keep boxes with score > min_score (default 0.5) */
  float iou;       /* non-max suppression drops boxes with IoU > iou (face-api's 0.4) */
  int max_batch;   /* crops per descriptor forward (faces: also photos per chunk); the detector
                    * and the landmark net take one photo or crop per forward */
  int quiet;       /* no warnings while loading */
} cnnb_faces_opts;

cnnb_faces_opts cnnb_faces_opts_default(void);

typedef struct cnnb_faces cnnb_faces; /* three networks and their buffers; one per thread */

/* Loads dir/CNNB_FACE_DETECTOR, _LANDMARKS and _DESCRIPTOR (each a checkpoint with its model
 * text). Errors name the file. */
int cnnb_faces_open(cnnb_faces **f, const char *dir, const cnnb_faces_opts *o);
void cnnb_faces_close(cnnb_faces *f);
/* Path and hex SHA-256 of model k (0 detector, 1 landmarks, 2 descriptor). */
const char *cnnb_faces_model_path(const cnnb_faces *f, int k);
const char *cnnb_faces_model_hash(const cnnb_faces *f, int k);

/* Runs the pipeline on n photos (H x W x 3 RGB uint8, rgb[i] of h[i] x w[i]); appends their
 * faces to out, photo by photo, each photo's in falling score; counts[i] receives photo i's
 * count. Returns 0 or a negative status. */
int cnnb_faces_run(cnnb_faces *f, int n, const unsigned char *const *rgb, const int *h, const int *w,
                   cnnb_face_list *out, long long *counts);
/* The same with the photos fetched one at a time: read(ctx, i) returns photo i's pixels (or NULL:
 * unreadable, no faces), which need stay valid only until the next call, so one buffer can
 * serve every photo; photos with h[i] or w[i] < 1 are not read. Detection, landmarks and the
 * descriptor crops of a photo are done before the next is read; the descriptors then run over
 * all the faces, in batches of the descriptor net's max_batch. */
typedef const unsigned char *(*cnnb_faces_read_fn)(void *ctx, int i);
int cnnb_faces_run_read(cnnb_faces *f, int n, cnnb_faces_read_fn read, void *ctx, const int *h, const int *w,
                        cnnb_face_list *out, long long *counts);

/* ---- the steps, exposed for tests ---- */

/* Network input from a crop: the cw x ch region at (x0, y0) of an H x W x 3 photo (inside it),
 * padded with zeros to a square of side max(cw, ch) (centre = 0: all padding after the crop;
 * centre = 1: round(d/2) after and the rest before, as face-api's padToSquare), resized to
 * size x size with TensorFlow's legacy bilinear (source = dest x in/out, no half-pixel shift,
 * float32 as XNNPACK). Writes 3 planes of size x size floats on the 0..255 scale. */
void cnnb_faces_input(const unsigned char *rgb, int h, int w, int x0, int y0, int cw, int ch, int centre, int size,
                      float *chw);

/* Non-max suppression as face-api's: by falling score, drop later boxes whose IoU with a kept
 * one is > iou. Boxes x, y, w, h. Writes the kept indices to keep; returns their count. */
int cnnb_faces_nms(const float *boxes, const float *scores, int n, float iou, int *keep);

/* dlib's alignment box (face-api's FaceLandmarks.align with useDlibAlignment) from 68 landmarks
 * in photo pixels; cw, ch: size of the landmark crop (face-api bounds width and height by it). */
void cnnb_faces_align(const float *landmarks, int cw, int ch, int rect[4]);

/* face-api's Box.clipAtImageBorders: clip to the W x H photo, then floor all four numbers. */
void cnnb_faces_clip(const double box[4], int w, int h, int out[4]);

#ifdef __cplusplus
}
#endif
#endif
