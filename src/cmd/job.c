/* Shared pieces of the data commands (job.h). */
#include "cmd/job.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnnb/error.h"

double cnnb_now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

int cnnb_job_num_outputs(const cnnb_net *net) { return (int)cnnb_shape_size(cnnb_net_output_layer(net)->out); }

static int parse_floats(const char *s, float *v, int max, const char *what)
{
  int n = 0;
  while (s && *s) {
    char *end;
    double x = strtod(s, &end);
    if (end == s || n == max) return cnnb_error(CNNB_EINVAL, "--%s '%s': expected up to %d comma-separated numbers", what, s, max);
    v[n++] = (float)x;
    s = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') return cnnb_error(CNNB_EINVAL, "--%s: bad number list", what);
  }
  return n;
}

int cnnb_job_open_data(cnnb_dataset **out, const char *path, const cnnb_net *net, const cnnb_data_args *a,
                       int need_labels)
{
  *out = NULL;
  cnnb_dataset_opts o;
  cnnb_dataset_opts_init(&o);
  o.images_name = a ? a->images_name : NULL;
  o.labels_name = a ? a->labels_name : NULL;
  o.labels_required = need_labels;
  int c = net->in.c;
  float mean[4], std[4];
  int nm = 0, ns = 0;
  if (a && (a->mean || a->std)) {
    nm = parse_floats(a->mean, mean, 4, "mean");
    ns = parse_floats(a->std, std, 4, "std");
    if (nm < 0 || ns < 0) return CNNB_EINVAL;
  } else if (net->hp.has_input_norm) {
    /* (p - m) * S == (p/255 - m/255) / (1/(255 S)): the model's own normalisation (net.h) */
    nm = ns = c < 4 ? c : 4;
    for (int i = 0; i < nm; i++) {
      mean[i] = net->hp.input_mean[i] / 255.0f;
      std[i] = 1.0f / (255.0f * net->hp.input_scale);
    }
  } else if (net->hp.nmean || net->hp.nstd) {
    nm = net->hp.nmean, ns = net->hp.nstd;
    memcpy(mean, net->hp.mean, sizeof mean);
    memcpy(std, net->hp.std, sizeof std);
  }
  if (nm || ns) {
    if (c > CNNB_MAX_CHANNELS)
      return cnnb_error(CNNB_EINVAL, "%s: mean/std given for a %d-channel model", net->cfg.path, c);
    o.have_norm = 1;
    for (int i = 0; i < c; i++) {
      o.mean[i] = nm ? mean[nm == 1 ? 0 : (i < nm ? i : nm - 1)] : 0.0f;
      o.std[i] = ns ? std[ns == 1 ? 0 : (i < ns ? i : ns - 1)] : 1.0f;
      if (!(o.std[i] > 0)) return cnnb_error(CNNB_EINVAL, "std must be positive");
    }
  }
  cnnb_dataset *ds;
  int rc = cnnb_dataset_open(&ds, path, &o);
  if (rc) return rc;
  int h, w, ch;
  cnnb_dataset_shape(ds, &h, &w, &ch);
  if (h != net->in.h || w != net->in.w || ch != net->in.c) {
    cnnb_dataset_close(ds);
    return cnnb_error(CNNB_ESHAPE, "%s: images are %dx%dx%d but model %s expects %dx%dx%d (height x width x channels)",
                      path, h, w, ch, net->cfg.path, net->in.h, net->in.w, net->in.c);
  }
  if (need_labels == 1) { /* 2: identities, any non-negative value (metric learning) */
    const int *lab = cnnb_dataset_labels(ds);
    long n = cnnb_dataset_count(ds);
    int k = cnnb_job_num_outputs(net);
    for (long i = 0; i < n; i++)
      if (lab[i] < 0 || lab[i] >= k) {
        rc = cnnb_error(CNNB_EINVAL, "%s: label %d of image %ld is outside the %d classes of model %s", path, lab[i],
                        i, k, net->cfg.path);
        cnnb_dataset_close(ds);
        return rc;
      }
  }
  *out = ds;
  return 0;
}

int cnnb_job_evaluate(const cnnb_dist *d, cnnb_net *net, cnnb_dataset *ds, long n, double *loss, double *acc)
{
  long total = cnnb_dataset_count(ds);
  if (n <= 0 || n > total) n = total;
  long lo, hi;
  cnnb_dist_slice(d, n, &lo, &hi);
  int B = net->max_batch, k = cnnb_job_num_outputs(net), rc = 0;
  size_t in = cnnb_shape_size(net->in);
  float *x = malloc((size_t)B * in * sizeof *x);
  int *lab = malloc((size_t)B * sizeof *lab);
  long *rows = malloc((size_t)B * sizeof *rows);
  if (!x || !lab || !rows) rc = cnnb_error(CNNB_ENOMEM, "out of memory for an evaluation batch");
  int was_train = net->train;
  net->train = 0;
  double sums[2] = {0, 0}; /* loss, correct */
  const cnnb_layer *last = cnnb_net_output_layer(net);
  for (long r = lo; r < hi && !rc; r += B) {
    int m = (int)(hi - r < B ? hi - r : B);
    for (int i = 0; i < m; i++) rows[i] = r + i;
    rc = cnnb_dataset_read(ds, rows, m, x, lab);
    if (rc) break;
    const float *y = cnnb_net_forward(net, x, m);
    for (int i = 0; i < m; i++) {
      const float *p = y + (size_t)i * k;
      int best = 0;
      for (int j = 1; j < k; j++)
        if (p[j] > p[best]) best = j;
      sums[1] += best == lab[i];
      /* Cross-entropy of the model's probabilities when the last layer is a softmax. */
      if (!strcmp(cnnb_layer_kind(last), "softmax")) sums[0] += -log(fmax(p[lab[i]], 1e-12));
    }
  }
  net->train = was_train;
  free(x);
  free(lab);
  free(rows);
  rc = cnnb_dist_agree(d, rc);
  if (rc) return rc;
  MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, d->comm);
  *loss = sums[0] / (double)n;
  *acc = sums[1] / (double)n;
  return 0;
}

void cnnb_job_fail(const cnnb_dist *d, const char *cmd)
{
  if (d->rank == 0) fprintf(stderr, "cnn-batch %s: error: %s\n", cmd, cnnb_error_message());
}
