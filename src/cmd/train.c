/* cnn-batch train: data-parallel SGD over MPI ranks. Every rank holds a replica; rank 0 plans
 * each epoch's order and broadcasts it; each rank reads its slice of every global batch from
 * the HDF5 file, and gradients are averaged by allreduce (in buckets overlapped with backward
 * unless --allreduce=blocking). */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "cmd/job.h"
#include "cmd/train_metric.h"
#include "cnnb/augment.h"
#include "cnnb/boxdata.h"
#include "cnnb/ckpt.h"
#include "cnnb/error.h"
#include "cnnb/optim.h"

/* The next batch is read by a helper thread while the current one computes. HDF5 here is not
 * built thread-safe, so the main thread touches HDF5 only after prefetch_wait(). */
typedef struct prefetch {
  pthread_t th;
  int active;
  cnnb_dataset *ds;
  const long *rows;
  int m;
  float *x;
  int *lab;
  int rc;
  char msg[1024];
} prefetch;

static void *prefetch_run(void *arg)
{
  prefetch *p = arg;
  p->rc = cnnb_dataset_read(p->ds, p->rows, p->m, p->x, p->lab);
  if (p->rc) snprintf(p->msg, sizeof p->msg, "%s", cnnb_error_message()); /* messages are per thread */
  return NULL;
}

static void prefetch_start(prefetch *p, cnnb_dataset *ds, const long *rows, int m, float *x, int *lab)
{
  *p = (prefetch){.ds = ds, .rows = rows, .m = m, .x = x, .lab = lab};
  if (pthread_create(&p->th, NULL, prefetch_run, p) == 0)
    p->active = 1;
  else
    prefetch_run(p); /* no thread: read now */
}

/* Returns the read's status (0 when nothing was in flight). */
static int prefetch_wait(prefetch *p)
{
  if (!p->active) return 0;
  pthread_join(p->th, NULL);
  p->active = 0;
  if (p->rc) cnnb_error(p->rc, "%s", p->msg);
  return p->rc;
}

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { stop_requested = sig; }

static const char *usage =
  "usage: cnn-batch train MODEL.cfg --data TRAIN.h5 [--val TEST.h5] [--epochs N] [--batch B] -o CKPT.h5\n"
  "Trains MODEL data-parallel over the MPI ranks (mpirun -n K cnn-batch train ...): the global batch B\n"
  "is split over ranks and gradients are averaged by allreduce. SIGTERM or SIGUSR1 make every rank\n"
  "finish its step, write CKPT.h5 and exit with code 3 (requeue and --resume).\n"
  "A model whose last layer is [yolo] or [region] trains on an image set with truth boxes (/truth,\n"
  "/truth_offsets: tools/make_scenes), letterboxed as detect does; --val then reports mAP@0.5.";

typedef struct train_cfg {
  const char *model, *data, *val, *out, *resume, *metrics;
  const char *classes; /* --classes: metric learning on some labels (train_metric.h) */
  const char *weights; /* --weights: start from pretrained values (train_metric.h) */
  long freeze;         /* --freeze N, -1: [net] freeze */
  long epochs, batch, seed, ckpt_every, log_every, limit, max_steps;
  double lr;
  int optim, quiet, sync_bn, nesterov, flip;
  long crop_pad;
  cnnb_allreduce_mode allreduce;
  size_t bucket_bytes;
  cnnb_data_args da;
} train_cfg;

