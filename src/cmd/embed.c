/* cnn-batch embed (docs/CLI.md "embed", docs/FORMATS.md "Embeddings").
 *
 * Rank 0 plans contiguous runs of chunks (--batch rows each, on a grid that does not depend on
 * the rank count) per rank; every rank runs its chunks, each one forward of the same rows, so 1
 * and 4 ranks give identical bytes. Every finished chunk is saved under OUT.work/ with a key of
 * the model hash, the input and the batch; a rerun of the same command (after a failure, a kill,
 * or SIGUSR1/SIGTERM, which make every rank stop after its current chunk and exit 3) loads those
 * chunks instead of computing them. At the end all ranks write their rows into OUT with
 * parallel HDF5 and OUT.work/ is removed. Plan, chunk files, stopping and cleanup are the
 * other bulk commands' (cmd/chunks.h), with one row per crop. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/args.h"
#include "cmd/chunks.h"
#include "cmd/cmd.h"
#include "cmd/job.h"
#include "cnnb/ckpt.h"
#include "cnnb/detect.h"
#include "cnnb/error.h"
#include "cnnb/match.h"
#include "io/h5util.h"

/* The optional /ids (int64) and /names (strings) of rows [lo, hi) of the input, read by this rank
 * alone. names: (hi - lo) x *namelen chars, NUL-padded; *namelen is the longest name + 1 over
 * the rows read (0 without /names). */
static int read_extras(const char *path, long n, long lo, long hi, long long **ids, char **names, int *namelen)
{
  *ids = NULL, *names = NULL, *namelen = 0;
  cnnb_h5_quiet();
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return cnnb_error(CNNB_EIO, "%s: cannot open HDF5 file", path);
  int rc = 0;
  const char *dn[2] = {"/ids", "/names"};
  for (int k = 0; k < 2 && !rc; k++) {
    if (H5Lexists(f, dn[k], H5P_DEFAULT) <= 0) continue;
    hid_t d = H5Dopen2(f, dn[k], H5P_DEFAULT);
    hid_t sp = d >= 0 ? H5Dget_space(d) : -1, t = d >= 0 ? H5Dget_type(d) : -1;
    hsize_t dims[2] = {0, 1};
    int r = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (r == 1 || r == 2) H5Sget_simple_extent_dims(sp, dims, NULL);
    H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    if (d < 0 || (r != 1 && r != 2) || (long)dims[0] != n || dims[1] != 1 ||
        cls != (k == 0 ? H5T_INTEGER : H5T_STRING)) {
      rc = cnnb_error(CNNB_EIO, "%s: '%s' must be %ld %s (one per image)", path, dn[k], n, k ? "strings" : "integers");
    } else if (hi > lo) {
      hsize_t start[2] = {(hsize_t)lo, 0}, cnt[2] = {(hsize_t)(hi - lo), 1};
      H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, cnt, NULL);
      hid_t ms = H5Screate_simple(r, cnt, NULL);
      if (k == 0) {
        *ids = malloc(sizeof **ids * (size_t)(hi - lo));
        if (!*ids) rc = cnnb_error(CNNB_ENOMEM, "out of memory");
        else if (H5Dread(d, H5T_NATIVE_LLONG, ms, sp, H5P_DEFAULT, *ids) < 0)
          rc = cnnb_error(CNNB_EIO, "%s: reading '/ids' failed", path);
      } else {
        /* read as variable-length strings whatever the file's kind (HDF5 converts) */
        char **v = calloc((size_t)(hi - lo), sizeof *v);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(t));
        if (!v) rc = cnnb_error(CNNB_ENOMEM, "out of memory");
        else if (H5Dread(d, mt, ms, sp, H5P_DEFAULT, v) < 0) rc = cnnb_error(CNNB_EIO, "%s: reading '/names' failed", path);
        size_t most = 1;
        for (long i = 0; !rc && i < hi - lo; i++)
          if (v[i] && strlen(v[i]) + 1 > most) most = strlen(v[i]) + 1;
        if (!rc && most > 4096) rc = cnnb_error(CNNB_EIO, "%s: a name in '/names' is longer than 4095 bytes", path);
        if (!rc && !(*names = calloc((size_t)(hi - lo), most))) rc = cnnb_error(CNNB_ENOMEM, "out of memory");
        for (long i = 0; !rc && i < hi - lo; i++)
          if (v[i]) memcpy(*names + (size_t)i * most, v[i], strlen(v[i]));
        if (v && !rc) H5Dvlen_reclaim(mt, ms, H5P_DEFAULT, v);
        *namelen = rc ? 0 : (int)most;
        free(v);
        H5Tclose(mt);
      }
      H5Sclose(ms);
    } else if (k == 1) {
      *namelen = 1; /* present, no rows here */
    }
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
  }
  H5Fclose(f);
  return rc;
}

