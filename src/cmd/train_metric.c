/* train's metric-learning and fine-tuning hooks (cmd/train_metric.h). */
#include "cmd/train_metric.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/ckpt.h"
#include "cnnb/detect.h"
#include "cnnb/error.h"
#include "layers/metric.h"

int cnnb_train_is_metric(const cnnb_net *net)
{
  const char *k = cnnb_layer_kind(cnnb_net_output_layer(net));
  return !strcmp(k, "triplet") || !strcmp(k, "siamese");
}

void cnnb_train_metric_hooks(cnnb_net *net, const cnnb_dist *d)
{
  if (d->size > 1 && cnnb_train_is_metric(net)) {
    net->gather_rows = cnnb_dist_gather_rows;
    net->gather_ctx = (void *)d;
  }
}

int cnnb_train_metric_correct(const cnnb_net *net)
{
  const cnnb_metric_batch *b = cnnb_metric_layer_batch(cnnb_net_output_layer(net));
  return b ? b->nn_correct : -1;
}

int cnnb_train_sampler(cnnb_pk *pk, const cnnb_net *net, cnnb_dataset *ds, long batch, const char *classes, long n,
                       const char *data_path)
{
  memset(pk, 0, sizeof *pk);
  const cnnb_hparams *hp = &net->hp;
  if (!hp->pk_p && !hp->pk_k && !classes) return 0;
  if (!ds) return cnnb_error(CNNB_EINVAL, "%s: --classes and pk_p/pk_k need a labelled image dataset", data_path);
  char where[512];
  snprintf(where, sizeof where, "%s:%d: [net]", net->cfg.path, hp->pk_line);
  if (!hp->pk_p != !hp->pk_k)
    return cnnb_error(CNNB_ECFG, "%s: pk_p and pk_k go together (got pk_p=%d pk_k=%d)", where, hp->pk_p, hp->pk_k);
  if (hp->pk_p && !cnnb_train_is_metric(net))
    return cnnb_error(CNNB_ECFG, "%s: pk_p/pk_k batches are for a [triplet] or [siamese] loss, not [%s]", where,
                      cnnb_layer_kind(cnnb_net_output_layer(net)));
  return cnnb_pk_init(pk, cnnb_dataset_labels(ds), n, hp->pk_p, hp->pk_k, batch, classes, data_path, where);
}

int cnnb_train_frozen(const cnnb_net *net, long flag, size_t *first)
{
  long nf = flag >= 0 ? flag : net->hp.freeze;
  *first = 0;
  if (nf > net->n)
    return cnnb_error(CNNB_EINVAL, "%s: freeze=%ld but the model has %d layers", net->cfg.path, nf, net->n);
  for (long i = 0; i < nf; i++) *first += cnnb_layer_num_trainable(&net->layers[i]);
  return 0;
}

void cnnb_train_optim_step(cnnb_optim *o, cnnb_net *net, size_t first, float lr)
{
  if (!first) {
    cnnb_optim_step(o, net->params, net->grads, lr);
    return;
  }
  if (first >= o->n) {
    o->t++; /* every parameter frozen: the step still counts (Adam's bias correction) */
    return;
  }
  /* A view of the optimizer over the moving suffix: one loop as before, state untouched
   * for the frozen prefix. */
  cnnb_optim v = *o;
  v.n -= first;
  v.m = o->m ? o->m + first : NULL;
  v.v = o->v ? o->v + first : NULL;
  v.decay_mask = o->decay_mask ? o->decay_mask + first : NULL;
  cnnb_optim_step(&v, net->params + first, net->grads + first, lr);
  o->t = v.t;
}

/* The checkpoint's own model is built and loaded as it is, then its layers are copied into
 * the first layers of net: each must be of the same kind with parameters of the same shapes,
 * so a model that appends layers (an [l2norm] and a [triplet] after a descriptor) starts from
 * the pretrained values, and an appended head with parameters keeps its initial ones. */
static int load_prefix(cnnb_net *net, const char *path)
{
  char *text = cnnb_ckpt_model_text(path);
  if (!text) return CNNB_EIO;
  cnnb_net_opts o = cnnb_net_opts_default();
  o.quiet = 1;
  cnnb_net *src = NULL;
  int rc = cnnb_net_from_string(&src, text, path, &o);
  free(text);
  if (!rc) rc = cnnb_ckpt_load(path, src, NULL, NULL);
  if (!rc && src->n > net->n)
    rc = cnnb_error(CNNB_ESHAPE, "%s: its model has %d layers, more than the %d of %s", path, src->n, net->n,
                    net->cfg.path);
  for (int i = 0; !rc && i < src->n; i++) {
    cnnb_layer *a = &src->layers[i], *b = &net->layers[i];
    int same = !strcmp(cnnb_layer_kind(a), cnnb_layer_kind(b)) && a->nparam == b->nparam;
    for (int j = 0; same && j < a->nparam; j++)
      same = a->param[j].count == b->param[j].count && !strcmp(a->param[j].name, b->param[j].name);
    if (!same)
      rc = cnnb_error(CNNB_ESHAPE, "%s: layer %d [%s] of its model does not match layer %d [%s] of %s", path, i,
                      cnnb_layer_kind(a), i, cnnb_layer_kind(b), net->cfg.path);
    for (int j = 0; !rc && j < a->nparam; j++) memcpy(b->param[j].data, a->param[j].data, sizeof(float) * a->param[j].count);
  }
  cnnb_net_free(src);
  return rc;
}

int cnnb_train_load_weights(cnnb_net *net, const char *path)
{
  /* Not cnnb_weights_load: a checkpoint here may hold a shorter model (load_prefix above). */
  int rc = cnnb_weights_is_ckpt(path);
  if (rc < 0) return rc;
  if (rc) return load_prefix(net, path);
  return cnnb_darknet_weights_load(net, path, NULL); /* layers without parameters take none */
}
