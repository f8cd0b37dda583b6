/* cnn-batch style: neural style transfer of every content image of a dataset towards one style
 * image, each rank stylising its share of the images, results written by all ranks into one
 * HDF5 file (and PNG files on request). Settings: a small INI file (--config) and/or flags. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "cmd/imgcmd.h"
#include "cmd/job.h"
#include "cnnb/cfg.h"
#include "cnnb/ckpt.h"
#include "cnnb/data.h"
#include "cnnb/error.h"
#include "cnnb/image.h"
#include "cnnb/style.h"

/* Settings as text, from the file then the flags, resolved against the model later. */
typedef struct style_settings {
  const char *content_layer, *style_layers, *style_weights, *alpha, *beta, *steps, *lr, *noise, *seed, *optimizer, *history;
} style_settings;

static int read_config(const char *path, cnnb_cfg *cfg, style_settings *s)
{
  int rc = cnnb_cfg_load(cfg, path);
  if (rc) return rc;
  cnnb_cfg_section *sec = NULL;
  for (int i = 0; i < cfg->nsec; i++) {
    if (strcmp(cfg->sec[i].name, "style"))
      return cnnb_error(CNNB_ECFG, "%s:%d: unknown section [%s] (a style file has one [style] section)", path,
                        cfg->sec[i].line, cfg->sec[i].name);
    sec = &cfg->sec[i];
  }
  if (!sec) return cnnb_error(CNNB_ECFG, "%s: no [style] section", path);
  const char **dst[] = {&s->content_layer, &s->style_layers, &s->style_weights, &s->alpha, &s->beta,
                        &s->steps, &s->lr, &s->noise, &s->seed, &s->optimizer, &s->history};
  static const char *const keys[] = {"content_layer", "style_layers", "style_weights", "alpha", "beta",
                                     "steps", "lr", "noise", "seed", "optimizer", "history"};
  for (int i = 0; i < sec->nkv; i++) {
    size_t k = 0;
    while (k < sizeof keys / sizeof *keys && strcmp(keys[k], sec->kv[i].key)) k++;
    if (k == sizeof keys / sizeof *keys)
      return cnnb_error(CNNB_ECFG, "%s:%d: unknown key '%s' in [style] (known: content_layer, style_layers, "
                        "style_weights, alpha, beta, steps, lr, noise, seed, optimizer, history)", path, sec->kv[i].line,
                        sec->kv[i].key);
    if (!*dst[k]) *dst[k] = sec->kv[i].value; /* flags win over the file */
  }
  return 0;
}

static int parse_num(const char *what, const char *s, double lo, double hi, double *out)
{
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end || !(v >= lo && v <= hi))
    return cnnb_error(CNNB_EINVAL, "style setting %s = '%s': expected a number in [%g, %g]", what, s, lo, hi);
  *out = v;
  return 0;
}

