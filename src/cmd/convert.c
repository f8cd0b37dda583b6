/* cnn-batch convert: Darknet .weights <-> cnn-batch checkpoints, and seeded .weights files
 * (docs/CLI.md). One process does the work; other ranks only wait for the outcome. */
#include <stdio.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "cmd/job.h"
#include "cnnb/ckpt.h"
#include "cnnb/detect.h"
#include "cnnb/error.h"
#include "cnnb/rng.h"
#include "cnnb/tfjs.h"
#include "layers/heads.h"

/* A seeded network whose batch-norm statistics and affine terms are not the identity, so that
 * a comparison against another implementation exercises every array of the file. In the
 * convolution that feeds a detection head, gain multiplies the weights of the objectness and
 * class filters (larger raw outputs give more confident boxes), while the box-size filters are
 * damped (x 0.05) so that exp(tw), exp(th) stay near the anchors and boxes near image size
 * (x 0.5 for the offsets). Assumes 4 coordinates per box (Darknet's yolo and region default). */
static void seeded_init(cnnb_net *net, unsigned long long seed, float gain)
{
  cnnb_net_init_params(net, seed);
  for (int i = 0; i < net->n; i++) {
    cnnb_layer *l = &net->layers[i];
    cnnb_rng r;
    cnnb_rng_seed(&r, seed, 0xdc, (uint64_t)i, 1);
    cnnb_param *s = cnnb_layer_find_param(l, "scales"), *m = cnnb_layer_find_param(l, "rolling_mean"),
               *v = cnnb_layer_find_param(l, "rolling_variance"), *b = cnnb_layer_find_param(l, "biases");
    if (s && m && v && b)
      for (size_t k = 0; k < s->count; k++) {
        s->data[k] = 0.8f + 0.4f * cnnb_rng_uniform(&r);
        b->data[k] = 0.1f * cnnb_rng_normal(&r);
        m->data[k] = 0.05f * cnnb_rng_normal(&r);
        v->data[k] = 0.5f + cnnb_rng_uniform(&r);
      }
    else if (b)
      for (size_t k = 0; k < b->count; k++) b->data[k] = 0.1f * cnnb_rng_normal(&r);
    cnnb_param *w = cnnb_layer_find_param(l, "weights");
    int na = 0, nc = 0;
    if (!w || i + 1 >= net->n ||
        !(cnnb_yolo_info(&net->layers[i + 1], &na, &nc) || cnnb_region_info(&net->layers[i + 1], &na, &nc)))
      continue;
    /* filter f feeds entry f % (nc + 5) of its anchor: 0-3 the box, 4 objectness, then classes */
    const size_t per = w->count / (size_t)w->dims[0];
    for (int f = 0; f < w->dims[0]; f++) {
      const int e = f % (nc + 5);
      const float g = e >= 4 ? gain : e >= 2 ? 0.05f : 0.5f;
      for (size_t k = 0; k < per; k++) w->data[(size_t)f * per + k] *= g;
    }
  }
}

