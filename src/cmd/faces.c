/* cnn-batch faces (docs/CLI.md, docs/FORMATS.md "Faces").
 *
 * Every photo of an image set through face-api.js's pipeline (include/cnnb/faces.h): rank 0
 * plans contiguous runs of chunks of --batch photos (cmd/chunks.h), each rank finds the faces
 * of its photos, their landmarks and descriptors, then the ranks exchange their face counts and
 * all write their rows into one file with parallel HDF5. The chunk grid does not depend on the
 * rank count, so 1 and 4 ranks give the same bytes. Finished chunks are kept under OUT.work/
 * (keyed by the models' hashes, the data and the thresholds): a rerun after an interruption
 * computes only the missing ones. SIGUSR1 or SIGTERM make every rank stop after its current
 * chunk (saved) and the command exit 3. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/chunks.h"
#include "cmd/cmd.h"
#include "cmd/job.h"
#include "cnnb/data.h"
#include "cnnb/error.h"
#include "cnnb/faces.h"
#include "cnnb/imageset.h"

static const char *default_models(char *buf, size_t n)
{
  const char *c = getenv("CNNB_CACHE"), *home = getenv("HOME");
  if (c && *c) snprintf(buf, n, "%s/face-models", c);
  else snprintf(buf, n, "%s/.cache/cnnb/face-models", home && *home ? home : ".");
  return buf;
}

/* Writes the rows of every rank into out (collective). */
static int write_output(const cnnb_dist *d, const char *out, const char *data, const char *models,
                        const cnnb_faces *fs, const cnnb_faces_opts *o, cnnb_imageset *set, long N, long lo, long hi,
                        const long long *counts, const cnnb_rows *rows, long long unreadable, long long *total_out)
{
  const cnnb_face *fc = (const cnnb_face *)rows->p;
  long long mine = (long long)rows->n, before = 0, total = 0;
  MPI_Exscan(&mine, &before, 1, MPI_LONG_LONG, MPI_SUM, d->comm);
  if (d->rank == 0) before = 0;
  MPI_Allreduce(&mine, &total, 1, MPI_LONG_LONG, MPI_SUM, d->comm);
  const size_t nr = rows->n, nimg = (size_t)(hi - lo);
  long long *ib = malloc(sizeof *ib * (5 * nr + 3 * nimg + 2)); /* photo, aligned x4; offsets (+1); sizes */
  float *fb = malloc(sizeof *fb * ((5 + 2 * CNNB_FACE_POINTS + CNNB_FACE_DIM) * nr + 1));
  int rc = cnnb_dist_agree(d, !ib || !fb ? cnnb_error(CNNB_ENOMEM, "faces: out of memory") : 0);
  if (rc) {
    free(ib);
    free(fb);
    return rc;
  }
  long long *photo = ib, *aligned = ib + nr, *offs = ib + 5 * nr, *sizes = offs + nimg + 1;
  float *score = fb, *box = fb + nr, *lm = box + 4 * nr, *desc = lm + 2 * CNNB_FACE_POINTS * nr;
  long long at = before;
  size_t r = 0;
  for (long i = lo; i < hi; i++) {
    offs[i - lo] = at;
    int h, w;
    cnnb_imageset_size(set, i, &h, &w);
    sizes[2 * (i - lo)] = h, sizes[2 * (i - lo) + 1] = w;
    for (long long j = 0; j < counts[i]; j++, r++) {
      photo[r] = i, score[r] = fc[r].score;
      for (int k = 0; k < 4; k++) box[4 * r + k] = fc[r].box[k], aligned[4 * r + k] = fc[r].aligned[k];
      memcpy(lm + 2 * CNNB_FACE_POINTS * r, fc[r].landmarks, sizeof fc[r].landmarks);
      memcpy(desc + CNNB_FACE_DIM * r, fc[r].descriptor, sizeof fc[r].descriptor);
    }
    at += counts[i];
  }
  offs[nimg] = total;
  const int last = d->rank == d->size - 1, lmdims[2] = {CNNB_FACE_POINTS, 2};
  const long r0 = nr ? (long)before : 0;
  cnnb_outfile *of = NULL;
  rc = cnnb_outfile_create(&of, out, d->comm);
  if (!rc) rc = cnnb_outfile_add_i64(of, "photo", total, 0);
  if (!rc) rc = cnnb_outfile_add_f32(of, "score", total, 0);
  if (!rc) rc = cnnb_outfile_add_f32(of, "box", total, 4);
  if (!rc) rc = cnnb_outfile_add(of, "landmarks", CNNB_OUT_F32, total, 2, lmdims);
  if (!rc) rc = cnnb_outfile_add_f32(of, "descriptor", total, CNNB_FACE_DIM);
  if (!rc) rc = cnnb_outfile_add_i64(of, "aligned", total, 4);
  if (!rc) rc = cnnb_outfile_add_i64(of, "offsets", N + 1, 0);
  if (!rc) rc = cnnb_outfile_add_i64(of, "image_size", N, 2);
  /* with no face at all the row datasets stay empty (a zero-row write is refused) */
  if (!rc && total) rc = cnnb_outfile_write_i64(of, "photo", r0, (long)nr, photo);
  if (!rc && total) rc = cnnb_outfile_write_f32(of, "score", r0, (long)nr, score);
  if (!rc && total) rc = cnnb_outfile_write_f32(of, "box", r0, (long)nr, box);
  if (!rc && total) rc = cnnb_outfile_write(of, "landmarks", r0, (long)nr, lm);
  if (!rc && total) rc = cnnb_outfile_write_f32(of, "descriptor", r0, (long)nr, desc);
  if (!rc && total) rc = cnnb_outfile_write_i64(of, "aligned", r0, (long)nr, aligned);
  if (!rc) rc = cnnb_outfile_write_i64(of, "offsets", lo, (long)nimg + last, offs);
  if (!rc) rc = cnnb_outfile_write_i64(of, "image_size", lo, (long)nimg, sizes);
  free(ib);
  free(fb);
  static const char *hk[3] = {"detector_hash", "landmarks_hash", "descriptor_hash"};
  static const char *pk[3] = {"detector", "landmarks", "descriptor"};
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "schema", "cnnb-faces");
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "source", data);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "models", models);
  for (int k = 0; k < 3 && !rc; k++) {
    rc = cnnb_outfile_attr_str(of, "/", hk[k], cnnb_faces_model_hash(fs, k));
    if (!rc) rc = cnnb_outfile_attr_str(of, "/", pk[k], cnnb_faces_model_path(fs, k));
  }
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "min_score", o->min_score);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "iou", o->iou);
  if (!rc) rc = cnnb_outfile_attr_i64(of, "/", "input_size", o->input_size);
  if (!rc) rc = cnnb_outfile_attr_i64(of, "/", "skipped", unreadable);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "box_format", "x,y,w,h: top-left corner and size in photo pixels");
  if (!rc) {
    rc = cnnb_outfile_commit(of);
    of = NULL;
  }
  cnnb_outfile_abort(of);
  *total_out = total;
  return rc;
}