/* Settings -> options, layers looked up in the model. */
static int resolve(const style_settings *s, const cnnb_net *net, cnnb_style_opts *o)
{
  cnnb_style_opts_init(o);
  int rc = cnnb_net_find_layer(net, s->content_layer ? s->content_layer : "conv4_2", &o->content_layer);
  if (rc) return cnnb_error_prefix(rc, "content layer: ");
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", s->style_layers ? s->style_layers : "conv1_1,conv2_1,conv3_1,conv4_1,conv5_1");
  for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
    if (o->nstyle == CNNB_STYLE_MAX_LAYERS) return cnnb_error(CNNB_EINVAL, "more than %d style layers", CNNB_STYLE_MAX_LAYERS);
    if ((rc = cnnb_net_find_layer(net, t, &o->style_layers[o->nstyle++]))) return cnnb_error_prefix(rc, "style layer: ");
  }
  if (!o->nstyle) return cnnb_error(CNNB_EINVAL, "no style layers");
  for (int i = 0; i < o->nstyle; i++) o->style_weights[i] = 1.f / (float)o->nstyle;
  if (s->style_weights) {
    snprintf(buf, sizeof buf, "%s", s->style_weights);
    int n = 0;
    double v = 0;
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
      if (n == o->nstyle) return cnnb_error(CNNB_EINVAL, "more style weights than the %d style layers", o->nstyle);
      if ((rc = parse_num("style_weights", t, 0, 1e30, &v))) return rc;
      o->style_weights[n++] = (float)v;
    }
    if (n != o->nstyle) return cnnb_error(CNNB_EINVAL, "%d style weights for %d style layers", n, o->nstyle);
  }
  double v = 0;
  if (s->alpha && !(rc = parse_num("alpha", s->alpha, 0, 1e30, &v))) o->alpha = (float)v;
  if (!rc && s->beta && !(rc = parse_num("beta", s->beta, 0, 1e30, &v))) o->beta = (float)v;
  if (!rc && s->steps && !(rc = parse_num("steps", s->steps, 0, 1e7, &v))) o->steps = (int)v;
  if (!rc && s->lr && !(rc = parse_num("lr", s->lr, 1e-12, 1e6, &v))) o->lr = (float)v;
  if (!rc && s->noise && !(rc = parse_num("noise", s->noise, 0, 1e3, &v))) o->noise = (float)v;
  if (!rc && s->seed && !(rc = parse_num("seed", s->seed, 0, 9e15, &v))) o->seed = (unsigned long long)v;
  if (!rc && s->history && !(rc = parse_num("history", s->history, 1, 1000, &v))) o->history = (int)v;
  if (!rc && s->optimizer) {
    if (!strcmp(s->optimizer, "adam")) o->optimizer = CNNB_STYLE_ADAM;
    else if (!strcmp(s->optimizer, "lbfgs")) o->optimizer = CNNB_STYLE_LBFGS;
    else rc = cnnb_error(CNNB_EINVAL, "style setting optimizer = '%s': expected adam or lbfgs", s->optimizer);
  }
  return rc;
}