/* The crops of one rank, read in order straight through HDF5: one hyperslab of whole rows into a
 * memory space of the same shape (HDF5's fast path; cnnb_dataset_read's general path pays
 * several times more per row here), a chunk cache that holds a batch, and the dataset reader's
 * normalisation table (the same floats as eval and predict get). */
typedef struct crop_reader {
  hid_t f, d;
  int rank;       /* 3 (N x H x W) or 4 */
  hsize_t dims[4];
  size_t rowb;    /* bytes per crop */
  int c;
  float lut[CNNB_MAX_CHANNELS][256];
  unsigned char *buf;
  int direct;           /* one crop per chunk, deflate only: chunks read raw and inflated here */
  unsigned char *zbuf;  /* one compressed chunk (direct) */
  size_t zcap;
} crop_reader;

static void reader_close(crop_reader *r)
{
  if (r->d >= 0) H5Dclose(r->d);
  if (r->f >= 0) H5Fclose(r->f);
  free(r->buf);
  free(r->zbuf);
  r->f = r->d = -1;
  r->buf = r->zbuf = NULL;
}

static int reader_open(crop_reader *r, const char *path, const char *name, const cnnb_dataset *ds, long B)
{
  memset(r, 0, sizeof *r);
  r->f = r->d = -1;
  char dn[300];
  snprintf(dn, sizeof dn, "%s%s", name && name[0] == '/' ? "" : "/", name && *name ? name : "images");
  int h, w;
  cnnb_dataset_shape(ds, &h, &w, &r->c);
  r->rowb = (size_t)h * w * r->c;
  float mean[CNNB_MAX_CHANNELS], sd[CNNB_MAX_CHANNELS];
  cnnb_dataset_norm(ds, mean, sd);
  for (int c = 0; c < r->c; c++)
    for (int p = 0; p < 256; p++) r->lut[c][p] = (float)(((double)p / 255.0 - mean[c]) / sd[c]);
  r->f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t probe = r->f >= 0 ? H5Dopen2(r->f, dn, H5P_DEFAULT) : -1;
  if (probe < 0) {
    reader_close(r);
    return cnnb_error(CNNB_EIO, "%s: cannot open '%s'", path, dn);
  }
  hid_t dcpl = H5Dget_create_plist(probe), sp = H5Dget_space(probe);
  r->rank = H5Sget_simple_extent_ndims(sp);
  H5Sget_simple_extent_dims(sp, r->dims, NULL);
  size_t chunkb = 0;
  if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
    hsize_t cd[8];
    int k = H5Pget_chunk(dcpl, 8, cd);
    chunkb = 1;
    for (int i = 0; i < k; i++) chunkb *= (size_t)cd[i];
    /* One crop per chunk compressed with deflate alone (what import and h5py write): each chunk
     * is read as stored and inflated by the project's decoder straight into the batch buffer,
     * without HDF5's filter pipeline and its copy out of the chunk cache. */
    r->direct = k == r->rank && cd[0] == 1 && chunkb == r->rowb && cnnb_h5_deflate_only(dcpl);
  }
  H5Sclose(sp);
  H5Pclose(dcpl);
  H5Dclose(probe);
  hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
  if (chunkb) {
    size_t bytes = (size_t)B * r->rowb + 2 * chunkb; /* a batch and the chunks at its ends */
    H5Pset_chunk_cache(dapl, 10007, bytes, 1.0);
  }
  r->d = H5Dopen2(r->f, dn, dapl);
  H5Pclose(dapl);
  r->buf = malloc((size_t)B * r->rowb);
  if (r->d < 0 || !r->buf) {
    reader_close(r);
    return cnnb_error(CNNB_EIO, "%s: cannot open '%s'", path, dn);
  }
  return 0;
}