/* cnnb_faces_run_read's reader: photo first+i of the image set into one buffer that serves every
 * photo (the pipeline is done with a photo before it asks for the next); an unreadable photo is
 * reported, counted and skipped (NULL). */
typedef struct photo_reader {
  cnnb_imageset *set;
  long first;
  unsigned char *px;
  size_t cap;
  double t_read;        /* seconds in cnnb_imageset_read */
  long long unreadable;
  int rc;               /* out of memory: ends the run */
} photo_reader;

static const unsigned char *read_photo(void *ctx, int i)
{
  photo_reader *r = ctx;
  const long idx = r->first + i;
  int h, w;
  cnnb_imageset_size(r->set, idx, &h, &w);
  const size_t need = (size_t)h * w * 3;
  if (need > r->cap) {
    unsigned char *p = realloc(r->px, need);
    if (!p) {
      r->rc = cnnb_error(CNNB_ENOMEM, "faces: out of memory for photo %ld", idx);
      return NULL;
    }
    r->px = p, r->cap = need;
  }
  const double t0 = cnnb_now();
  const int bad = cnnb_imageset_read(r->set, idx, r->px);
  r->t_read += cnnb_now() - t0;
  if (bad) {
    fprintf(stderr, "cnn-batch faces: warning: photo %ld (%s) skipped: %s\n", idx, cnnb_imageset_path(r->set, idx),
            cnnb_error_message());
    r->unreadable++;
    return NULL;
  }
  return r->px;
}