static int parse(int argc, char **argv, train_cfg *t)
{
  const char *epochs = "1", *batch = NULL, *lr = NULL, *seed = "1", *every = "0", *logev = "50", *limit = "0";
  const char *optim = "sgd", *allr = "overlap", *bucket = "4", *maxst = "0", *crop = "-1", *freeze = "-1";
  int help_quiet = 0;
  memset(t, 0, sizeof *t);
  cnnb_opt opts[] = {
    {"data", "FILE", "training images and labels (HDF5, see docs/FORMATS.md)", &t->data, NULL},
    {"val", "FILE", "validation set evaluated after every epoch", &t->val, NULL},
    {"output", "FILE", "checkpoint to write (-o)", &t->out, NULL},
    {"epochs", "N", "epochs to train (default 1)", &epochs, NULL},
    {"batch", "B", "global batch over all ranks (default: [net] batch)", &batch, NULL},
    {"lr", "X", "learning rate (default: [net] learning_rate)", &lr, NULL},
    {"seed", "S", "seed of initialisation, order and dropout (default 1)", &seed, NULL},
    {"optimizer", "sgd|adam", "optimizer (default sgd with [net] momentum and decay)", &optim, NULL},
    {"resume", "CKPT", "continue from a checkpoint", &t->resume, NULL},
    {"checkpoint-every", "N", "also write the checkpoint every N steps (default: each epoch)", &every, NULL},
    {"allreduce", "overlap|blocking", "gradient averaging (default overlap)", &allr, NULL},
    {"bucket-mb", "MB", "gradient bucket size for the overlapped allreduce (default 4)", &bucket, NULL},
    {"log-every", "N", "progress every N steps (default 50)", &logev, NULL},
    {"metrics", "FILE.csv", "append step, epoch, loss, accuracy, lr, images/s rows", &t->metrics, NULL},
    {"limit", "N", "use only the first N training images", &limit, NULL},
    {"max-steps", "N", "stop after N steps in total (tests)", &maxst, NULL},
    {"classes", "LIST", "train on these labels only, e.g. 0-6 or 0,2,5", &t->classes, NULL},
    {"freeze", "N", "keep layers 0..N-1 fixed, e.g. to fine-tune (default: [net] freeze)", &freeze, NULL},
    {"weights", "W", "start from these values (checkpoint or .weights; the model may add layers)", &t->weights, NULL},
    CNNB_DATA_OPTS(t->da),
    {"labels-name", "NAME", "labels dataset (default labels)", &t->da.labels_name, NULL},
    {"sync-bn", NULL, "batch-norm statistics over the global batch (all ranks), not per rank", NULL, &t->sync_bn},
    {"nesterov", NULL, "Nesterov momentum for sgd", NULL, &t->nesterov},
    {"flip", NULL, "augment: random horizontal flips (also [net] flip=1)", NULL, &t->flip},
    {"crop-pad", "P", "augment: random crops after zero padding by P pixels (also [net] crop_pad=P)", &crop, NULL},
    {"quiet", NULL, "print only errors and the final line", NULL, &help_quiet},
    {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[1];
  int npos;
  int rc = cnnb_args_parse(argc, argv, usage, opts, pos, 1, &npos);
  if (rc) return rc;
  t->quiet = help_quiet;
  if (npos != 1 || !t->data || !t->out) {
    fprintf(stderr, "cnn-batch train: needs MODEL.cfg, --data and -o\n%s\n", usage);
    return -1;
  }
  t->model = pos[0];
  long bmb = 4;
  if (cnnb_arg_long("train", "epochs", epochs, 0, 1000000, &t->epochs) ||
      (batch && cnnb_arg_long("train", "batch", batch, 1, 1 << 24, &t->batch)) ||
      cnnb_arg_long("train", "seed", seed, 0, 0x7fffffffL, &t->seed) ||
      cnnb_arg_long("train", "checkpoint-every", every, 0, 1L << 40, &t->ckpt_every) ||
      cnnb_arg_long("train", "log-every", logev, 1, 1L << 40, &t->log_every) ||
      cnnb_arg_long("train", "limit", limit, 0, 1L << 40, &t->limit) ||
      cnnb_arg_long("train", "max-steps", maxst, 0, 1L << 40, &t->max_steps) ||
      cnnb_arg_long("train", "freeze", freeze, -1, 1 << 20, &t->freeze) ||
      cnnb_arg_long("train", "bucket-mb", bucket, 1, 4096, &bmb) ||
      cnnb_arg_long("train", "crop-pad", crop, -1, 1024, &t->crop_pad) ||
      (lr && cnnb_arg_float("train", "lr", lr, 0, 1e3, &t->lr)))
    return -1;
  t->bucket_bytes = (size_t)bmb << 20;
  if (t->classes && cnnb_class_list_has(t->classes, 0) < 0) {
    fprintf(stderr, "cnn-batch train: %s\n", cnnb_error_message());
    return -1;
  }
  if ((t->optim = cnnb_optim_parse(optim)) < 0) {
    fprintf(stderr, "cnn-batch train: --optimizer: '%s' is not sgd or adam\n", optim);
    return -1;
  }
  if (!strcmp(allr, "overlap"))
    t->allreduce = CNNB_ALLREDUCE_OVERLAP;
  else if (!strcmp(allr, "blocking"))
    t->allreduce = CNNB_ALLREDUCE_BLOCKING;
  else {
    fprintf(stderr, "cnn-batch train: --allreduce: '%s' is not overlap or blocking\n", allr);
    return -1;
  }
  if (!lr) t->lr = -1;
  return 0;
}

static void fmt_eta(double s, char *buf, size_t n)
{
  if (!(s >= 0) || s > 1e7) s = 0;
  long t = (long)s;
  if (t >= 3600)
    snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else
    snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
}

/* Rank 0 writes; every rank learns the outcome. */
static int save(const cnnb_dist *d, const char *path, cnnb_net *net, cnnb_optim *opt, const cnnb_ckpt_meta *m)
{
  int rc = d->rank == 0 ? cnnb_ckpt_save(path, net, opt, m) : 0;
  return cnnb_dist_agree(d, rc);
}

int cnnb_cmd_train(int argc, char **argv)
{
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  train_cfg t;
  int prc = parse(argc, argv, &t);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  if (d.rank != 0) cnnb_log_set_level(CNNB_LOG_ERROR);

  cnnb_net *net = NULL;
  cnnb_dataset *ds = NULL, *val = NULL;
  cnnb_optim opt;
  memset(&opt, 0, sizeof opt);
  cnnb_grad_sync gs;
  memset(&gs, 0, sizeof gs);
  float *xb[2] = {NULL, NULL};
  int *lb[2] = {NULL, NULL};
  prefetch pf = {0};
  long *perm = NULL;
  cnnb_pk pk = {0};  /* P x K batches / --classes; pk.batch == 0: plain epochs */
  size_t frozen = 0; /* parameters [0, frozen) stay fixed */
  FILE *metrics = NULL;
  float *aug_scratch = NULL;
  cnnb_boxdata *bx = NULL, *bv = NULL; /* detection: image sets with truth boxes (boxdata.h) */
  float *tb = NULL;                    /* and one batch of their truths */
  int exit_code = CNNB_EXIT_FAIL;

  /* The global batch comes from the flag or [net]; read the cfg once to know it. */
  cnnb_net_opts no = cnnb_net_opts_default();
  no.max_batch = 0;
  no.quiet = 1;
  int rc = cnnb_net_load(&net, t.model, &no);
  long B = 0;
  if (!rc) {
    B = t.batch ? t.batch : net->hp.batch;
    cnnb_net_free(net);
    net = NULL;
    if (B < d.size) rc = cnnb_error(CNNB_EINVAL, "global batch %ld is smaller than the %d ranks", B, d.size);
  }
  if (!rc) {
    no.max_batch = (int)((B + d.size - 1) / d.size);
    no.train = 1;
    no.quiet = d.rank != 0;
    rc = cnnb_net_load(&net, t.model, &no);
  }
  if (!rc && !cnnb_net_output_layer(net)->ops->loss)
    rc = cnnb_error(CNNB_ECFG, "%s: the last layer must be a loss layer such as [softmax] to train", t.model);
  if (!rc)
    rc = cnnb_boxdata_wanted(net) ? cnnb_boxdata_open(&bx, t.data, net)
                                  : cnnb_job_open_data(&ds, t.data, net, &t.da, cnnb_train_is_metric(net) ? 2 : 1);
  if (!rc && t.val) rc = bx ? cnnb_boxdata_open(&bv, t.val, net) : cnnb_job_open_data(&val, t.val, net, &t.da, 1);
  rc = cnnb_dist_agree(&d, rc);
  if (rc) goto done;

  const long NALL = bx ? cnnb_boxdata_count(bx) : cnnb_dataset_count(ds);
  long N = NALL;
  if (t.limit && t.limit < N) N = t.limit;
  if (N < B) B = N; /* a tiny set still trains: one batch per epoch */
  long steps_per_epoch = (N + B - 1) / B;
  rc = cnnb_dist_agree(&d, cnnb_train_sampler(&pk, net, ds, B, t.classes, N, t.data));
  if (rc) goto done;
  if (pk.batch) N = pk.nrows, B = pk.batch, steps_per_epoch = pk.steps;
  float lr = t.lr >= 0 ? (float)t.lr : net->hp.learning_rate;

  cnnb_net_init_params(net, (unsigned long long)t.seed);
  rc = cnnb_optim_init(&opt, (cnnb_optim_kind)t.optim, net);
  opt.nesterov = t.nesterov;
  if (t.sync_bn && d.size > 1) {
    net->stat_sum = cnnb_dist_stat_sum;
    net->stat_sum_ctx = &d;
  }
  cnnb_train_metric_hooks(net, &d);
  if (!rc) rc = cnnb_train_frozen(net, t.freeze, &frozen);
  if (!rc && t.weights && !t.resume) rc = cnnb_train_load_weights(net, t.weights);
  if (!rc) rc = cnnb_grad_sync_init(&gs, net, &d, t.allreduce, t.bucket_bytes);
  cnnb_ckpt_meta meta = {0};
  meta.seed = (unsigned long long)t.seed;
  if (!rc && t.resume) {
    rc = cnnb_ckpt_load(t.resume, net, &opt, &meta);
    if (!rc && meta.seed != (unsigned long long)t.seed && d.rank == 0)
      cnnb_log(CNNB_LOG_WARN, "%s was trained with seed %llu; continuing with its seed", t.resume, meta.seed);
    if (!rc) t.seed = (long)meta.seed;
    /* The resume point is a step inside the epoch's plan, which depends on the batch. */
    if (!rc && meta.global_batch && meta.global_batch != B)
      rc = cnnb_error(CNNB_EINVAL, "%s was written with global batch %d; resume with --batch %d (not %ld)", t.resume,
                      meta.global_batch, meta.global_batch, B);
    if (!rc && meta.world_size && meta.world_size != d.size && d.rank == 0)
      cnnb_log(CNNB_LOG_WARN, "%s was written by %d ranks, resuming on %d: not bit-identical to an uninterrupted run",
               t.resume, meta.world_size, d.size);
  }
  for (int i = 0; i < 2; i++) {
    xb[i] = malloc((size_t)no.max_batch * cnnb_shape_size(net->in) * sizeof(float));
    lb[i] = malloc((size_t)no.max_batch * sizeof(int));
  }
  perm = malloc((size_t)NALL * sizeof *perm);
  if (bx) tb = malloc(sizeof *tb * (size_t)no.max_batch * CNNB_YOLO_MAX_TRUTH * 5);
  if (!rc && bx && !tb) rc = cnnb_error(CNNB_ENOMEM, "out of memory for truths");
  if (!rc && (!xb[0] || !xb[1] || !lb[0] || !lb[1] || !perm)) rc = cnnb_error(CNNB_ENOMEM, "out of memory for batches");
  if (!rc && d.rank == 0 && t.metrics) {
    int fresh = access(t.metrics, F_OK) != 0;
    metrics = fopen(t.metrics, "a");
    if (!metrics) rc = cnnb_error(CNNB_EIO, "%s: cannot open metrics file", t.metrics);
    else if (fresh) fprintf(metrics, "step,epoch,loss,accuracy,learning_rate,images_per_s\n");
  }
  rc = cnnb_dist_agree(&d, rc);
  if (rc) goto done;
  /* Identical replicas: rank 0's parameters win (initialisation is deterministic anyway). */
  MPI_Bcast(net->params, (int)net->nparams, MPI_FLOAT, 0, d.comm);
  MPI_Bcast(net->state, (int)net->nstate, MPI_FLOAT, 0, d.comm);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);

  cnnb_augment aug = {t.crop_pad >= 0 ? (int)t.crop_pad : net->hp.crop_pad, t.flip || net->hp.flip};
  aug_scratch = malloc(sizeof(float) * (size_t)net->in.h * net->in.w);
  if (!aug_scratch) {
    rc = cnnb_error(CNNB_ENOMEM, "out of memory");
    goto done;
  }
  /* An updating line only on a real terminal: under mpirun every rank's stdout is a pty even
   * when the job's output goes to a log file, so launched runs print plain lines. */
  const int tty = isatty(1) && !t.quiet && !getenv("OMPI_COMM_WORLD_SIZE") && !getenv("SLURM_JOB_ID");
  const cnnb_layer *last = cnnb_net_output_layer(net);
  const int K = cnnb_job_num_outputs(net);
  if (d.rank == 0 && !t.quiet)
    printf("train %s: %zu parameters, %ld images of %s, global batch %ld on %d rank%s, %ld steps/epoch, lr %g\n",
           t.model, net->nparams, N, t.data, B, d.size, d.size > 1 ? "s" : "", steps_per_epoch, lr);
  long long step = meta.step;
  long epoch0 = (long)meta.epoch, estep0 = (long)meta.epoch_step;
  double t_start = cnnb_now(), t_win = t_start, win_loss = 0, win_correct = 0, win_n = 0;
  long long img_since = 0;
  int stopped = 0;
  for (long epoch = epoch0; epoch < t.epochs && !rc && !stopped; epoch++) {
    rc = pk.batch ? cnnb_pk_epoch_plan(&pk, &d, (unsigned long long)t.seed, epoch, perm)
                  : cnnb_dist_epoch_plan(&d, (unsigned long long)t.seed, epoch, NALL, perm);
    if (rc) break;
    if (t.limit && !pk.batch) {
      /* Keep the order but only rows inside the limit. */
      long k = 0;
      for (long i = 0; i < NALL; i++)
        if (perm[i] < N) perm[k++] = perm[i];
    }
    for (long s = epoch == epoch0 ? estep0 : 0; s < steps_per_epoch && !rc; s++) {
      long b0 = s * B, bn = N - b0 < B ? N - b0 : B, lo, hi;
      cnnb_dist_slice(&d, bn, &lo, &hi);
      int m = (int)(hi - lo);
      cnnb_net_zero_grads(net);
      net->loss_scale = 1.0f / (float)bn;
      cnnb_rng_seed(&net->rng, (uint64_t)t.seed, (uint64_t)d.rank + 1, (uint64_t)epoch, (uint64_t)s);
      double st[4] = {0, 0, 0, 0}; /* loss sum, correct, samples, stop */
      int cur = s & 1, first = s == (epoch == epoch0 ? estep0 : 0);
      float *x = xb[cur];
      int *lab = lb[cur];
      /* This batch was prefetched during the last step, except at an epoch's first step. */
      if (bx) /* detection: letterboxed here, no prefetch (the network dominates) */
        rc = m > 0 ? cnnb_boxdata_read(bx, perm + b0 + lo, m, x, tb) : 0;
      else
        rc = first ? (m > 0 ? cnnb_dataset_read(ds, perm + b0 + lo, m, x, lab) : 0) : prefetch_wait(&pf);
      if (!rc && ds && s + 1 < steps_per_epoch) {
        long nb0 = (s + 1) * B, nbn = N - nb0 < B ? N - nb0 : B, nlo, nhi;
        cnnb_dist_slice(&d, nbn, &nlo, &nhi);
        if (nhi > nlo) prefetch_start(&pf, ds, perm + nb0 + nlo, (int)(nhi - nlo), xb[cur ^ 1], lb[cur ^ 1]);
      }
      /* With synchronised batch norm every rank joins the statistics' allreduce, even with no
       * rows in this (last, small) batch. */
      if (!rc && (m > 0 || net->stat_sum || net->gather_rows)) {
        cnnb_augment_batch(&aug, x, m, net->in, (uint64_t)t.seed, (uint64_t)epoch, (uint64_t)s, lo, aug_scratch);
        if (bx) cnnb_boxdata_augment(&aug, tb, m, net->in, (uint64_t)t.seed, (uint64_t)epoch, (uint64_t)s, lo);
        net->truth_f = tb;
        net->truth = lab;
        st[0] = cnnb_net_train_step(net, x, m);
        for (int i = 0; i < m && !bx; i++) {
          const float *p = last->output + (size_t)i * K;
          int best = 0;
          for (int j = 1; j < K; j++)
            if (p[j] > p[best]) best = j;
          st[1] += best == lab[i];
        }
        if (cnnb_train_is_metric(net)) st[1] = cnnb_train_metric_correct(net);
        st[2] = m;
      }
      rc = cnnb_dist_agree(&d, rc);
      if (rc) break;
      rc = cnnb_grad_sync_finish(&gs);
      st[3] = stop_requested ? 1 : 0;
      MPI_Allreduce(MPI_IN_PLACE, st, 4, MPI_DOUBLE, MPI_SUM, d.comm);
      if (!isfinite(st[0])) {
        rc = cnnb_error(CNNB_ENUM, "epoch %ld step %ld: the loss is not finite (%g): learning rate %g too high? "
                        "no checkpoint written for this step", epoch + 1, s + 1, st[0], lr);
        break;
      }
      float lr_now = cnnb_lr_at(&net->hp, lr, step, (long long)t.epochs * steps_per_epoch);
      cnnb_train_optim_step(&opt, net, frozen, lr_now);
      step++;
      img_since += (long long)st[2];
      win_loss += st[0], win_correct += st[1], win_n += st[2];
      meta.step = step;
      meta.epoch = epoch;
      meta.epoch_step = s + 1;
      meta.images_seen += (long long)st[2];
      meta.world_size = d.size;
      meta.global_batch = (int)B;
      int last_step = s + 1 == steps_per_epoch;
      if (d.rank == 0 && ((s + 1) % t.log_every == 0 || last_step)) {
        double now = cnnb_now(), ips = img_since / fmax(now - t_win, 1e-9);
        double done_frac = ((double)(epoch - epoch0) * steps_per_epoch + s + 1 - estep0) /
                           fmax(1.0, (double)(t.epochs - epoch0) * steps_per_epoch - estep0);
        char eta[32];
        fmt_eta((now - t_start) / fmax(done_frac, 1e-9) * (1 - done_frac), eta, sizeof eta);
        if (!t.quiet) {
          printf("%sepoch %ld/%ld step %ld/%ld loss %.4f acc %.4f lr %.3g %.0f img/s left %s%s", tty ? "\r" : "",
                 epoch + 1, t.epochs, s + 1, steps_per_epoch, win_loss / win_n, win_correct / win_n, lr_now, ips, eta,
                 tty ? "   " : "\n");
          fflush(stdout);
        }
        if (metrics)
          fprintf(metrics, "%lld,%ld,%.6f,%.6f,%g,%.1f\n", step, epoch + 1, win_loss / win_n, win_correct / win_n,
                  lr_now, ips);
        t_win = now, img_since = 0, win_loss = win_correct = win_n = 0;
      }
      if (st[3] > 0) {
        stopped = 1;
        break;
      }
      if (t.ckpt_every && step % t.ckpt_every == 0 && !last_step) {
        rc = prefetch_wait(&pf);
        if (!rc) rc = save(&d, t.out, net, &opt, &meta);
      }
      if (t.max_steps && step >= t.max_steps) {
        stopped = 2;
        break;
      }
    }
    int prc = prefetch_wait(&pf); /* the batch of a step that will not run (stop, max-steps) */
    if (!rc) rc = prc;
    if (rc) break;
    if (!stopped || meta.epoch_step == steps_per_epoch) {
      meta.epoch = epoch + 1;
      meta.epoch_step = 0;
    }
    if (tty && d.rank == 0) printf("\n");
    if (bv && meta.epoch_step == 0) { /* detection: mAP@0.5 of the validation set */
      double vmap = 0;
      rc = cnnb_boxdata_map(&d, net, bv, 0, 0.005f, 0.45f, 0.5f, NULL, &vmap);
      if (!rc && d.rank == 0) printf("epoch %ld validation: mAP@0.5 %.4f\n", epoch + 1, vmap);
    }
    if (val && meta.epoch_step == 0) { /* only after a whole epoch */
      double vl, va;
      rc = cnnb_job_evaluate(&d, net, val, 0, &vl, &va);
      if (!rc && d.rank == 0) printf("epoch %ld validation: loss %.4f accuracy: %.4f\n", epoch + 1, vl, va);
    }
    if (!rc) rc = save(&d, t.out, net, &opt, &meta);
  }
  if (!rc && t.epochs == epoch0 && !stopped) rc = save(&d, t.out, net, &opt, &meta);
  if (rc) goto done;
  if (d.rank == 0 && !t.quiet)
    printf("%s %s after %lld steps (%.1f s)\n", stopped == 1 ? "stopped by signal: checkpoint" : "wrote", t.out, step,
           cnnb_now() - t_start);
  exit_code = stopped == 1 ? CNNB_EXIT_STOPPED : CNNB_EXIT_OK;

done:
  if (pf.active) prefetch_wait(&pf);
  if (rc) cnnb_job_fail(&d, "train");
  if (metrics) fclose(metrics);
  free(aug_scratch);
  for (int i = 0; i < 2; i++) {
    free(xb[i]);
    free(lb[i]);
  }
  free(perm);
  cnnb_pk_free(&pk);
  cnnb_grad_sync_free(&gs);
  cnnb_optim_free(&opt);
  cnnb_dataset_close(ds);
  cnnb_dataset_close(val);
  cnnb_boxdata_close(bx);
  cnnb_boxdata_close(bv);
  free(tb);
  cnnb_net_free(net);
  return exit_code;
}