/* Rows [row0, row0 + m) as NCHW normalised floats; *t_h5 += the seconds spent in H5Dread. */
static int reader_read(crop_reader *r, const char *path, long row0, long m, float *x, double *t_h5)
{
  double t0 = cnnb_now();
  herr_t e = 0;
  if (r->direct) {
    for (long i = 0; i < m && e >= 0; i++) {
      hsize_t off[4] = {(hsize_t)(row0 + i), 0, 0, 0};
      int zr = cnnb_h5_read_deflate_chunk(r->d, off, r->buf + (size_t)i * r->rowb, r->rowb, &r->zbuf, &r->zcap);
      if (zr == CNNB_ENOMEM) return cnnb_error(CNNB_ENOMEM, "%s: out of memory for crop %ld", path, row0 + i);
      if (zr) e = -1;
    }
  } else {
    hsize_t start[4] = {(hsize_t)row0, 0, 0, 0}, cnt[4];
    memcpy(cnt, r->dims, sizeof cnt);
    cnt[0] = (hsize_t)m;
    hid_t fs = H5Dget_space(r->d), ms = H5Screate_simple(r->rank, cnt, NULL);
    e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL);
    if (e >= 0) e = H5Dread(r->d, H5T_NATIVE_UCHAR, ms, fs, H5P_DEFAULT, r->buf);
    H5Sclose(ms);
    H5Sclose(fs);
  }
  *t_h5 += cnnb_now() - t0;
  if (e < 0) return cnnb_error(CNNB_EIO, "%s: reading crops %ld-%ld failed", path, row0, row0 + m - 1);
  const size_t hw = r->rowb / (size_t)r->c;
  for (long i = 0; i < m; i++) {
    const unsigned char *src = r->buf + (size_t)i * r->rowb;
    float *dst = x + (size_t)i * r->rowb;
    for (int c = 0; c < r->c; c++) {
      const float *l = r->lut[c];
      float *o = dst + (size_t)c * hw;
      for (size_t p = 0; p < hw; p++) o[p] = l[src[p * (size_t)r->c + (size_t)c]];
    }
  }
  return 0;
}

