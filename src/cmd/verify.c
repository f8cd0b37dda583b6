/* cnn-batch verify (docs/CLI.md "verify"): 1:1 verification of embeddings by Euclidean distance,
 * over LFW-style pairs (10-fold accuracy, VAL at FAR) or for one pair. Rank 0 does the work (it
 * is cheap); the other ranks of an mpirun only share its exit code. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/cmd.h"
#include "cmd/job.h"
#include "cnnb/data.h"
#include "cnnb/error.h"
#include "cnnb/match.h"

static double pair_dist(const float *a, const float *b, int d)
{
  double s = 0;
  for (int i = 0; i < d; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
  return sqrt(s);
}

static int write_result(const char *out, const cnnb_pairs *p, const float *dist, const cnnb_verify_result *r,
                        double thr, double far_target, const char *emb, const char *pairs)
{
  cnnb_outfile *of = NULL;
  long long *rows = malloc(sizeof *rows * 2 * (size_t)p->n), *same = malloc(sizeof *same * (size_t)p->n),
            *fold = malloc(sizeof *fold * (size_t)p->n);
  float ft[CNNB_VERIFY_MAX_FOLDS], fa[CNNB_VERIFY_MAX_FOLDS];
  if (!rows || !same || !fold) {
    free(rows), free(same), free(fold);
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory", out);
  }
  for (long i = 0; i < p->n; i++) rows[2 * i] = p->a[i], rows[2 * i + 1] = p->b[i], same[i] = p->same[i], fold[i] = p->fold[i];
  for (int f = 0; f < r->folds; f++) ft[f] = (float)r->fold_threshold[f], fa[f] = (float)r->fold_accuracy[f];
  int rc = cnnb_outfile_create(&of, out, MPI_COMM_SELF);
  if (!rc) rc = cnnb_outfile_add_f32(of, "distances", p->n, 0);
  if (!rc) rc = cnnb_outfile_add_i64(of, "rows", p->n, 2);
  if (!rc) rc = cnnb_outfile_add_i64(of, "same", p->n, 0);
  if (!rc) rc = cnnb_outfile_add_i64(of, "fold", p->n, 0);
  if (!rc) rc = cnnb_outfile_add_f32(of, "fold_threshold", r->folds, 0);
  if (!rc) rc = cnnb_outfile_add_f32(of, "fold_accuracy", r->folds, 0);
  if (!rc) rc = cnnb_outfile_write_f32(of, "distances", 0, p->n, dist);
  if (!rc) rc = cnnb_outfile_write_i64(of, "rows", 0, p->n, rows);
  if (!rc) rc = cnnb_outfile_write_i64(of, "same", 0, p->n, same);
  if (!rc) rc = cnnb_outfile_write_i64(of, "fold", 0, p->n, fold);
  if (!rc) rc = cnnb_outfile_write_f32(of, "fold_threshold", 0, r->folds, ft);
  if (!rc) rc = cnnb_outfile_write_f32(of, "fold_accuracy", 0, r->folds, fa);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "accuracy", r->mean);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "accuracy_std", r->std);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "threshold", thr);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "accuracy_at_threshold", r->accuracy_at);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "val", r->val);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "far", r->far);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "far_target", far_target);
  if (!rc) rc = cnnb_outfile_attr_f64(of, "/", "val_threshold", r->val_threshold);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "embeddings", emb);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "pairs", pairs);
  if (!rc) {
    rc = cnnb_outfile_commit(of);
    of = NULL;
  }
  cnnb_outfile_abort(of);
  free(rows), free(same), free(fold);
  return rc;
}

static int run(const char *emb_path, const char *pairs_path, const char *const *pair, double thr, double far_target,
               const char *out)
{
  cnnb_embfile *f = NULL;
  char **ids = NULL;
  float *e = NULL, *dist = NULL;
  cnnb_pairs p = {0};
  int rc = cnnb_embfile_open(&f, emb_path);
  if (rc) return rc;
  if (pair) {
    long i, j;
    float *ea = NULL, *eb = NULL;
    if (cnnb_arg_long("verify", "pair", pair[0], 0, f->n - 1, &i) || cnnb_arg_long("verify", "pair", pair[1], 0, f->n - 1, &j)) {
      rc = cnnb_error(CNNB_EINVAL, "%s: --pair I J: rows 0..%ld", emb_path, f->n - 1);
    } else {
      ea = malloc(sizeof *ea * (size_t)f->dim), eb = malloc(sizeof *eb * (size_t)f->dim);
      rc = ea && eb ? 0 : cnnb_error(CNNB_ENOMEM, "out of memory");
      if (!rc) rc = cnnb_embfile_read(f, i, 1, ea);
      if (!rc) rc = cnnb_embfile_read(f, j, 1, eb);
      if (!rc) {
        double dd = pair_dist(ea, eb, f->dim);
        printf("verify: rows %ld and %ld: distance %.4f: %s (threshold %g)\n", i, j, dd,
               dd < thr ? "same" : "different", thr);
      }
    }
    free(ea), free(eb);
    cnnb_embfile_close(f);
    return rc;
  }
  rc = cnnb_embfile_identities(f, &ids);
  if (!rc) rc = cnnb_pairs_load(&p, pairs_path, ids, f->n, emb_path);
  if (!rc) {
    e = malloc(sizeof *e * (size_t)f->n * (size_t)f->dim);
    dist = malloc(sizeof *dist * (size_t)(p.n ? p.n : 1));
    rc = e && dist ? cnnb_embfile_read(f, 0, f->n, e) : cnnb_error(CNNB_ENOMEM, "%s: out of memory", emb_path);
  }
  cnnb_verify_result r;
  if (!rc) {
    for (long k = 0; k < p.n; k++)
      dist[k] = (float)pair_dist(e + (size_t)p.a[k] * f->dim, e + (size_t)p.b[k] * f->dim, f->dim);
    rc = cnnb_verify_eval(&p, dist, thr, far_target, &r);
    if (rc) cnnb_error_prefix(rc, "%s: ", pairs_path);
  }
  if (!rc) {
    printf("verify: %s with %s: %d folds of %d matched and %d mismatched pairs\n", emb_path, pairs_path, p.folds,
           p.per_fold, p.per_fold);
    printf("fold  threshold  accuracy\n");
    for (int k = 0; k < r.folds; k++) printf("%4d  %9.4f  %8.4f\n", k + 1, r.fold_threshold[k], r.fold_accuracy[k]);
    printf("%d-fold accuracy: %.4f +- %.4f\n", r.folds, r.mean, r.std);
    printf("accuracy at threshold %g: %.4f\n", thr, r.accuracy_at);
    printf("VAL %.4f at FAR %.4f (target %g, threshold %.4f)\n", r.val, r.far, far_target, r.val_threshold);
    if (out) rc = write_result(out, &p, dist, &r, thr, far_target, emb_path, pairs_path);
    if (!rc && out) printf("wrote %s\n", out);
    if (!rc) printf("verify: accuracy %.4f std %.4f val %.4f far %.4f\n", r.mean, r.std, r.val, r.far);
  }
  cnnb_pairs_free(&p);
  if (ids) cnnb_match_free_strs(ids, f->n);
  cnnb_embfile_close(f);
  free(e);
  free(dist);
  return rc;
}

int cnnb_cmd_verify(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch verify --emb EMB.h5 --pairs PAIRS.txt [--threshold 0.6] [-o RESULT.h5]\n"
    "       cnn-batch verify --emb EMB.h5 --pair I J [--threshold 0.6]\n"
    "1:1 verification by Euclidean distance (same when distance < threshold). With a pairs file in\n"
    "LFW's pairs.txt format: the F-fold accuracy (threshold chosen on F-1 folds, accuracy on the\n"
    "held-out one; mean and standard deviation), the accuracy at --threshold and VAL at FAR=1e-3;\n"
    "the last line reads 'verify: accuracy MEAN std STD val VAL far FAR'. --pair I J: rows I and J.";
  const char *emb = NULL, *pairs = NULL, *out = NULL, *thr_s = "0.6", *far_s = "0.001";
  int one = 0;
  cnnb_opt opts[] = {{"emb", "EMB.h5", "embeddings written by embed", &emb, NULL},
                     {"pairs", "FILE", "pairs file (LFW pairs.txt format)", &pairs, NULL},
                     {"pair", NULL, "compare rows I and J given after the options", NULL, &one},
                     {"threshold", "T", "same when distance < T (default 0.6, dlib's)", &thr_s, NULL},
                     {"far", "F", "false accept rate for VAL (default 0.001)", &far_s, NULL},
                     {"output", "FILE", "per-pair distances and per-fold thresholds (-o)", &out, NULL},
                     {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[2];
  int npos, prc = cnnb_args_parse(argc, argv, usage, opts, pos, 2, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  if (!emb || (one ? npos != 2 || pairs : npos != 0 || !pairs)) {
    fprintf(stderr, "cnn-batch verify: needs --emb and either --pairs FILE or --pair I J\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  double thr, far;
  if (cnnb_arg_float("verify", "threshold", thr_s, 0, 1e30, &thr) || cnnb_arg_float("verify", "far", far_s, 0, 1, &far))
    return CNNB_EXIT_USAGE;
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  int rc = d.rank == 0 ? run(emb, pairs, one ? pos : NULL, thr, far, out) : 0;
  rc = cnnb_dist_agree(&d, rc);
  if (rc) cnnb_job_fail(&d, "verify");
  return rc ? CNNB_EXIT_FAIL : CNNB_EXIT_OK;
}
