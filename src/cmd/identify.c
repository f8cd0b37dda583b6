/* cnn-batch identify (docs/CLI.md "identify"): 1:K search of many probes in a gallery of
 * embeddings. The gallery is split into contiguous row ranges over the ranks; for each block of
 * probes every rank computes the distances to its gallery rows with sgemm
 * (||a||^2 + ||b||^2 - 2ab) and keeps its K best; rank 0 gathers the ranks' candidates and merges
 * them (ordered by distance, then gallery row, so the answer does not depend on the rank count)
 * and writes the result. */
#include <float.h>
#include <limits.h>
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

#define GALLERY_BLOCK 4096 /* gallery rows per sgemm: bounds the distance buffer */

static int cmp_ll(const void *a, const void *b)
{
  long long x = *(const long long *)a, y = *(const long long *)b;
  return (x > y) - (x < y);
}

int cnnb_cmd_identify(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch identify --gallery G.h5 --probes P.h5 --top K -o MATCHES.h5 [--max-dist D]\n"
    "For every probe embedding, the K nearest gallery embeddings by Euclidean distance: /indices\n"
    "(P x K gallery rows; -1 'unknown' when farther than --max-dist), /distances (P x K) and\n"
    "/labels (P x K gallery labels, when the gallery has labels). The gallery is split over the\n"
    "ranks. With labels in both files it prints 'identify: top-1 X.XXXX (n/N)'.";
  const char *gal = NULL, *prb = NULL, *out = NULL, *top_s = "1", *maxd_s = NULL, *block_s = "256";
  cnnb_opt opts[] = {{"gallery", "G.h5", "gallery embeddings (embed)", &gal, NULL},
                     {"probes", "P.h5", "probe embeddings, same model", &prb, NULL},
                     {"top", "K", "matches per probe (default 1)", &top_s, NULL},
                     {"max-dist", "D", "open set: a match farther than D is 'unknown' (-1)", &maxd_s, NULL},
                     {"block", "N", "probes per round (default 256)", &block_s, NULL},
                     {"output", "FILE", "matches HDF5 file (-o)", &out, NULL},
                     {NULL, NULL, NULL, NULL, NULL}};
  int npos, prc = cnnb_args_parse(argc, argv, usage, opts, NULL, 0, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  if (!gal || !prb || !out) {
    fprintf(stderr, "cnn-batch identify: needs --gallery, --probes and -o\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  long K, PB;
  double maxd = DBL_MAX;
  if (cnnb_arg_long("identify", "top", top_s, 1, 10000, &K) || cnnb_arg_long("identify", "block", block_s, 1, 1 << 20, &PB) ||
      (maxd_s && cnnb_arg_float("identify", "max-dist", maxd_s, 0, 1e30, &maxd)))
    return CNNB_EXIT_USAGE;

  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  cnnb_embfile *g = NULL, *p = NULL;
  cnnb_outfile *of = NULL;
  float *ge = NULL, *gn = NULL, *pe = NULL, *pn = NULL, *dist = NULL, *cd = NULL, *alld = NULL, *res_d = NULL;
  long long *cr = NULL, *allr = NULL, *res_i = NULL, *res_l = NULL, *glab = NULL, *plab = NULL, *gsorted = NULL;
  cnnb_match_cand *cand = NULL;
  int rc = cnnb_embfile_open(&g, gal);
  if (!rc) rc = cnnb_embfile_open(&p, prb);
  if (!rc && g->dim != p->dim)
    rc = cnnb_error(CNNB_ESHAPE, "%s has %d-d embeddings but %s has %d-d: not the same model", gal, g->dim, prb, p->dim);
  if (!rc && strcmp(g->model_hash, p->model_hash))
    rc = cnnb_error(CNNB_EINVAL, "%s (model_hash %.12s...) and %s (model_hash %.12s...) come from different models",
                    gal, g->model_hash[0] ? g->model_hash : "none", prb, p->model_hash[0] ? p->model_hash : "none");
  if (!rc && K > g->n) rc = cnnb_error(CNNB_EINVAL, "--top %ld: %s has only %ld rows", K, gal, g->n);
  rc = cnnb_dist_agree(&d, rc);
  if (rc) goto done;

  const long G = g->n, P = p->n;
  const int D = g->dim;
  long lo, hi;
  cnnb_dist_slice(&d, G, &lo, &hi);
  const long my = hi - lo, gb = my < GALLERY_BLOCK ? (my > 0 ? my : 1) : GALLERY_BLOCK;
  if (PB > P && P > 0) PB = P;
  ge = malloc(sizeof *ge * (size_t)(my ? my : 1) * D);
  gn = malloc(sizeof *gn * (size_t)(my ? my : 1));
  pe = malloc(sizeof *pe * (size_t)PB * D);
  pn = malloc(sizeof *pn * (size_t)PB);
  dist = malloc(sizeof *dist * (size_t)PB * gb);
  cand = malloc(sizeof *cand * (size_t)PB * K);
  cd = malloc(sizeof *cd * (size_t)PB * K);
  cr = malloc(sizeof *cr * (size_t)PB * K);
  int lrc = !ge || !gn || !pe || !pn || !dist || !cand || !cd || !cr ? cnnb_error(CNNB_ENOMEM, "identify: out of memory") : 0;
  if (!lrc) lrc = cnnb_embfile_read(g, lo, my, ge);
  if (!lrc) cnnb_match_sqnorms(ge, my, D, gn);
  if (!lrc && d.rank == 0) {
    const size_t pk = (size_t)(P ? P : 1) * K, all = (size_t)d.size * PB * K;
    alld = malloc(sizeof *alld * all);
    allr = malloc(sizeof *allr * all);
    res_d = malloc(sizeof *res_d * pk);
    res_i = malloc(sizeof *res_i * pk);
    if (!alld || !allr || !res_d || !res_i) lrc = cnnb_error(CNNB_ENOMEM, "identify: out of memory for %ld x %ld matches", P, K);
    if (!lrc && g->has_labels) {
      glab = malloc(sizeof *glab * (size_t)(G ? G : 1));
      res_l = malloc(sizeof *res_l * pk);
      lrc = glab && res_l ? cnnb_embfile_labels(g, 0, G, glab) : cnnb_error(CNNB_ENOMEM, "identify: out of memory");
    }
    if (!lrc && g->has_labels && p->has_labels) {
      plab = malloc(sizeof *plab * (size_t)(P ? P : 1));
      gsorted = malloc(sizeof *gsorted * (size_t)(G ? G : 1));
      lrc = plab && gsorted ? cnnb_embfile_labels(p, 0, P, plab) : cnnb_error(CNNB_ENOMEM, "identify: out of memory");
      if (!lrc) {
        memcpy(gsorted, glab, sizeof *gsorted * (size_t)G);
        qsort(gsorted, (size_t)G, sizeof *gsorted, cmp_ll);
      }
    }
  }
  rc = cnnb_dist_agree(&d, lrc);
  if (rc) goto done;

  double t0 = cnnb_now();
  for (long p0 = 0; p0 < P && !rc; p0 += PB) {
    const long m = P - p0 < PB ? P - p0 : PB;
    lrc = cnnb_embfile_read(p, p0, m, pe);
    if (!lrc) {
      cnnb_match_sqnorms(pe, m, D, pn);
      for (long i = 0; i < m * K; i++) cd[i] = FLT_MAX, cr[i] = LLONG_MAX; /* empty slots sort last */
      long *nin = calloc((size_t)m, sizeof *nin);
      if (!nin) lrc = cnnb_error(CNNB_ENOMEM, "identify: out of memory");
      for (long j0 = 0; j0 < my && !lrc; j0 += gb) {
        const long n = my - j0 < gb ? my - j0 : gb;
        cnnb_match_dist(pe, pn, m, ge + (size_t)j0 * D, gn + j0, n, D, dist);
        for (long i = 0; i < m; i++) {
          cnnb_match_cand *c = cand + i * K;
          const float *row = dist + i * n;
          int count = (int)nin[i];
          for (long j = 0; j < n; j++) count = cnnb_match_topk_insert(c, count, (int)K, row[j], lo + j0 + j);
          nin[i] = count;
        }
      }
      /* The K kept get their distance again, exactly (in double, not through the sgemm identity,
       * whose rounding depends on the block shapes): the merged answer is then the same bytes on
       * any rank count. */
      for (long i = 0; i < m && !lrc; i++) {
        cnnb_match_cand *c = cand + i * K, exact[64];
        cnnb_match_cand *e = K <= 64 ? exact : malloc(sizeof *e * (size_t)K);
        if (!e) {
          lrc = cnnb_error(CNNB_ENOMEM, "identify: out of memory");
          break;
        }
        int count = 0;
        for (long k = 0; k < nin[i]; k++) {
          const float *x = pe + (size_t)i * D, *y = ge + (size_t)(c[k].row - lo) * D;
          double sq = 0;
          for (int t = 0; t < D; t++) sq += ((double)x[t] - y[t]) * ((double)x[t] - y[t]);
          count = cnnb_match_topk_insert(e, count, (int)K, (float)sqrt(sq), c[k].row);
        }
        for (long k = 0; k < count; k++) cd[i * K + k] = e[k].dist, cr[i * K + k] = e[k].row;
        if (e != exact) free(e);
      }
      free(nin);
    }
    rc = cnnb_dist_agree(&d, lrc);
    if (rc) break;
    MPI_Gather(cd, (int)(m * K), MPI_FLOAT, alld, (int)(m * K), MPI_FLOAT, 0, d.comm);
    MPI_Gather(cr, (int)(m * K), MPI_LONG_LONG, allr, (int)(m * K), MPI_LONG_LONG, 0, d.comm);
    if (d.rank != 0) continue;
    for (long i = 0; i < m; i++) {
      int count = 0;
      for (int r = 0; r < d.size; r++)
        for (long k = 0; k < K; k++) {
          size_t at = ((size_t)r * m + i) * K + k;
          if (allr[at] != LLONG_MAX) count = cnnb_match_topk_insert(cand, count, (int)K, alld[at], allr[at]);
        }
      for (long k = 0; k < K; k++) {
        size_t at = (size_t)(p0 + i) * K + k;
        res_d[at] = cand[k].dist;
        res_i[at] = cand[k].dist > maxd ? -1 : cand[k].row;
        if (res_l) res_l[at] = res_i[at] < 0 ? -1 : glab[res_i[at]];
      }
    }
  }
  if (rc) goto done;
  const double t_search = cnnb_now() - t0;

  const long nw = d.rank == 0 ? P : 0;
  rc = cnnb_outfile_create(&of, out, d.comm);
  if (!rc) rc = cnnb_outfile_add_i64(of, "indices", P, (int)K);
  if (!rc) rc = cnnb_outfile_add_f32(of, "distances", P, (int)K);
  if (!rc && g->has_labels) rc = cnnb_outfile_add_i64(of, "labels", P, (int)K);
  if (!rc) rc = cnnb_outfile_write_i64(of, "indices", 0, nw, res_i);
  if (!rc) rc = cnnb_outfile_write_f32(of, "distances", 0, nw, res_d);
  if (!rc && g->has_labels) rc = cnnb_outfile_write_i64(of, "labels", 0, nw, res_l);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "gallery", gal);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "probes", prb);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "model_hash", g->model_hash);
  if (!rc) rc = cnnb_outfile_attr_i64(of, "/", "top", K);
  if (!rc && maxd_s) rc = cnnb_outfile_attr_f64(of, "/", "max_dist", maxd);
  if (!rc) {
    rc = cnnb_outfile_commit(of);
    of = NULL;
  }
  if (!rc && d.rank == 0) {
    long unknown = 0;
    for (long i = 0; i < P; i++) unknown += res_i[i * K] < 0;
    printf("wrote %s: %ld probes x top %ld among %ld gallery rows on %d rank%s in %.2f s (%ld unknown)\n", out, P, K, G,
           d.size, d.size == 1 ? "" : "s", t_search, unknown);
    if (plab) {
      long ok = 0;
      for (long i = 0; i < P; i++) {
        long long r0 = res_i[i * K];
        /* an "unknown" answer is right for a probe whose identity the gallery lacks */
        int known = bsearch(&plab[i], gsorted, (size_t)G, sizeof *gsorted, cmp_ll) != NULL;
        ok += r0 >= 0 ? glab[r0] == plab[i] : !known;
      }
      printf("identify: top-1 %.4f (%ld/%ld)\n", P ? (double)ok / (double)P : 0.0, ok, P);
    }
  }
done:
  if (rc) cnnb_job_fail(&d, "identify");
  cnnb_outfile_abort(of);
  cnnb_embfile_close(g);
  cnnb_embfile_close(p);
  free(ge), free(gn), free(pe), free(pn), free(dist), free(cand), free(cd), free(cr);
  free(alld), free(allr), free(res_d), free(res_i), free(res_l), free(glab), free(plab), free(gsorted);
  return rc ? CNNB_EXIT_FAIL : CNNB_EXIT_OK;
}
