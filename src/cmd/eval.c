/* cnn-batch eval and predict: a checkpoint over a dataset, rows split over ranks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/boxcmd.h"
#include "cmd/cmd.h"
#include "cmd/imgcmd.h"
#include "cmd/job.h"
#include "cnnb/ckpt.h"
#include "cnnb/error.h"

typedef struct infer_args {
  const char *model, *weights, *data, *out;
  long batch, limit;
  cnnb_data_args da;
} infer_args;

static int parse(int argc, char **argv, const char *usage, int want_out, infer_args *a)
{
  const char *batch = "128", *limit = "0";
  memset(a, 0, sizeof *a);
  cnnb_opt opts[] = {
    {"weights", "CKPT", "checkpoint written by train (or convert)", &a->weights, NULL},
    {"data", "FILE", "images (and labels) in HDF5", &a->data, NULL},
    {"output", "FILE", "output HDF5 file (-o)", &a->out, NULL},
    {"batch", "B", "images per forward on each rank (default 128)", &batch, NULL},
    {"limit", "N", "only the first N images", &limit, NULL},
    CNNB_DATA_OPTS(a->da),
    {"labels-name", "NAME", "labels dataset (default labels)", &a->da.labels_name, NULL},
    {NULL, NULL, NULL, NULL, NULL}};
  if (!want_out) opts[2].help = "(not used)";
  const char *pos[1];
  int npos, rc = cnnb_args_parse(argc, argv, usage, opts, pos, 1, &npos);
  if (rc) return rc;
  if (npos != 1 || !a->weights || !a->data || (want_out && !a->out)) {
    fprintf(stderr, "cnn-batch %s: needs MODEL.cfg, --weights and --data%s\n%s\n", argv[0], want_out ? " and -o" : "",
            usage);
    return -1;
  }
  a->model = pos[0];
  if (cnnb_arg_long(argv[0], "batch", batch, 1, 1 << 20, &a->batch) ||
      cnnb_arg_long(argv[0], "limit", limit, 0, 1L << 40, &a->limit))
    return -1;
  return 0;
}

/* Model, weights and data, with every check; collective. */
static int open_all(const cnnb_dist *d, const infer_args *a, int need_labels, cnnb_net **net, cnnb_dataset **ds)
{
  cnnb_net_opts no = cnnb_net_opts_default();
  no.max_batch = (int)a->batch;
  no.quiet = d->rank != 0;
  int rc = cnnb_net_load(net, a->model, &no);
  if (!rc) rc = cnnb_ckpt_load(a->weights, *net, NULL, NULL);
  if (!rc) rc = cnnb_job_open_data(ds, a->data, *net, &a->da, need_labels);
  return cnnb_dist_agree(d, rc);
}

int cnnb_cmd_eval(int argc, char **argv)
{
  static const char *usage = "usage: cnn-batch eval MODEL.cfg --weights CKPT.h5 --data TEST.h5\n"
                             "Prints the mean cross-entropy loss and a line 'accuracy: 0.xxxx'.\n"
                             "With --map (detection models): mAP@0.5, see cnn-batch eval --map --help.";
  for (int i = 1; i < argc; i++) /* detection: its own options and loop (src/cmd/evalmap.c) */
    if (!strcmp(argv[i], "--map")) return cnnb_cmd_eval_map(argc, argv);
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  infer_args a;
  int prc = parse(argc, argv, usage, 0, &a);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  cnnb_net *net = NULL;
  cnnb_dataset *ds = NULL;
  double loss = 0, acc = 0;
  int rc = open_all(&d, &a, 1, &net, &ds);
  if (!rc) rc = cnnb_job_evaluate(&d, net, ds, a.limit, &loss, &acc);
  if (!rc && d.rank == 0) {
    long n = cnnb_dataset_count(ds);
    if (a.limit && a.limit < n) n = a.limit;
    printf("images: %ld\nloss: %.4f\naccuracy: %.4f\n", n, loss, acc);
  }
  if (rc) cnnb_job_fail(&d, "eval");
  cnnb_dataset_close(ds);
  cnnb_net_free(net);
  return rc ? CNNB_EXIT_FAIL : CNNB_EXIT_OK;
}

int cnnb_cmd_predict(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch predict MODEL.cfg --weights CKPT.h5 --data IN.h5 -o OUT.h5\n"
    "Writes /outputs (N x K float32, the last layer's values) and /indices (N int64, the input rows),\n"
    "every rank writing its rows into the same file (parallel HDF5).\n"
    "--sliding (score maps over larger images) and --layer N (one layer's activations): see\n"
    "cnn-batch predict --sliding --help.";
  /* Grid outputs (N x H x W x C) have their own options and loop: src/cmd/sliding.c. */
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--sliding") || !strncmp(argv[i], "--layer", 7)) return cnnb_cmd_predict_grid(argc, argv);
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  infer_args a;
  int prc = parse(argc, argv, usage, 1, &a);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  cnnb_net *net = NULL;
  cnnb_dataset *ds = NULL;
  cnnb_outfile *of = NULL;
  float *x = NULL;
  long *rows = NULL;
  long long *idx = NULL;
  int rc = open_all(&d, &a, 0, &net, &ds);
  if (rc) goto done;
  long n = cnnb_dataset_count(ds);
  if (a.limit && a.limit < n) n = a.limit;
  int K = cnnb_job_num_outputs(net), B = (int)a.batch;
  long lo, hi;
  cnnb_dist_slice(&d, n, &lo, &hi);
  rc = cnnb_outfile_create(&of, a.out, d.comm);
  if (!rc) rc = cnnb_outfile_add_f32(of, "outputs", n, K);
  if (!rc) rc = cnnb_outfile_add_i64(of, "indices", n, 0);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "model_cfg", net->cfg.text);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "weights", a.weights);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "source", a.data);
  if (rc) goto done;
  x = malloc((size_t)B * cnnb_shape_size(net->in) * sizeof *x);
  rows = malloc((size_t)B * sizeof *rows);
  idx = malloc((size_t)B * sizeof *idx);
  int lrc = !x || !rows || !idx ? cnnb_error(CNNB_ENOMEM, "out of memory") : 0;
  /* Every rank makes the same number of collective writes, some of 0 rows. */
  long my = hi - lo, most = (n + d.size - 1) / d.size;
  for (long k = 0; k < most && !rc; k += B) {
    long r0 = lo + k, m = k < my ? (my - k < B ? my - k : B) : 0;
    const float *y = NULL;
    if (!lrc && m > 0) {
      for (long i = 0; i < m; i++) rows[i] = r0 + i, idx[i] = r0 + i;
      lrc = cnnb_dataset_read(ds, rows, (int)m, x, NULL);
      if (!lrc) y = cnnb_net_forward(net, x, (int)m);
    }
    rc = cnnb_dist_agree(&d, lrc);
    if (rc) break;
    rc = cnnb_outfile_write_f32(of, "outputs", m ? r0 : 0, m, y);
    if (!rc) rc = cnnb_outfile_write_i64(of, "indices", m ? r0 : 0, m, idx);
  }
  if (!rc) {
    rc = cnnb_outfile_commit(of);
    of = NULL;
  }
  if (!rc && d.rank == 0) printf("wrote %s: %ld x %d outputs\n", a.out, n, K);
done:
  if (rc) cnnb_job_fail(&d, "predict");
  cnnb_outfile_abort(of);
  free(x);
  free(rows);
  free(idx);
  cnnb_dataset_close(ds);
  cnnb_net_free(net);
  return rc ? CNNB_EXIT_FAIL : CNNB_EXIT_OK;
}