int cnnb_cmd_embed(int argc, char **argv)
{
  static const char *usage =
    "usage: cnn-batch embed MODEL.cfg --weights W.h5 --data CROPS.h5 -o EMB.h5 [--batch N] [--max-rows N]\n"
    "Runs MODEL on every crop of CROPS.h5 (a dataset file: /images N x H x W x C, H x W the model's\n"
    "input) and writes /embeddings (N x D float32, the last layer's outputs) with /labels, /ids and\n"
    "/names copied from the input, every rank writing its rows into one file. Input normalisation:\n"
    "--mean/--std, else the model's [net] input_mean/input_scale, [net] mean/std, the file's attributes.\n"
    "A rerun after an interruption resumes from the chunks saved in EMB.h5.work/; SIGUSR1 or SIGTERM\n"
    "make every rank stop after its current chunk and exit with code 3.";
  const char *weights = NULL, *data = NULL, *out = NULL, *batch_s = "32", *max_s = "0";
  cnnb_data_args da = {0};
  cnnb_opt opts[] = {{"weights", "W", "checkpoint (or Darknet .weights) of MODEL", &weights, NULL},
                     {"data", "FILE", "crops: a dataset file (docs/FORMATS.md)", &data, NULL},
                     {"output", "FILE", "embeddings HDF5 file (-o)", &out, NULL},
                     {"batch", "N", "crops per forward and per resumable chunk (default 32)", &batch_s, NULL},
                     {"max-rows", "N", "only the first N crops (default: all)", &max_s, NULL},
                     CNNB_DATA_OPTS(da),
                     {NULL, NULL, NULL, NULL, NULL}};
  const char *pos[1];
  int npos, prc = cnnb_args_parse(argc, argv, usage, opts, pos, 1, &npos);
  if (prc) return prc > 0 ? CNNB_EXIT_OK : CNNB_EXIT_USAGE;
  if (npos != 1 || !weights || !data || !out) {
    fprintf(stderr, "cnn-batch embed: needs MODEL.cfg, --weights, --data and -o\n%s\n", usage);
    return CNNB_EXIT_USAGE;
  }
  long B, maxrows;
  if (cnnb_arg_long("embed", "batch", batch_s, 1, 65536, &B) || cnnb_arg_long("embed", "max-rows", max_s, 0, 1L << 40, &maxrows))
    return CNNB_EXIT_USAGE;

  cnnb_chunks_catch_stop();
  const double t_start = cnnb_now();
  cnnb_dist d;
  cnnb_dist_init(&d, MPI_COMM_WORLD);
  cnnb_net *net = NULL;
  cnnb_dataset *ds = NULL;
  cnnb_outfile *of = NULL;
  float *x = NULL;
  cnnb_rows rows = {NULL, 0, 0, 0}; /* my embeddings, D floats a row, in order */
  long long *ids = NULL, *labs = NULL;
  char *names = NULL, work[4096], hash[65] = "";
  int namelen = 0;
  crop_reader rd = {.f = -1, .d = -1};
  snprintf(work, sizeof work, "%s.work", out);

  cnnb_net_opts no = cnnb_net_opts_default();
  no.max_batch = (int)B;
  no.share_outputs = 1; /* reads only the last layer after forward */
  no.quiet = d.rank != 0;
  int rc = cnnb_net_load(&net, pos[0], &no);
  if (!rc) rc = cnnb_weights_load(net, weights);
  if (!rc) rc = cnnb_job_open_data(&ds, data, net, &da, 0);
  if (!rc && d.rank == 0) rc = cnnb_model_hash(pos[0], weights, hash);
  rc = cnnb_dist_agree(&d, rc);
  if (rc) goto done;
  MPI_Bcast(hash, sizeof hash, MPI_CHAR, 0, d.comm);

  long N = cnnb_dataset_count(ds);
  if (maxrows && maxrows < N) N = maxrows;
  const long nchunks = (N + B - 1) / B;
  const int D = cnnb_job_num_outputs(net);
  long k0 = 0, k1 = 0;
  rc = cnnb_chunks_plan(&d, nchunks, &k0, &k1);
  if (!rc) rc = cnnb_chunks_workdir(&d, work);
  if (rc) goto done;
  const long lo = k0 * B < N ? k0 * B : N, hi = k1 * B < N ? k1 * B : N, my = hi - lo;

  /* Chunks are valid for the same model bytes, input file (path, size, time), normalisation,
   * batch and count: rank 0 hashes them (the ranks may see the file differently). */
  uint64_t key = 0;
  if (d.rank == 0) {
    char ks[128];
    float mean[CNNB_MAX_CHANNELS] = {0}, sd[CNNB_MAX_CHANNELS] = {0};
    cnnb_dataset_norm(ds, mean, sd);
    snprintf(ks, sizeof ks, "%ld %ld %d", B, N, D);
    key = cnnb_fnv_file(cnnb_fnv_str(CNNB_FNV_INIT, hash), data);
    key = cnnb_fnv_str(key, ks);
    key = cnnb_fnv(cnnb_fnv(key, mean, sizeof mean), sd, sizeof sd);
  }
  MPI_Bcast(&key, 1, MPI_UINT64_T, 0, d.comm);
  int lrc = read_extras(data, cnnb_dataset_count(ds), lo, hi, &ids, &names, &namelen);
  if (!lrc) lrc = reader_open(&rd, data, da.images_name, ds, B);
  rc = cnnb_dist_agree(&d, lrc);
  if (rc) goto done;

  const size_t insz = cnnb_shape_size(net->in);
  x = malloc(sizeof *x * insz * (size_t)B);
  rows.rowsize = sizeof(float) * (size_t)D;
  if (!x || cnnb_rows_reserve(&rows, (size_t)(my > 0 ? my : 1)))
    lrc = cnnb_error(CNNB_ENOMEM, "embed: out of memory for %ld x %d embeddings", my, D);
  long computed = 0, resumed = 0;
  double t_read = 0, t_write = 0;
  cnnb_chunk_loop loop;
  cnnb_chunks_loop_init(&loop, &d, nchunks, k0, k1);
  for (long k; cnnb_chunks_next(&loop, lrc, &k);) { /* all ranks stop together on a signal or an error */
    const long a = k * B, m = (a + B < N ? a + B : N) - a;
    if (!cnnb_chunk_load(work, "embed", k, key, m, NULL, &rows)) {
      resumed += m;
      continue;
    }
    lrc = reader_read(&rd, data, a, m, x, &t_read);
    if (lrc) continue; /* the next check ends the loop on every rank */
    const float *y = cnnb_net_forward(net, x, (int)m);
    lrc = cnnb_rows_push(&rows, y, (size_t)m);
    if (lrc) continue;
    cnnb_chunk_save(work, "embed", k, key, m, NULL, y, (size_t)m, rows.rowsize);
    computed += m;
  }
  rc = cnnb_dist_agree(&d, lrc);
  if (!rc && loop.stopped) rc = cnnb_chunks_stopped(&d, "embed", "crops", computed, resumed, N, work);
  if (rc) goto done;
  const float *emb = (const float *)rows.p;
  long long st[2] = {computed, resumed}, sums[3];
  MPI_Allreduce(st, sums + 1, 2, MPI_LONG_LONG, MPI_SUM, d.comm);

  /* Labels (int64 in the output), ids and names of my rows. */
  const int *lab = cnnb_dataset_labels(ds);
  int have_ids = 0, maxlen = namelen;
  MPI_Allreduce(MPI_IN_PLACE, &maxlen, 1, MPI_INT, MPI_MAX, d.comm);
  {
    /* a rank without rows learns from the others whether the input has /ids */
    int h = ids != NULL;
    MPI_Allreduce(&h, &have_ids, 1, MPI_INT, MPI_MAX, d.comm);
  }
  if (lab) {
    labs = malloc(sizeof *labs * (size_t)(my > 0 ? my : 1));
    lrc = labs ? 0 : cnnb_error(CNNB_ENOMEM, "out of memory");
    for (long i = 0; labs && i < my; i++) labs[i] = lab[lo + i];
  }
  if (!lrc && maxlen > namelen && my > 0) {
    /* every rank writes names of the common width */
    char *nn = calloc((size_t)my, (size_t)maxlen);
    if (!nn) lrc = cnnb_error(CNNB_ENOMEM, "out of memory");
    for (long i = 0; nn && i < my; i++) memcpy(nn + (size_t)i * maxlen, names + (size_t)i * namelen, (size_t)namelen);
    free(names);
    names = nn;
  }
  rc = cnnb_dist_agree(&d, lrc);
  if (rc) goto done;

  MPI_Barrier(d.comm); /* the write time below is HDF5's, not a wait for the slowest rank's compute */
  double t0 = cnnb_now();
  int sdim = maxlen;
  rc = cnnb_outfile_create(&of, out, d.comm);
  if (!rc) rc = cnnb_outfile_add_f32(of, "embeddings", N, D);
  if (!rc && lab) rc = cnnb_outfile_add_i64(of, "labels", N, 0);
  if (!rc && have_ids) rc = cnnb_outfile_add_i64(of, "ids", N, 0);
  if (!rc && maxlen) rc = cnnb_outfile_add(of, "names", CNNB_OUT_STR, N, 1, &sdim);
  if (!rc) rc = cnnb_outfile_write_f32(of, "embeddings", my ? lo : 0, my, emb);
  if (!rc && lab) rc = cnnb_outfile_write_i64(of, "labels", my ? lo : 0, my, labs);
  if (!rc && have_ids) rc = cnnb_outfile_write_i64(of, "ids", my ? lo : 0, my, ids);
  if (!rc && maxlen) rc = cnnb_outfile_write(of, "names", my ? lo : 0, my, names);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "schema", CNNB_EMB_SCHEMA);
  if (!rc) rc = cnnb_outfile_attr_i64(of, "/", "dim", D);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "model_hash", hash);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "model", pos[0]);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "weights", weights);
  if (!rc) rc = cnnb_outfile_attr_str(of, "/", "source", data);
  if (!rc) {
    rc = cnnb_outfile_commit(of);
    of = NULL;
  }
  t_write = cnnb_now() - t0;
  if (!rc) {
    cnnb_chunks_cleanup(&d, work, k0, k1); /* complete: the saved chunks are no longer needed */
    double io[3] = {t_read + t_write, t_read, t_write}, wall = cnnb_now() - t_start;
    MPI_Allreduce(MPI_IN_PLACE, io, 3, MPI_DOUBLE, MPI_MAX, d.comm);
    if (d.rank == 0)
      printf("wrote %s: %ld x %d embeddings (%lld computed, %lld resumed) in %.2f s, %.1f crops/s; HDF5 reads and "
             "writes %.3f s (%.1f%% of the run; reads %.3f s, writes %.3f s)\n",
             out, N, D, sums[1], sums[2], wall, wall > 0 ? (double)sums[1] / wall : 0, io[0],
             wall > 0 ? 100 * io[0] / wall : 0, io[1], io[2]);
  }
done:
  if (rc && rc != CNNB_EINTR) cnnb_job_fail(&d, "embed");
  cnnb_outfile_abort(of);
  free(x);
  free(rows.p);
  free(ids);
  free(labs);
  free(names);
  reader_close(&rd);
  cnnb_dataset_close(ds);
  cnnb_net_free(net);
  return rc == CNNB_EINTR ? CNNB_EXIT_STOPPED : rc ? CNNB_EXIT_FAIL : CNNB_EXIT_OK;
}
