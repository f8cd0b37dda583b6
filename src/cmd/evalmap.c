/* cnn-batch eval --map: mean average precision of a detection network over an image set with
 * truth boxes, computed in one command (detect + map without the intermediate file): every rank
 * letterboxes and detects its contiguous range of images, rank 0 gathers the boxes and computes
 * the all-point interpolated AP per class with the `map` command's code (cnnb_detect_map). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/boxcmd.h"
#include "cmd/cmd.h"
#include "cmd/job.h"
#include "cnnb/boxdata.h"
#include "cnnb/ckpt.h"
#include "cnnb/detect.h"
#include "cnnb/error.h"

int cnnb_cmd_eval_map(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch eval MODEL.cfg --weights W --data IMGS.h5 --map [--thresh 0.005] [--nms 0.45] [--iou 0.5]\n"
    "Mean average precision of a [yolo]/[region] network over an image set with truth boxes (/truth,\n"
    "/truth_offsets): boxes as detect makes them (Darknet's letterbox, decoding, per-class NMS), then\n"
    "per class the all-point interpolated AP at IoU >= --iou, and 'mAP@0.5: 0.xxxx' over the classes\n"
    "with truths. W: a cnn-batch checkpoint or Darknet .weights.";
  const char *weights = NULL, *data = NULL, *thresh_s = "0.005", *nms_s = "0.45", *iou_s = "0.5", *batch_s = "16",
             *limit_s = "0";
  int flag_map = 0;
  cnnb_opt opts[] = {{"weights", "W", "checkpoint written by train, or Darknet .weights", &weights, NULL},
                     {"data", "FILE", "image set with /truth and /truth_offsets", &data, NULL},
                     {"map", NULL, "mean average precision of a detection network", NULL, &flag_map},
                     {"thresh", "T", "keep boxes with objectness x class probability > T (default 0.005)", &thresh_s,
                      NULL},
                     {"nms", "T", "suppress same-class boxes with IoU > T (default 0.45; 0: none)", &nms_s, NULL},
                     {"iou", "T", "IoU a detection needs with a truth (default 0.5)", &iou_s, NULL},
                     {"batch", "B", "images per forward on each rank (default 16)", &batch_s, NULL},
                     {"limit", "N", "only the first N images", &limit_s, NULL},
                     {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[1];
  int npos, prc = cnnb_args_parse(argc, argv, usage, opts, pos, 1, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  if (npos != 1 || !weights || !data) {
    fprintf(stderr, "cnn-batch eval --map: needs MODEL.cfg, --weights and --data\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  double thresh, nms, iou;
  long B, limit;
  if (cnnb_arg_float("eval", "thresh", thresh_s, 0, 1, &thresh) || cnnb_arg_float("eval", "nms", nms_s, 0, 1, &nms) ||
      cnnb_arg_float("eval", "iou", iou_s, 0, 1, &iou) || cnnb_arg_long("eval", "batch", batch_s, 1, 4096, &B) ||
      cnnb_arg_long("eval", "limit", limit_s, 0, 1L << 40, &limit))
    return CNNB_EXIT_USAGE;
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  cnnb_net *net = NULL;
  cnnb_boxdata *bd = NULL;
  double *ap = NULL, map = NAN;
  cnnb_net_opts no = cnnb_net_opts_default();
  no.max_batch = (int)B;
  no.quiet = d.rank != 0;
  int rc = cnnb_net_load(&net, pos[0], &no);
  if (!rc && !cnnb_detect_has_heads(net))
    rc = cnnb_error(CNNB_ECFG, "%s: no [yolo] or [region] layer: eval --map needs a detection model", pos[0]);
  if (!rc) rc = cnnb_weights_load(net, weights);
  if (!rc) rc = cnnb_boxdata_open(&bd, data, net);
  const int K = rc ? 0 : cnnb_detect_num_classes(net);
  if (!rc && !(ap = malloc(sizeof *ap * (size_t)K))) rc = cnnb_error(CNNB_ENOMEM, "out of memory");
  rc = cnnb_dist_agree(&d, rc);
  if (!rc) rc = cnnb_boxdata_map(&d, net, bd, limit, (float)thresh, (float)nms, (float)iou, ap, &map);
  if (!rc && d.rank == 0) {
    long n = cnnb_boxdata_count(bd);
    if (limit && limit < n) n = limit;
    for (int k = 0; k < K; k++)
      if (!isnan(ap[k])) printf("class %d AP: %.4f\n", k, ap[k]);
    printf("images: %ld\nmAP@%.2g: %.4f\n", n, iou, map);
  }
  if (rc) cnnb_job_fail(&d, "eval");
  free(ap);
  cnnb_boxdata_close(bd);
  cnnb_net_free(net);
  return rc ? CNNB_EXIT_FAIL : CNNB_EXIT_OK;
}
