/* cnn-batch detect (docs/CLI.md, docs/FORMATS.md "Detections").
 *
 * detect: rank 0 plans which chunks of images (--batch images each, aligned on multiples of
 * the batch) every rank takes; each rank letterboxes, runs the network, decodes and
 * suppresses; then the ranks exchange their row counts, compute where each one's rows go,
 * and all write their rows into one file. The chunk grid does not depend on the rank count,
 * and each chunk is one forward of the same images, so 1 and 4 ranks give identical bytes.
 * Resuming: every finished chunk is saved under OUT.work/ (cmd/chunks.h, with a key of the
 * model, weights, data and thresholds); a rerun of the same command loads those chunks instead
 * of computing them; the directory is removed once OUT is complete. SIGUSR1 or SIGTERM make
 * every rank stop after its current chunk (saved) and the command exit 3 (cmd/chunks.h). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/chunks.h"
#include "cmd/cmd.h"
#include "cmd/job.h"
#include "cnnb/ckpt.h"
#include "cnnb/data.h"
#include "cnnb/detect.h"
#include "cnnb/error.h"
#include "cnnb/imageset.h"
#include "model/stem.h"

/* One detection row as kept in memory and in chunk files. */
typedef struct det_row {
  int32_t cls;
  float score, x, y, w, h;
} det_row;

/* Comma-separated class names: from --names (one per line, Darknet's .names files) or 0..K-1. */
static char *class_names(const char *path, int k)
{
  size_t cap = 16 * (size_t)k + 64, n = 0;
  char *s = malloc(cap), line[512];
  if (!s) return NULL;
  s[0] = 0;
  FILE *f = path ? fopen(path, "r") : NULL;
  if (path && !f) {
    free(s);
    cnnb_error(CNNB_EIO, "%s: %s", path, strerror(errno));
    return NULL;
  }
  for (int i = 0; i < k; i++) {
    const char *name = line;
    if (f && fgets(line, sizeof line, f)) {
      line[strcspn(line, "\r\n")] = 0;
      for (char *c = line; *c; c++)
        if (*c == ',') *c = ';'; /* the attribute is comma-separated */
    } else {
      snprintf(line, sizeof line, "%d", i);
    }
    size_t len = strlen(name);
    if (n + len + 2 > cap) {
      cap = 2 * (n + len + 2);
      char *ns = realloc(s, cap);
      if (!ns) {
        free(s);
        if (f) fclose(f);
        return NULL;
      }
      s = ns;
    }
    n += (size_t)sprintf(s + n, "%s%s", i ? "," : "", name);
  }
  if (f) fclose(f);
  return s;
}