int cnnb_cmd_faces(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch faces --data PHOTOS.h5 -o FACES.h5 [--models DIR] [--min-score 0.5] [--input-size 416]\n"
    "Finds every face of every photo of an image set (import images) with face-api.js's networks\n"
    "and rules: Tiny-YOLOv2 detector, 68 landmarks, dlib-aligned 150x150 crop, 128-d ResNet-34\n"
    "descriptor. Writes one row per face: /photo, /score, /box (x, y, w, h: top-left corner and\n"
    "size in photo pixels), /landmarks (68 x 2), /descriptor (128), /aligned, and /offsets (N+1).\n"
    "DIR (default $CNNB_CACHE/face-models) holds the models written by tools/face-models.\n"
    "A rerun after an interruption resumes from the chunks saved in FACES.h5.work/; SIGUSR1 or\n"
    "SIGTERM make every rank stop after its current chunk and exit with code 3.";
  char defdir[4096];
  const char *data = NULL, *out = NULL, *models = default_models(defdir, sizeof defdir), *min_s = "0.5",
             *size_s = "416", *batch_s = "8";
  cnnb_opt opts[] = {{"data", "FILE", "image set written by import images", &data, NULL},
                     {"output", "FILE", "faces HDF5 file (-o)", &out, NULL},
                     {"models", "DIR", "converted face-api.js models (default $CNNB_CACHE/face-models)", &models, NULL},
                     {"min-score", "T", "keep faces with detector score > T (default 0.5)", &min_s, NULL},
                     {"input-size", "S", "detector input, a multiple of 32 (default 416)", &size_s, NULL},
                     {"batch", "B", "photos per resumable chunk and crops per descriptor forward (default 8)", &batch_s, NULL},
                     {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[1];
  int npos, prc = cnnb_args_parse(argc, argv, usage, opts, pos, 1, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  if (npos != 0 || !data || !out) {
    fprintf(stderr, "cnn-batch faces: needs --data and -o\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  double min_score;
  long size, B;
  if (cnnb_arg_float("faces", "min-score", min_s, 0, 1, &min_score) ||
      cnnb_arg_long("faces", "input-size", size_s, 32, 4096, &size) ||
      cnnb_arg_long("faces", "batch", batch_s, 1, 64, &B))
    return CNNB_EXIT_USAGE;
  if (size % 32) {
    fprintf(stderr, "cnn-batch faces: --input-size: %ld is not a multiple of 32\n", size);
    return CNNB_EXIT_USAGE;
  }

  cnnb_chunks_catch_stop();
  const double t_start = cnnb_now();
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  cnnb_faces *fs = NULL;
  cnnb_imageset *set = NULL;
  long long *counts = NULL;
  photo_reader rd = {0};
  int *ph = NULL, *pw = NULL;
  cnnb_rows rows = {NULL, 0, 0, sizeof(cnnb_face)};
  cnnb_face_list fl = {NULL, 0, 0};
  char work[4200];
  snprintf(work, sizeof work, "%s.work", out);
  cnnb_faces_opts fo = cnnb_faces_opts_default();
  fo.input_size = (int)size, fo.min_score = (float)min_score, fo.max_batch = (int)B, fo.quiet = d.rank != 0;

  int rc = cnnb_faces_open(&fs, models, &fo);
  if (!rc) rc = cnnb_imageset_open(&set, data);
  rc = cnnb_dist_agree(&d, rc);
  if (rc) goto done;

  const long N = cnnb_imageset_count(set), nchunks = (N + B - 1) / B;
  long k0, k1;
  counts = calloc((size_t)(N > 0 ? N : 1), sizeof *counts);
  ph = calloc((size_t)B, sizeof *ph), pw = calloc((size_t)B, sizeof *pw);
  rc = cnnb_dist_agree(&d, !counts || !ph || !pw ? cnnb_error(CNNB_ENOMEM, "out of memory") : 0);
  if (!rc) rc = cnnb_chunks_plan(&d, nchunks, &k0, &k1);
  if (!rc) rc = cnnb_chunks_workdir(&d, work);
  if (rc) goto done;
  const long lo = k0 * B < N ? k0 * B : N, hi = k1 * B < N ? k1 * B : N;

  uint64_t key = CNNB_FNV_INIT;
  for (int k = 0; k < 3; k++) key = cnnb_fnv_str(key, cnnb_faces_model_hash(fs, k));
  key = cnnb_fnv_file(key, data);
  char ks[128];
  snprintf(ks, sizeof ks, "%.9g %.9g %ld %ld %ld", fo.min_score, fo.iou, size, B, N);
  key = cnnb_fnv_str(key, ks);

  long computed = 0, resumed = 0;
  double t_write = 0;
  const double t_loop = cnnb_now();
  int lrc = 0;
  cnnb_chunk_loop loop;
  cnnb_chunks_loop_init(&loop, &d, nchunks, k0, k1);
  for (long k; cnnb_chunks_next(&loop, lrc, &k);) { /* all ranks stop together on a signal or an error */
    const long a = k * B, m = (a + B < N ? a + B : N) - a;
    if (!cnnb_chunk_load(work, "faces", k, key, m, counts + a, &rows)) {
      resumed += m;
      continue;
    }
    for (long i = 0; i < m; i++) cnnb_imageset_size(set, a + i, &ph[i], &pw[i]);
    fl.n = 0;
    rd.set = set, rd.first = a;
    lrc = cnnb_faces_run_read(fs, (int)m, read_photo, &rd, ph, pw, &fl, counts + a);
    if (!lrc) lrc = rd.rc;
    if (lrc) {
      lrc = cnnb_error_prefix(lrc, "photos %ld..%ld (%s...): ", a, a + m - 1, cnnb_imageset_path(set, a));
      continue;
    }
    lrc = cnnb_rows_push(&rows, fl.f, fl.n);
    if (!lrc) cnnb_chunk_save(work, "faces", k, key, m, counts + a, fl.f, fl.n, sizeof(cnnb_face));
    computed += m;
  }
  double t_pipe = cnnb_now() - t_loop, t_pipe_max = 0; /* the slowest rank's photos */
  rc = cnnb_dist_agree(&d, lrc);
  if (!rc && loop.stopped) rc = cnnb_chunks_stopped(&d, "faces", "photos", computed, resumed, N, work);
  if (rc) goto done;
  MPI_Reduce(&t_pipe, &t_pipe_max, 1, MPI_DOUBLE, MPI_MAX, 0, d.comm);

  long long sums[2] = {0, 0}, nres[2] = {resumed, computed}, total = 0, skipped = 0;
  MPI_Reduce(nres, sums, 2, MPI_LONG_LONG, MPI_SUM, 0, d.comm);
  MPI_Allreduce(&rd.unreadable, &skipped, 1, MPI_LONG_LONG, MPI_SUM, d.comm);
  double t0 = cnnb_now();
  rc = write_output(&d, out, data, models, fs, &fo, set, N, lo, hi, counts, &rows, skipped, &total);
  t_write = cnnb_now() - t0;
  if (!rc) cnnb_chunks_cleanup(&d, work, k0, k1);
  if (!rc) {
    /* the share of the run spent in HDF5, summed over ranks (the benchmark prints it) */
    double mine[3] = {rd.t_read, t_write, cnnb_now() - t_start}, all[3];
    MPI_Reduce(mine, all, 3, MPI_DOUBLE, MPI_SUM, 0, d.comm);
    if (d.rank == 0) {
      printf("wrote %s: %lld faces in %ld photos (%lld computed, %lld resumed, %lld skipped)\n", out, total, N,
             sums[1], sums[0], skipped);
      printf("faces: time %.3f s, photos %.3f s (%.2f photos/s), HDF5 reads %.3f s, writes %.3f s (%.2f%% of "
             "the run, all ranks)\n",
             cnnb_now() - t_start, t_pipe_max, t_pipe_max > 0 ? (double)sums[1] / t_pipe_max : 0.0, all[0], all[1],
             100.0 * (all[0] + all[1]) / (all[2] > 0 ? all[2] : 1));
    }
  }
done:
  if (rc && rc != CNNB_EINTR) cnnb_job_fail(&d, "faces");
  free(rd.px);
  free(ph);
  free(pw);
  free(fl.f);
  free(rows.p);
  free(counts);
  cnnb_imageset_close(set);
  cnnb_faces_close(fs);
  return rc == CNNB_EINTR ? CNNB_EXIT_STOPPED : rc ? CNNB_EXIT_FAIL : CNNB_EXIT_OK;
}