int cnnb_cmd_style(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch style MODEL.cfg --weights CKPT.h5 --content IMGS.h5 --style STYLE.jpg -o OUT.h5\n"
    "                       [--png DIR] [--config STYLE.cfg] [--optimizer adam|lbfgs] [--steps N] [--lr X] ...\n"
    "Generates, for every content image C, G minimising alpha J_content(C,G) + beta J_style(S,G) by Adam or\n"
    "L-BFGS on the image; writes /images (N x H x W x C uint8) and /cost (N x 2: J at the start and the end).";
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  const char *weights = NULL, *content = NULL, *style = NULL, *out = NULL, *png = NULL, *config = NULL,
             *limit_s = "0";
  style_settings ss;
  memset(&ss, 0, sizeof ss);
  cnnb_data_args da;
  memset(&da, 0, sizeof da);
  cnnb_opt opts[] = {
    {"weights", "CKPT", "checkpoint of the model (e.g. converted with tools/vgg19_from_torch.py)", &weights, NULL},
    {"content", "FILE", "content images in HDF5 (a dataset file)", &content, NULL},
    {"style", "JPEG", "style image, resized to the content size (bilinear)", &style, NULL},
    {"output", "FILE", "output HDF5 file (-o)", &out, NULL},
    {"png", "DIR", "also write DIR/NNNNNN.png per image", &png, NULL},
    {"config", "FILE", "settings file: a [style] section with the keys below", &config, NULL},
    {"content-layer", "L", "layer of the content cost, index or convB_K (default conv4_2)", &ss.content_layer, NULL},
    {"style-layers", "L,L..", "layers of the style cost (default conv1_1,conv2_1,conv3_1,conv4_1,conv5_1)", &ss.style_layers, NULL},
    {"style-weights", "W,W..", "lambda per style layer (default equal, summing to 1)", &ss.style_weights, NULL},
    {"alpha", "A", "weight of the content cost (default 10)", &ss.alpha, NULL},
    {"beta", "B", "weight of the style cost (default 40)", &ss.beta, NULL},
    {"optimizer", "NAME", "adam or lbfgs (default adam)", &ss.optimizer, NULL},
    {"steps", "N", "iterations per image (default 200); an L-BFGS one may evaluate J up to 20 times", &ss.steps, NULL},
    {"lr", "X", "Adam step size in network-input units; L-BFGS: the largest pixel change of its first step (default 0.02)", &ss.lr, NULL},
    {"history", "M", "L-BFGS curvature pairs kept (default 10)", &ss.history, NULL},
    {"noise", "X", "G starts as C + uniform noise of this amplitude on the [0,1] pixel scale (default 0.1)", &ss.noise, NULL},
    {"seed", "S", "seeds the noise (per image: seed, row)", &ss.seed, NULL},
    {"limit", "N", "only the first N images", &limit_s, NULL},
    CNNB_DATA_OPTS(da),
    {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[1];
  int npos;
  int prc = cnnb_args_parse(argc, argv, usage, opts, pos, 1, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  long limit;
  if (npos != 1 || !weights || !content || !style || !out) {
    fprintf(stderr, "cnn-batch style: needs MODEL.cfg, --weights, --content, --style and -o\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  if (cnnb_arg_long("style", "limit", limit_s, 0, 1L << 40, &limit)) return CNNB_EXIT_USAGE;

  cnnb_cfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cnnb_net *net = NULL;
  cnnb_dataset *ds = NULL;
  cnnb_outfile *of = NULL;
  cnnb_style st;
  memset(&st, 0, sizeof st);
  cnnb_style_opts so;
  float *x = NULL, *g = NULL, *sx = NULL;
  unsigned char *u8 = NULL;
  int h = 0, w = 0, c = 0;
  int rc = config ? read_config(config, &cfg, &ss) : 0;
  if (!rc) { /* the content images' size sets the model's input size */
    cnnb_dataset_opts o;
    cnnb_dataset_opts_init(&o);
    o.images_name = da.images_name;
    o.labels_required = 0;
    o.cache_mb = -1;
    rc = cnnb_dataset_open(&ds, content, &o);
    if (!rc) cnnb_dataset_shape(ds, &h, &w, &c);
    cnnb_dataset_close(ds);
    ds = NULL;
  }
  if (!rc) {
    cnnb_net_opts no = cnnb_net_opts_default();
    no.max_batch = 1;
    no.input_grad = 1;
    no.h = h, no.w = w;
    no.quiet = d.rank != 0;
    rc = cnnb_net_load(&net, pos[0], &no);
  }
  if (!rc) rc = cnnb_ckpt_load(weights, net, NULL, NULL);
  if (!rc) rc = cnnb_job_open_data(&ds, content, net, &da, 0);
  if (!rc) rc = resolve(&ss, net, &so);
  float mean[4] = {0}, std[4] = {1, 1, 1, 1};
  size_t in_sz = 0;
  if (!rc) {
    cnnb_dataset_norm(ds, mean, std);
    for (int k = 0; k < c; k++) so.lo[k] = -mean[k] / std[k], so.hi[k] = (1 - mean[k]) / std[k];
    so.clamp = 1;
    in_sz = cnnb_shape_size(net->in);
    x = malloc(in_sz * sizeof *x);
    g = malloc(in_sz * sizeof *g);
    sx = malloc(in_sz * sizeof *sx);
    u8 = malloc(in_sz);
    if (!x || !g || !sx || !u8) rc = cnnb_error(CNNB_ENOMEM, "out of memory");
  }
  if (!rc) rc = cnnb_style_load_image(style, net, mean, std, sx);
  if (!rc) rc = cnnb_style_init(&st, net, &so);
  if (!rc) cnnb_style_set_style(&st, sx);
  rc = cnnb_dist_agree(&d, rc);
  if (!rc && png) rc = cnnb_cmd_make_png_dir(&d, png);
  if (rc) goto done;
  long n = cnnb_dataset_count(ds);
  if (limit && limit < n) n = limit;
  long lo, hi;
  cnnb_dist_slice(&d, n, &lo, &hi);
  char names[512] = "", nm[64];
  for (int i = 0; i < so.nstyle; i++) {
    cnnb_net_layer_name(net, so.style_layers[i], nm, sizeof nm);
    size_t l = strlen(names);
    snprintf(names + l, sizeof names - l, "%s%s:%g", i ? "," : "", nm, so.style_weights[i]);
  }
  cnnb_net_layer_name(net, so.content_layer, nm, sizeof nm);
  const char *opt_name = so.optimizer == CNNB_STYLE_LBFGS ? "lbfgs" : "adam";
  if (d.rank == 0) {
    printf("style %s: %ld images of %dx%dx%d on %d ranks, content %s, style %s, alpha %g beta %g, ", style, n, h, w, c,
           d.size, nm, names, so.alpha, so.beta);
    if (so.optimizer == CNNB_STYLE_LBFGS) printf("%d L-BFGS iterations history %d\n", so.steps, so.history);
    else printf("%d Adam steps lr %g\n", so.steps, so.lr);
  }
  int dims[3] = {h, w, c}, two = 2;
  rc = cnnb_outfile_create(&of, out, d.comm);
  if (!rc) rc = cnnb_outfile_add(of, "images", CNNB_OUT_U8, n, 3, dims);
  if (!rc) rc = cnnb_outfile_add(of, "cost", CNNB_OUT_F32, n, 1, &two);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "model_cfg", net->cfg.text);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "weights", weights);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "source", content);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "style_image", style);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "content_layer", nm);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "style_layers", names);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "alpha", so.alpha);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "beta", so.beta);
  if (!rc) rc = cnnb_outfile_attr_i64(of, "/", "steps", so.steps);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "lr", so.lr);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "optimizer", opt_name);
  if (!rc && so.optimizer == CNNB_STYLE_LBFGS) rc = cnnb_outfile_attr_i64(of, "/", "history", so.history);
  if (rc) goto done;
  /* One image per collective write; every rank makes the same number of writes. */
  long my = hi - lo, most = (n + d.size - 1) / d.size;
  int lrc = 0;
  double t0 = cnnb_now();
  for (long s = 0; s < most && !rc; s++) {
    long row = lo + s, m = s < my ? 1 : 0;
    float cost[2] = {0, 0};
    if (!lrc && m) {
      long r = row;
      lrc = cnnb_dataset_read(ds, &r, 1, x, NULL);
      double j0 = 0, j1 = 0;
      if (!lrc) {
        cnnb_style_set_content(&st, x);
        lrc = cnnb_style_run(&st, x, row, g, &j0, &j1, NULL);
      }
      if (!lrc) {
        cost[0] = (float)j0, cost[1] = (float)j1;
        for (int k = 0; k < c; k++)
          for (int p = 0; p < h * w; p++) {
            float v = (g[(size_t)k * h * w + p] * std[k] + mean[k]) * 255.f;
            u8[(size_t)p * c + k] = (unsigned char)lrintf(v < 0 ? 0 : v > 255 ? 255 : v);
          }
        if (png) {
          char path[4096];
          snprintf(path, sizeof path, "%s/%06ld.png", png, row);
          lrc = cnnb_png_write(path, u8, h, w, c);
        }
        if (d.rank == 0)
          printf("image %ld: J %.4g -> %.4g, %ld evaluations (%.1f s)\n", row, j0, j1, st.evals, cnnb_now() - t0),
            fflush(stdout);
      }
    }
    rc = cnnb_dist_agree(&d, lrc);
    if (!rc) rc = cnnb_outfile_write(of, "images", m ? row : 0, m, u8);
    if (!rc) rc = cnnb_outfile_write(of, "cost", m ? row : 0, m, cost);
  }
  if (!rc) {
    rc = cnnb_outfile_commit(of);
    of = NULL;
  }
  if (!rc && d.rank == 0) printf("wrote %s: %ld stylised images in %.1f s\n", out, n, cnnb_now() - t0);
done:
  if (rc) cnnb_job_fail(&d, "style");
  cnnb_outfile_abort(of);
  cnnb_style_free(&st);
  free(x);
  free(g);
  free(sx);
  free(u8);
  cnnb_dataset_close(ds);
  cnnb_net_free(net);
  cnnb_cfg_free(&cfg);
  return rc ? CNNB_EXIT_FAIL : CNNB_EXIT_OK;
}