int cnnb_cmd_detect(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch detect MODEL.cfg --weights W --data IMGS.h5 [--thresh 0.25] [--nms 0.45] -o DETS.h5\n"
    "Runs a [yolo]/[region] network on every image of an image set (import images) with\n"
    "Darknet's letterbox and decoding; writes one row per box and class: /image, /class, /score,\n"
    "/box (x, y, w, h: centre and size in the original image's pixels), and /offsets (N+1: rows\n"
    "of image i are offsets[i]..offsets[i+1]). W: Darknet .weights or a cnn-batch checkpoint.\n"
    "A rerun after an interruption resumes from the chunks saved in DETS.h5.work/; SIGUSR1 or SIGTERM\n"
    "make every rank stop after its current chunk and exit with code 3.";
  const char *weights = NULL, *data = NULL, *out = NULL, *thresh_s = "0.25", *nms_s = "0.45", *batch_s = "8",
             *names = NULL;
  cnnb_opt opts[] = {{"weights", "W", "Darknet .weights or cnn-batch checkpoint", &weights, NULL},
                     {"data", "FILE", "image set written by import images", &data, NULL},
                     {"output", "FILE", "detections HDF5 file (-o)", &out, NULL},
                     {"thresh", "T", "keep objectness x class probability > T (default 0.25)", &thresh_s, NULL},
                     {"nms", "T", "suppress same-class boxes with IoU > T (default 0.45; 0: none)", &nms_s, NULL},
                     {"batch", "B", "images per forward and per resumable chunk (default 8)", &batch_s, NULL},
                     {"names", "FILE", "class names, one per line (Darknet .names)", &names, NULL},
                     {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[1];
  int npos, prc = cnnb_args_parse(argc, argv, usage, opts, pos, 1, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  if (npos != 1 || !weights || !data || !out) {
    fprintf(stderr, "cnn-batch detect: needs MODEL.cfg, --weights, --data and -o\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  double thresh, nms;
  long B;
  if (cnnb_arg_float("detect", "thresh", thresh_s, 0, 1, &thresh) ||
      cnnb_arg_float("detect", "nms", nms_s, 0, 1, &nms) || cnnb_arg_long("detect", "batch", batch_s, 1, 4096, &B))
    return CNNB_EXIT_USAGE;

  cnnb_chunks_catch_stop();
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  cnnb_net *net = NULL;
  cnnb_stem stem = {0};
  cnnb_imageset *set = NULL;
  cnnb_outfile *of = NULL;
  float *x = NULL, *scratch = NULL;
  unsigned char *px = NULL;
  cnnb_det *dets = NULL;
  long long *counts = NULL, *buf = NULL;
  cnnb_rows rows = {NULL, 0, 0, sizeof(det_row)};
  char *cls_names = NULL, work[4096];
  snprintf(work, sizeof work, "%s.work", out);

  cnnb_net_opts no = cnnb_net_opts_default();
  no.max_batch = (int)B;
  no.share_outputs = 1; /* reads only the YOLO heads after forward */
  no.quiet = d.rank != 0;
  int rc = cnnb_net_load(&net, pos[0], &no);
  if (!rc && !cnnb_detect_has_heads(net))
    rc = cnnb_error(CNNB_ECFG, "%s: no [yolo] or [region] layer: not a detection model", pos[0]);
  if (!rc) rc = cnnb_weights_load(net, weights);
  if (!rc) cnnb_stem_install(&stem, net); /* yolov3-tiny's first conv and pool, fused */
  if (!rc) rc = cnnb_imageset_open(&set, data);
  if (!rc && !(cls_names = class_names(names, cnnb_detect_num_classes(net))))
    rc = names ? CNNB_EIO : cnnb_error(CNNB_ENOMEM, "out of memory");
  rc = cnnb_dist_agree(&d, rc);
  if (rc) goto done;

  const long N = cnnb_imageset_count(set), nchunks = (N + B - 1) / B;
  const int C = net->in.c, H = net->in.h, W = net->in.w;
  /* Rank 0 plans contiguous runs of chunks per rank and broadcasts them. */
  long k0 = 0, k1 = 0;
  counts = calloc((size_t)(N > 0 ? N : 1), sizeof *counts);
  int lrc = !counts ? cnnb_error(CNNB_ENOMEM, "out of memory") : 0;
  rc = cnnb_dist_agree(&d, lrc);
  if (!rc) rc = cnnb_chunks_plan(&d, nchunks, &k0, &k1);
  if (rc) goto done;
  const long lo = k0 * B < N ? k0 * B : N, hi = k1 * B < N ? k1 * B : N; /* my images */

  uint64_t key = cnnb_fnv_str(CNNB_FNV_INIT, net->cfg.text);
  key = cnnb_fnv_file(cnnb_fnv_file(key, weights), data);
  char ks[128];
  snprintf(ks, sizeof ks, "%.9g %.9g %ld %ld", thresh, nms, B, N);
  key = cnnb_fnv_str(key, ks);
  rc = cnnb_chunks_workdir(&d, work);
  if (rc) goto done;

  int maxh = 1;
  size_t maxpix = 1;
  for (long i = lo; i < hi; i++) {
    int h, w;
    cnnb_imageset_size(set, i, &h, &w);
    if (h > maxh) maxh = h;
    if ((size_t)h * w > maxpix) maxpix = (size_t)h * w;
  }
  const size_t cap = cnnb_detect_capacity(net), insz = (size_t)C * H * W;
  x = malloc(sizeof *x * insz * (size_t)B);
  scratch = malloc(sizeof *scratch * cnnb_letterbox_scratch(maxh, H, W, C));
  px = malloc(maxpix * 3);
  dets = malloc(sizeof *dets * (cap ? cap : 1));
  if (!x || !scratch || !px || !dets) lrc = cnnb_error(CNNB_ENOMEM, "detect: out of memory");
  long computed = 0, resumed = 0;
  cnnb_chunk_loop loop;
  cnnb_chunks_loop_init(&loop, &d, nchunks, k0, k1);
  for (long k; cnnb_chunks_next(&loop, lrc, &k);) { /* all ranks stop together on a signal or an error */
    const long a = k * B, m = (a + B < N ? a + B : N) - a;
    if (!cnnb_chunk_load(work, "detect", k, key, m, counts + a, &rows)) {
      resumed += m;
      continue;
    }
    size_t r0 = rows.n;
    int ih[4096], iw[4096];
    for (long i = 0; i < m && !lrc; i++) {
      cnnb_imageset_size(set, a + i, &ih[i], &iw[i]);
      lrc = cnnb_imageset_read(set, a + i, px);
      if (!lrc) cnnb_letterbox(px, ih[i], iw[i], 3, x + (size_t)i * insz, H, W, C, scratch);
    }
    if (lrc) continue; /* the next check ends the loop on every rank */
    cnnb_net_forward(net, x, (int)m);
    for (long i = 0; i < m && !lrc; i++) {
      int nd = cnnb_detect(net, (int)i, iw[i], ih[i], (float)thresh, (float)nms, dets, cap);
      if (nd < 0) {
        lrc = cnnb_error_prefix(nd, "image %ld (%s): ", a + i, cnnb_imageset_path(set, a + i));
        break;
      }
      counts[a + i] = nd;
      for (int j = 0; j < nd && !lrc; j++) {
        det_row r = {dets[j].cls, dets[j].score, dets[j].box.x, dets[j].box.y, dets[j].box.w, dets[j].box.h};
        lrc = cnnb_rows_push(&rows, &r, 1);
      }
    }
    if (!lrc)
      cnnb_chunk_save(work, "detect", k, key, m, counts + a, rows.p + r0 * rows.rowsize, rows.n - r0, rows.rowsize);
    computed += m;
  }
  rc = cnnb_dist_agree(&d, lrc);
  if (!rc && loop.stopped) rc = cnnb_chunks_stopped(&d, "detect", "images", computed, resumed, N, work);
  if (rc) goto done;

  /* Where every rank's rows go: exclusive prefix sum of the row counts. */
  long long mine = (long long)rows.n, before = 0, total = 0, nres[2] = {resumed, computed}, sums[2];
  MPI_Exscan(&mine, &before, 1, MPI_LONG_LONG, MPI_SUM, d.comm);
  if (d.rank == 0) before = 0;
  MPI_Allreduce(&mine, &total, 1, MPI_LONG_LONG, MPI_SUM, d.comm);
  MPI_Reduce(nres, sums, 2, MPI_LONG_LONG, MPI_SUM, 0, d.comm);
  const size_t nr = rows.n, nimg = (size_t)(hi - lo);
  buf = malloc(sizeof *buf * (2 * nr + 3 * nimg + 2)); /* image, class; offsets (+1); sizes */
  float *fb = malloc(sizeof *fb * (5 * nr + 1));
  lrc = !buf || !fb ? cnnb_error(CNNB_ENOMEM, "out of memory") : 0;
  rc = cnnb_dist_agree(&d, lrc);
  if (rc) {
    free(fb);
    goto done;
  }
  long long *img = buf, *cls = buf + nr, *offs = buf + 2 * nr, *sizes = offs + nimg + 1;
  float *score = fb, *box = fb + nr;
  long long at = before;
  size_t r = 0;
  const det_row *rr = (const det_row *)rows.p;
  for (long i = lo; i < hi; i++) {
    offs[i - lo] = at;
    int h, w;
    cnnb_imageset_size(set, i, &h, &w);
    sizes[2 * (i - lo)] = h, sizes[2 * (i - lo) + 1] = w;
    for (long long j = 0; j < counts[i]; j++, r++) {
      img[r] = i, cls[r] = rr[r].cls, score[r] = rr[r].score;
      box[4 * r] = rr[r].x, box[4 * r + 1] = rr[r].y, box[4 * r + 2] = rr[r].w, box[4 * r + 3] = rr[r].h;
    }
    at += counts[i];
  }
  /* also writes offsets[N] = total; with no box at all the row datasets stay empty (a write
   * of zero rows into an empty dataset is refused by the output writer) */
  const int last = d.rank == d.size - 1;
  offs[nimg] = total;
  rc = cnnb_outfile_create(&of, out, d.comm);
  if (!rc) rc = cnnb_outfile_add_i64(of, "image", total, 0);
  if (!rc) rc = cnnb_outfile_add_i64(of, "class", total, 0);
  if (!rc) rc = cnnb_outfile_add_f32(of, "score", total, 0);
  if (!rc) rc = cnnb_outfile_add_f32(of, "box", total, 4);
  if (!rc) rc = cnnb_outfile_add_i64(of, "offsets", N + 1, 0);
  if (!rc) rc = cnnb_outfile_add_i64(of, "image_size", N, 2);
  if (!rc && total) rc = cnnb_outfile_write_i64(of, "image", nr ? before : 0, (long)nr, img);
  if (!rc && total) rc = cnnb_outfile_write_i64(of, "class", nr ? before : 0, (long)nr, cls);
  if (!rc && total) rc = cnnb_outfile_write_f32(of, "score", nr ? before : 0, (long)nr, score);
  if (!rc && total) rc = cnnb_outfile_write_f32(of, "box", nr ? before : 0, (long)nr, box);
  if (!rc) rc = cnnb_outfile_write_i64(of, "offsets", lo, (long)nimg + last, offs);
  if (!rc) rc = cnnb_outfile_write_i64(of, "image_size", lo, (long)nimg, sizes);
  free(fb);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "class_names", cls_names);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "model_cfg", net->cfg.text);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "weights", weights);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "source", data);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "thresh", thresh_s);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "nms", nms_s);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "box_format", "x,y,w,h: centre and size in original pixels");
  if (!rc) {
    rc = cnnb_outfile_commit(of);
    of = NULL;
  }
  if (!rc) cnnb_chunks_cleanup(&d, work, k0, k1); /* complete: the saved chunks are no longer needed */
  if (!rc && d.rank == 0)
    printf("wrote %s: %lld boxes in %ld images (%lld computed, %lld resumed)\n", out, total, N, sums[1], sums[0]);
done:
  if (rc && rc != CNNB_EINTR) cnnb_job_fail(&d, "detect");
  cnnb_outfile_abort(of);
  free(rows.p);
  free(x);
  free(scratch);
  free(px);
  free(dets);
  free(counts);
  free(buf);
  free(cls_names);
  cnnb_imageset_close(set);
  if (net) cnnb_stem_remove(&stem, net);
  cnnb_net_free(net);
  return rc == CNNB_EINTR ? CNNB_EXIT_STOPPED : rc ? CNNB_EXIT_FAIL : CNNB_EXIT_OK;
}
