/* cnn-batch predict --sliding (a classifier's score map over larger images, its connected layers
 * run as convolutions) and predict --layer N (one layer's activations), rows split over ranks,
 * every rank writing its rows into one N-dimensional HDF5 file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "cmd/imgcmd.h"
#include "cmd/job.h"
#include "cnnb/ckpt.h"
#include "cnnb/data.h"
#include "cnnb/error.h"
#include "cnnb/sliding.h"
#include "cnnb/style.h"

int cnnb_cmd_predict_grid(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch predict MODEL.cfg --weights CKPT.h5 --data IN.h5 --sliding -o OUT.h5 [--height H --width W]\n"
    "       cnn-batch predict MODEL.cfg --weights CKPT.h5 --data IN.h5 --layer N|NAME -o OUT.h5 [--height H --width W]\n"
    "--sliding: the classifier at every window position of larger images, its connected layers run as\n"
    "convolutions: /scores (N x H' x W' x K float32). --layer: that layer's output, /activations\n"
    "(N x C x H x W float32, the network's layout).";
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  const char *weights = NULL, *data = NULL, *out = NULL, *layer_s = NULL, *hs = "0", *ws = "0", *batch_s = "16",
             *limit_s = "0";
  int sliding = 0, crops = 0;
  cnnb_data_args da;
  memset(&da, 0, sizeof da);
  cnnb_opt opts[] = {
    {"weights", "CKPT", "checkpoint written by train (or converted)", &weights, NULL},
    {"data", "FILE", "images in HDF5", &data, NULL},
    {"output", "FILE", "output HDF5 file (-o)", &out, NULL},
    {"sliding", NULL, "score map of a classifier over larger images (connected layers as convolutions)", NULL, &sliding},
    {"crops", NULL, "with --sliding: run the classifier on every window one by one instead (reference, slow)", NULL, &crops},
    {"layer", "N|NAME", "write this layer's activations (index, or convB_K: K-th convolution of block B)", &layer_s, NULL},
    {"height", "H", "input height (default: the images' for --sliding, the model's for --layer)", &hs, NULL},
    {"width", "W", "input width (same defaults)", &ws, NULL},
    {"batch", "B", "images per forward on each rank (default 16)", &batch_s, NULL},
    {"limit", "N", "only the first N images", &limit_s, NULL},
    CNNB_DATA_OPTS(da),
    {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[1];
  int npos;
  int prc = cnnb_args_parse(argc, argv, usage, opts, pos, 1, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  long H, W, B, limit;
  if (npos != 1 || !weights || !data || !out || sliding == !!layer_s) {
    fprintf(stderr, "cnn-batch predict: needs MODEL.cfg, --weights, --data, -o and one of --sliding, --layer\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  if (cnnb_arg_long("predict", "height", hs, 0, 1 << 16, &H) || cnnb_arg_long("predict", "width", ws, 0, 1 << 16, &W) ||
      cnnb_arg_long("predict", "batch", batch_s, 1, 1 << 16, &B) ||
      cnnb_arg_long("predict", "limit", limit_s, 0, 1L << 40, &limit))
    return CNNB_EXIT_USAGE;

  cnnb_net *net = NULL;
  cnnb_sliding sw;
  memset(&sw, 0, sizeof sw);
  cnnb_dataset *ds = NULL;
  cnnb_outfile *of = NULL;
  float *x = NULL, *y = NULL, *cropbuf = NULL;
  int layer = -1, rc = 0;
  cnnb_net_opts no = cnnb_net_opts_default();
  no.max_batch = (int)B;
  no.quiet = d.rank != 0;
  if (sliding) {
    if (!H || !W) { /* the images' own size */
      cnnb_dataset_opts o;
      cnnb_dataset_opts_init(&o);
      o.images_name = da.images_name;
      o.labels_required = 0;
      o.cache_mb = -1;
      int h, w, c;
      rc = cnnb_dataset_open(&ds, data, &o);
      if (!rc) {
        cnnb_dataset_shape(ds, &h, &w, &c);
        if (!H) H = h;
        if (!W) W = w;
      }
      cnnb_dataset_close(ds);
      ds = NULL;
    }
    /* --crops: the classifier takes B windows per forward and the sliding network is not run */
    if (!rc) rc = cnnb_net_load(&net, pos[0], &no);
    if (!rc) { /* a classifier that cannot run convolutionally is refused before reading weights */
      char *text = NULL;
      int sm;
      float t;
      rc = cnnb_convolutionalize_cfg(net, (int)H, (int)W, &text, &sm, &t);
      free(text);
    }
    if (!rc) rc = cnnb_ckpt_load(weights, net, NULL, NULL);
    if (!rc) rc = cnnb_sliding_init(&sw, net, (int)H, (int)W, crops ? 1 : (int)B);
    if (!rc) rc = cnnb_job_open_data(&ds, data, sw.net, &da, 0);
  } else {
    no.h = (int)H, no.w = (int)W;
    rc = cnnb_net_load(&net, pos[0], &no);
    if (!rc) rc = cnnb_ckpt_load(weights, net, NULL, NULL);
    if (!rc) rc = cnnb_net_find_layer(net, layer_s, &layer);
    if (!rc) rc = cnnb_job_open_data(&ds, data, net, &da, 0);
  }
  rc = cnnb_dist_agree(&d, rc);
  if (rc) goto done;
  if (sliding && d.rank == 0) {
    if (sw.padded)
      fprintf(stderr, "cnn-batch predict: warning: %s pads inside its layers: score-map positions whose windows touch "
              "the borders of a window differ from classifying that crop alone\n", pos[0]);
    if (sw.uncovered)
      fprintf(stderr, "cnn-batch predict: warning: (%ld - %d) x (%ld - %d) is not a multiple of the window stride %d: "
              "the last rows/columns of pixels start no window\n", H, sw.window_h, W, sw.window_w, sw.stride);
  }
  long n = cnnb_dataset_count(ds);
  if (limit && limit < n) n = limit;
  const cnnb_net *in_net = sliding ? sw.net : net;
  const size_t in_sz = cnnb_shape_size(in_net->in);
  cnnb_shape os = sliding ? (cnnb_shape){sw.k, sw.oh, sw.ow} : net->layers[layer].out;
  const size_t out_sz = cnnb_shape_size(os);
  const char *dname = sliding ? "scores" : "activations";
  int dims[3];
  if (sliding) dims[0] = sw.oh, dims[1] = sw.ow, dims[2] = sw.k;
  else dims[0] = os.c, dims[1] = os.h, dims[2] = os.w;
  long lo, hi;
  cnnb_dist_slice(&d, n, &lo, &hi);
  rc = cnnb_outfile_create(&of, out, d.comm);
  if (!rc) rc = cnnb_outfile_add(of, dname, CNNB_OUT_F32, n, 3, dims);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "model_cfg", net->cfg.text);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "weights", weights);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "source", data);
  if (!rc && sliding) {
    rc = cnnb_outfile_attr_i64(of, "scores", "window_height", sw.window_h);
    if (!rc) rc = cnnb_outfile_attr_i64(of, "scores", "window_width", sw.window_w);
    if (!rc) rc = cnnb_outfile_attr_i64(of, "scores", "stride", sw.stride);
    if (!rc) rc = cnnb_outfile_attr_str(of, "scores", "method", crops ? "crops" : "convolutional");
  } else if (!rc) {
    rc = cnnb_outfile_attr_i64(of, "activations", "layer", layer);
    if (!rc) rc = cnnb_outfile_attr_str(of, "activations", "kind", cnnb_layer_kind(&net->layers[layer]));
  }
  if (rc) goto done;
  x = malloc((size_t)B * in_sz * sizeof *x);
  y = malloc((size_t)B * out_sz * sizeof *y);
  cropbuf = crops ? malloc((size_t)B * cnnb_shape_size(net->in) * sizeof *cropbuf) : NULL;
  int lrc = !x || !y || (crops && !cropbuf) ? cnnb_error(CNNB_ENOMEM, "out of memory for a batch of %ld images", B) : 0;
  long *rows = malloc((size_t)B * sizeof *rows);
  if (!rows) lrc = cnnb_error(CNNB_ENOMEM, "out of memory");
  double t0 = cnnb_now();
  long my = hi - lo, most = (n + d.size - 1) / d.size;
  for (long s = 0; s < most && !rc; s += B) {
    long r0 = lo + s, m = s < my ? (my - s < B ? my - s : B) : 0;
    if (!lrc && m > 0) {
      for (long i = 0; i < m; i++) rows[i] = r0 + i;
      lrc = cnnb_dataset_read(ds, rows, (int)m, x, NULL);
    }
    if (!lrc && m > 0) {
      if (!sliding) {
        cnnb_net_forward(net, x, (int)m);
        memcpy(y, net->layers[layer].output, (size_t)m * out_sz * sizeof *y);
      } else if (crops) {
        cnnb_sliding_crops(net, &sw, x, (int)m, cropbuf, y);
      } else {
        cnnb_sliding_forward(&sw, x, (int)m, y);
      }
    }
    rc = cnnb_dist_agree(&d, lrc);
    if (!rc) rc = cnnb_outfile_write(of, dname, m ? r0 : 0, m, y);
  }
  double secs = cnnb_now() - t0;
  free(rows);
  if (!rc) {
    rc = cnnb_outfile_commit(of);
    of = NULL;
  }
  if (!rc && d.rank == 0) {
    if (sliding)
      printf("wrote %s: %ld score maps of %dx%dx%d (%dx%d windows, stride %d, %s) in %.3f s\n", out, n, sw.oh, sw.ow,
             sw.k, sw.window_h, sw.window_w, sw.stride, crops ? "crop by crop" : "convolutional", secs);
    else
      printf("wrote %s: layer %d [%s] activations %ld x %d x %d x %d\n", out, layer,
             cnnb_layer_kind(&net->layers[layer]), n, os.c, os.h, os.w);
  }
done:
  if (rc) cnnb_job_fail(&d, "predict");
  cnnb_outfile_abort(of);
  free(x);
  free(y);
  free(cropbuf);
  cnnb_dataset_close(ds);
  cnnb_sliding_free(&sw);
  cnnb_net_free(net);
  return rc ? CNNB_EXIT_FAIL : CNNB_EXIT_OK;
}