/* --from tfjs: one process converts, the others wait for the outcome. */
static int cnnb_cmd_convert_from(const char *from, const char *model, const char *in, const char *out,
                                 const char *usage)
{
  if (strcmp(from, "tfjs")) {
    fprintf(stderr, "cnn-batch convert: --from %s: the only format is tfjs\n", from);
    return CNNB_EXIT_USAGE;
  }
  if (!model || !in || !out) {
    fprintf(stderr, "cnn-batch convert: --from tfjs needs MANIFEST.json, --model and -o\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  int rc = d.rank == 0 ? cnnb_tfjs_convert(in, model, out) : 0;
  rc = cnnb_dist_agree(&d, rc);
  if (rc) {
    cnnb_job_fail(&d, "convert");
    return CNNB_EXIT_FAIL;
  }
  if (d.rank == 0) printf("wrote %s (checkpoint of %s from TF.js %s)\n", out, model, in);
  return CNNB_EXIT_OK;
}

int cnnb_cmd_convert(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch convert MODEL.cfg IN -o OUT\n"
    "       cnn-batch convert --init MODEL.cfg [--seed S] [--gain G] -o OUT.weights\n"
    "IN a Darknet .weights file gives a cnn-batch checkpoint; IN a checkpoint (HDF5) gives a\n"
    "Darknet .weights file (version 0.2, 64-bit images seen). --init writes a seeded\n"
    "initialisation (batch-norm statistics randomised too; --gain scales the head's objectness\n"
    "and class weights, default 1; its box-size weights are damped).\n"
    "       cnn-batch convert --from tfjs MANIFEST.json --model MODEL.cfg -o OUT.h5\n"
    "reads a TF.js weights manifest and its shards into a checkpoint of MODEL.cfg (docs/MODELS.md).";
  const char *out = NULL, *seed_s = "1", *gain_s = "1", *from = NULL, *model = NULL;
  int init = 0;
  cnnb_opt opts[] = {{"output", "FILE", "file to write (-o)", &out, NULL},
                     {"init", NULL, "write a seeded initialisation of MODEL.cfg", NULL, &init},
                     {"seed", "S", "seed for --init (default 1)", &seed_s, NULL},
                     {"gain", "G", "scale of the head's objectness and class weights (default 1)", &gain_s, NULL},
                     {"from", "FORMAT", "read another framework's weights: tfjs", &from, NULL},
                     {"model", "MODEL.cfg", "the model the --from weights fill", &model, NULL},
                     {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[2];
  int npos, prc = cnnb_args_parse(argc, argv, usage, opts, pos, 2, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  if (from) return cnnb_cmd_convert_from(from, model, npos == 1 ? pos[0] : NULL, out, usage);
  if (!out || npos != (init ? 1 : 2)) {
    fprintf(stderr, "cnn-batch convert: needs MODEL.cfg%s and -o\n%s\n", init ? "" : ", IN", usage);
    return CNNB_EXIT_USAGE;
  }
  long seed;
  double gain;
  if (cnnb_arg_long("convert", "seed", seed_s, 0, 1L << 62, &seed) ||
      cnnb_arg_float("convert", "gain", gain_s, 0, 1e6, &gain))
    return CNNB_EXIT_USAGE;
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  int rc = 0;
  const char *what = "";
  if (d.rank == 0) {
    cnnb_net *net = NULL;
    cnnb_net_opts no = cnnb_net_opts_default();
    no.max_batch = 1;
    rc = cnnb_net_load(&net, pos[0], &no);
    if (!rc && init) {
      seeded_init(net, (unsigned long long)seed, (float)gain);
      rc = cnnb_darknet_weights_save(net, out, 0);
      what = "seeded Darknet weights";
    } else if (!rc && cnnb_weights_is_ckpt(pos[1]) > 0 /* unreadable: the .weights reader names it */) {
      cnnb_ckpt_meta m;
      memset(&m, 0, sizeof m);
      rc = cnnb_ckpt_load(pos[1], net, NULL, &m);
      if (!rc) rc = cnnb_darknet_weights_save(net, out, m.images_seen);
      what = "Darknet weights";
    } else if (!rc) {
      long long seen = 0;
      rc = cnnb_darknet_weights_load(net, pos[1], &seen);
      cnnb_ckpt_meta m;
      memset(&m, 0, sizeof m);
      m.images_seen = seen;
      m.world_size = 1;
      if (!rc) rc = cnnb_ckpt_save(out, net, NULL, &m);
      what = "checkpoint";
    }
    cnnb_net_free(net);
  }
  rc = cnnb_dist_agree(&d, rc);
  if (rc) {
    cnnb_job_fail(&d, "convert");
    return CNNB_EXIT_FAIL;
  }
  if (d.rank == 0) printf("wrote %s (%s)\n", out, what);
  return CNNB_EXIT_OK;
}
