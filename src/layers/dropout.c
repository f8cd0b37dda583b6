/* [dropout]: inverted dropout, as Darknet.
 *   probability  chance of dropping a unit (default 0.5, in [0,1))
 * In training (net->train) each unit is dropped when a uniform draw from net->rng is below
 * probability, and kept units are scaled by 1/(1-probability) so inference is the identity.
 * The mask lives in priv (max batch) so backward applies the same one. AlexeyAB's DropBlock
 * (dropblock=1) is refused. */
#include <stdlib.h>

#include "cnnb/error.h"
#include "cnnb/layer.h"
#include "cnnb/net.h"

typedef struct dropout_priv {
  float p, scale;
  int masked;           /* the last forward drew a mask (train mode) */
  unsigned char *keep;  /* max_batch x outputs */
} dropout_priv;

static int dropout_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int rc, db;
  float prob;
  if ((rc = cnnb_cfg_float(cfg, s, "probability", 0.5f, 0.0f, 0.999999f, &prob)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "dropblock", 0, 0, 1, &db)) < 0) return rc;
  if (db) return cnnb_error(CNNB_ECFG, "%s:%d: [dropout] dropblock=1 is not supported", cfg->path, s->line);
  l->out = l->in;
  dropout_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "[dropout] out of memory");
  p->p = prob;
  p->scale = 1.0f / (1.0f - prob);
  /* max_batch 0 means planning only (info): nothing will run */
  size_t nk = net->max_batch > 0 ? (size_t)net->max_batch * cnnb_shape_size(l->out) : 0;
  p->keep = nk ? malloc(nk) : NULL;
  if (nk && !p->keep) {
    free(p);
    return cnnb_error(CNNB_ENOMEM, "[dropout] out of memory for the mask");
  }
  l->priv = p;
  return 0;
}

static void dropout_init(cnnb_layer *l, cnnb_rng *rng) { (void)l; (void)rng; }

static void dropout_forward(cnnb_layer *l, cnnb_net *net)
{
  dropout_priv *p = l->priv;
  const size_t n = cnnb_shape_size(l->out) * net->batch;
  p->masked = net->train && p->p > 0;
  if (!p->masked) {
    for (size_t i = 0; i < n; i++) l->output[i] = l->input[i];
    return;
  }
  for (size_t i = 0; i < n; i++) {
    p->keep[i] = cnnb_rng_uniform(&net->rng) >= p->p;
    l->output[i] = p->keep[i] ? l->input[i] * p->scale : 0.0f;
  }
}

static void dropout_backward(cnnb_layer *l, cnnb_net *net)
{
  const dropout_priv *p = l->priv;
  if (!l->input_delta) return;
  const size_t n = cnnb_shape_size(l->out) * net->batch;
  if (!p->masked) {
    for (size_t i = 0; i < n; i++) l->input_delta[i] += l->delta[i];
    return;
  }
  for (size_t i = 0; i < n; i++)
    if (p->keep[i]) l->input_delta[i] += l->delta[i] * p->scale;
}

static void dropout_free(cnnb_layer *l)
{
  dropout_priv *p = l->priv;
  if (p) free(p->keep);
  free(p);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_dropout_ops = {
    .section = "dropout",
    .setup = dropout_setup,
    .init = dropout_init,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .free = dropout_free,
    .loss = NULL,
};
