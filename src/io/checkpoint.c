/* Checkpoint files (include/cnnb/ckpt.h, docs/FORMATS.md). */
#include "cnnb/ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnb/detect.h"
#include "cnnb/error.h"
#include "io/h5util.h"

static void group_name(char *buf, size_t n, const cnnb_layer *l)
{
  snprintf(buf, n, "/layers/%03d_%s", l->index, cnnb_layer_kind(l));
}

static int write_f32(hid_t loc, const char *name, const float *v, int ndim, const hsize_t *dims)
{
  hid_t sp = H5Screate_simple(ndim, dims, NULL);
  hid_t d = H5Dcreate2(loc, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  herr_t e = d < 0 ? -1 : H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
  if (d >= 0) H5Dclose(d);
  H5Sclose(sp);
  return d < 0 || e < 0 ? -1 : 0;
}

static int save_body(hid_t f, const cnnb_net *net, const cnnb_optim *opt, const cnnb_ckpt_meta *m)
{
  int bad = 0;
  bad |= cnnb_h5_attr_str(f, "cnnb_schema", CNNB_CKPT_SCHEMA) < 0;
  bad |= cnnb_h5_attr_int(f, "cnnb_version", CNNB_CKPT_VERSION, H5T_STD_I32LE) < 0;
  bad |= cnnb_h5_attr_str(f, "model_cfg", net->cfg.text) < 0;
  bad |= cnnb_h5_attr_int(f, "num_layers", net->n, H5T_STD_I32LE) < 0;
  if (m) {
    bad |= cnnb_h5_attr_int(f, "epoch", m->epoch, H5T_STD_I64LE) < 0;
    bad |= cnnb_h5_attr_int(f, "step", m->step, H5T_STD_I64LE) < 0;
    bad |= cnnb_h5_attr_int(f, "epoch_step", m->epoch_step, H5T_STD_I64LE) < 0;
    bad |= cnnb_h5_attr_int(f, "images_seen", m->images_seen, H5T_STD_I64LE) < 0;
    bad |= cnnb_h5_attr_int(f, "seed", (long long)m->seed, H5T_STD_I64LE) < 0;
    bad |= cnnb_h5_attr_int(f, "world_size", m->world_size, H5T_STD_I32LE) < 0;
    bad |= cnnb_h5_attr_int(f, "global_batch", m->global_batch, H5T_STD_I32LE) < 0;
  }
  hid_t lg = H5Gcreate2(f, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (lg < 0) return -1;
  H5Gclose(lg);
  for (int i = 0; i < net->n && !bad; i++) {
    const cnnb_layer *l = &net->layers[i];
    char gname[96];
    group_name(gname, sizeof gname, l);
    hid_t g = H5Gcreate2(f, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    for (int j = 0; j < l->nparam && !bad; j++) {
      const cnnb_param *p = &l->param[j];
      hsize_t dims[4];
      for (int k = 0; k < p->ndim; k++) dims[k] = (hsize_t)p->dims[k];
      bad |= write_f32(g, p->name, p->data, p->ndim, dims) < 0;
    }
    H5Gclose(g);
  }
  if (opt && !bad) {
    hid_t g = H5Gcreate2(f, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return -1;
    hsize_t n = opt->n;
    bad |= cnnb_h5_attr_str(g, "kind", opt->kind == CNNB_OPTIM_ADAM ? "adam" : "sgd") < 0;
    bad |= cnnb_h5_attr_int(g, "t", opt->t, H5T_STD_I64LE) < 0;
    bad |= write_f32(g, "m", opt->m, 1, &n) < 0;
    if (opt->v) bad |= write_f32(g, "v", opt->v, 1, &n) < 0;
    H5Gclose(g);
  }
  return bad ? -1 : 0;
}

/* H5Fflush only hands data to the kernel; fsync makes the rename below publish a file whose
 * contents are on disk, so a crash cannot leave PATH renamed but empty. Best effort on the
 * directory entry (some file systems refuse fsync on directories). */
static int sync_file(const char *p)
{
  int fd = open(p, O_RDONLY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

static void sync_dir_of(const char *p)
{
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", p);
  int fd = open(dirname(buf), O_RDONLY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

int cnnb_ckpt_save(const char *path, const cnnb_net *net, const cnnb_optim *opt, const cnnb_ckpt_meta *meta)
{
  cnnb_h5_quiet();
  char tmp[4096];
  /* A truncated PATH.tmp would be renamed onto a path nobody asked for. */
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
    return cnnb_error(CNNB_EIO, "%s: checkpoint path too long", path);
  hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) return cnnb_error(CNNB_EIO, "%s: cannot create the checkpoint's temporary file %s", path, tmp);
  int rc = save_body(f, net, opt, meta);
  if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) rc = -1;
  if (H5Fclose(f) < 0) rc = -1;
  if (rc == 0 && sync_file(tmp) != 0) rc = -1;
  if (rc < 0) {
    unlink(tmp);
    return cnnb_error(CNNB_EIO, "%s: writing the checkpoint failed (disk full?)", path);
  }
  if (rename(tmp, path) != 0) {
    unlink(tmp);
    return cnnb_error(CNNB_EIO, "%s: cannot rename %s into place", path, tmp);
  }
  sync_dir_of(path);
  return 0;
}

static int read_f32(hid_t f, const char *ckpt, const char *name, float *v, size_t count, const int *want,
                    int ndim, const char *what)
{
  hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
  if (d < 0) return cnnb_error(CNNB_EIO, "%s: no dataset '%s' (%s; checkpoint of a different model?)", ckpt, name, what);
  hid_t sp = H5Dget_space(d);
  hsize_t dims[8] = {0};
  int nd = H5Sget_simple_extent_ndims(sp);
  if (nd > 0 && nd <= 8) H5Sget_simple_extent_dims(sp, dims, NULL);
  H5Sclose(sp);
  int same = nd == ndim;
  for (int k = 0; same && k < nd; k++) same = dims[k] == (hsize_t)want[k];
  if (!same) {
    char a[64] = "", b[64] = "";
    for (int k = 0; k < nd && k < 8; k++) snprintf(a + strlen(a), sizeof a - strlen(a), "%s%llu", k ? "x" : "", (unsigned long long)dims[k]);
    for (int k = 0; k < ndim; k++) snprintf(b + strlen(b), sizeof b - strlen(b), "%s%d", k ? "x" : "", want[k]);
    H5Dclose(d);
    return cnnb_error(CNNB_ESHAPE, "%s: '%s' is %s in the checkpoint but %s in the model (%s)", ckpt, name, a, b, what);
  }
  herr_t e = H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
  H5Dclose(d);
  (void)count;
  return e < 0 ? cnnb_error(CNNB_EIO, "%s: cannot read '%s'", ckpt, name) : 0;
}

int cnnb_ckpt_load(const char *path, cnnb_net *net, cnnb_optim *opt, cnnb_ckpt_meta *meta)
{
  cnnb_h5_quiet();
  int rc = cnnb_h5_check_file(path);
  if (rc) return rc;
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return cnnb_error(CNNB_EIO, "%s: cannot open checkpoint", path);
  char **schema = NULL;
  int ns = cnnb_h5_attr_get_strs(f, "cnnb_schema", &schema);
  int ok = ns == 1 && !strcmp(schema[0], CNNB_CKPT_SCHEMA);
  cnnb_h5_free_strs(schema, ns > 0 ? ns : 0);
  long long v = 0;
  if (!ok) {
    H5Fclose(f);
    return cnnb_error(CNNB_EIO, "%s: not a cnn-batch checkpoint (root attribute cnnb_schema is not '%s')", path,
                      CNNB_CKPT_SCHEMA);
  }
  /* A newer layout may mean something else by the same names: refuse rather than guess. */
  if (cnnb_h5_attr_get_int(f, "cnnb_version", &v) && v > CNNB_CKPT_VERSION) {
    H5Fclose(f);
    return cnnb_error(CNNB_EIO, "%s: checkpoint version %lld is newer than this program's %d", path, v,
                      CNNB_CKPT_VERSION);
  }
  if (cnnb_h5_attr_get_int(f, "num_layers", &v) && v != net->n) {
    H5Fclose(f);
    return cnnb_error(CNNB_ESHAPE, "%s: checkpoint of a different model: %lld layers, the model has %d", path, v,
                      net->n);
  }
  for (int i = 0; i < net->n && !rc; i++) {
    cnnb_layer *l = &net->layers[i];
    for (int j = 0; j < l->nparam && !rc; j++) {
      cnnb_param *p = &l->param[j];
      char name[128], what[96];
      group_name(name, sizeof name, l);
      snprintf(name + strlen(name), sizeof name - strlen(name), "/%s", p->name);
      snprintf(what, sizeof what, "layer %d [%s]", i, cnnb_layer_kind(l));
      rc = read_f32(f, path, name, p->data, p->count, p->dims, p->ndim, what);
    }
  }
  if (!rc && opt && H5Lexists(f, "optimizer", H5P_DEFAULT) > 0) {
    /* SGD's m is momentum, Adam's the first moment: loading one as the other would resume
     * with silently wrong state, so a different optimizer is an error. */
    char **kind = NULL;
    hid_t og = H5Gopen2(f, "optimizer", H5P_DEFAULT);
    int nk = og >= 0 ? cnnb_h5_attr_get_strs(og, "kind", &kind) : 0;
    if (og >= 0) H5Gclose(og);
    const char *want = opt->kind == CNNB_OPTIM_ADAM ? "adam" : "sgd";
    if (nk == 1 && strcmp(kind[0], want))
      rc = cnnb_error(CNNB_EINVAL, "%s: optimizer state is %s but this run uses %s", path, kind[0], want);
    cnnb_h5_free_strs(kind, nk > 0 ? nk : 0);
  }
  if (!rc && opt && H5Lexists(f, "optimizer", H5P_DEFAULT) > 0) {
    int n = (int)opt->n;
    rc = read_f32(f, path, "/optimizer/m", opt->m, opt->n, &n, 1, "optimizer");
    if (!rc && opt->v) rc = read_f32(f, path, "/optimizer/v", opt->v, opt->n, &n, 1, "optimizer");
    hid_t g = H5Gopen2(f, "optimizer", H5P_DEFAULT);
    if (g >= 0) {
      if (cnnb_h5_attr_get_int(g, "t", &v)) opt->t = v;
      H5Gclose(g);
    }
  }
  if (!rc && meta) {
    memset(meta, 0, sizeof *meta);
    if (cnnb_h5_attr_get_int(f, "epoch", &v)) meta->epoch = v;
    if (cnnb_h5_attr_get_int(f, "step", &v)) meta->step = v;
    if (cnnb_h5_attr_get_int(f, "epoch_step", &v)) meta->epoch_step = v;
    if (cnnb_h5_attr_get_int(f, "images_seen", &v)) meta->images_seen = v;
    if (cnnb_h5_attr_get_int(f, "seed", &v)) meta->seed = (unsigned long long)v;
    if (cnnb_h5_attr_get_int(f, "world_size", &v)) meta->world_size = (int)v;
    if (cnnb_h5_attr_get_int(f, "global_batch", &v)) meta->global_batch = (int)v;
  }
  H5Fclose(f);
  return rc;
}

char *cnnb_ckpt_model_text(const char *path)
{
  cnnb_h5_quiet();
  if (cnnb_h5_check_file(path)) return NULL;
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    cnnb_error(CNNB_EIO, "%s: cannot open checkpoint", path);
    return NULL;
  }
  char *text = NULL;
  hid_t a = H5Aexists(f, "model_cfg") > 0 ? H5Aopen(f, "model_cfg", H5P_DEFAULT) : -1;
  if (a >= 0) {
    hid_t t = H5Aget_type(a);
    if (H5Tis_variable_str(t) > 0) {
      char *s = NULL;
      hid_t mt = H5Tcopy(H5T_C_S1);
      H5Tset_size(mt, H5T_VARIABLE);
      H5Tset_cset(mt, H5Tget_cset(t)); /* HDF5 converts no strings between ASCII and UTF-8 */
      if (H5Aread(a, mt, &s) >= 0 && s) {
        text = strdup(s);
        H5free_memory(s);
      }
      H5Tclose(mt);
    }
    H5Tclose(t);
    H5Aclose(a);
  }
  H5Fclose(f);
  if (!text) cnnb_error(CNNB_EIO, "%s: no model_cfg attribute (not a cnn-batch checkpoint?)", path);
  return text;
}

int cnnb_weights_is_ckpt(const char *path)
{
  unsigned char m[8] = {0};
  FILE *f = fopen(path, "rb");
  if (!f) return cnnb_error(CNNB_EIO, "%s: cannot open weights: %s", path, strerror(errno));
  size_t k = fread(m, 1, 8, f);
  fclose(f);
  return k == 8 && !memcmp(m, "\x89HDF\r\n\x1a\n", 8);
}

int cnnb_weights_load(cnnb_net *net, const char *path)
{
  int rc = cnnb_weights_is_ckpt(path);
  if (rc < 0) return rc;
  return rc ? cnnb_ckpt_load(path, net, NULL, NULL) : cnnb_darknet_weights_load(net, path, NULL);
}
