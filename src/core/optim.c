/* SGD with momentum (optionally Nesterov) and Adam (include/cnnb/optim.h). */
#include "cnnb/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"

int cnnb_optim_parse(const char *name)
{
  if (!strcmp(name, "sgd")) return CNNB_OPTIM_SGD;
  if (!strcmp(name, "adam")) return CNNB_OPTIM_ADAM;
  return -1;
}

int cnnb_optim_init(cnnb_optim *o, cnnb_optim_kind kind, const cnnb_net *net)
{
  memset(o, 0, sizeof *o);
  o->kind = kind;
  o->momentum = net->hp.momentum;
  o->decay = net->hp.decay;
  o->beta1 = 0.9f;
  o->beta2 = 0.999f;
  o->eps = 1e-8f;
  o->n = net->nparams;
  o->m = calloc(o->n ? o->n : 1, sizeof(float));
  o->v = kind == CNNB_OPTIM_ADAM ? calloc(o->n ? o->n : 1, sizeof(float)) : NULL;
  o->decay_mask = calloc(o->n ? o->n : 1, 1);
  if (!o->m || !o->decay_mask || (kind == CNNB_OPTIM_ADAM && !o->v)) {
    cnnb_optim_free(o);
    return cnnb_error(CNNB_ENOMEM, "out of memory for optimizer state");
  }
  for (int i = 0; i < net->n; i++) {
    const cnnb_layer *l = &net->layers[i];
    for (int j = 0; j < l->nparam; j++)
      if (l->param[j].trainable && !strcmp(l->param[j].name, "weights"))
        memset(o->decay_mask + l->param[j].offset, 1, l->param[j].count);
  }
  return 0;
}

void cnnb_optim_free(cnnb_optim *o)
{
  free(o->m);
  free(o->v);
  free(o->decay_mask);
  memset(o, 0, sizeof *o);
}

void cnnb_optim_step(cnnb_optim *o, float *p, const float *g, float lr)
{
  const size_t n = o->n;
  const float wd = o->decay, mu = o->momentum;
  const unsigned char *mask = o->decay_mask;
  float *m = o->m, *v = o->v;
  o->t++;
  if (o->kind == CNNB_OPTIM_SGD) {
    /* restrict, the Nesterov test hoisted out and the decay mask (0 or 1) as a factor rather
     * than a branch: the loops vectorise. wd * p * 1 is wd * p exactly; with mask 0 the added
     * term is a zero for a finite weight (its sign can differ from before: only a -0 weight sees it) */
    float *restrict pr = p, *restrict mr = m;
    const float *restrict gr = g;
    const unsigned char *restrict mk = mask;
    if (o->nesterov) {
      for (size_t i = 0; i < n; i++) {
        const float gi = gr[i] + wd * pr[i] * (float)mk[i];
        mr[i] = mu * mr[i] + gi;
        pr[i] -= lr * (gi + mu * mr[i]);
      }
    } else {
      for (size_t i = 0; i < n; i++) {
        const float gi = gr[i] + wd * pr[i] * (float)mk[i];
        mr[i] = mu * mr[i] + gi;
        pr[i] -= lr * mr[i];
      }
    }
    return;
  }
  const float b1 = o->beta1, b2 = o->beta2;
  const float c1 = 1.0f - powf(b1, (float)o->t), c2 = 1.0f - powf(b2, (float)o->t);
  const float step = lr * sqrtf(c2) / c1;
  for (size_t i = 0; i < n; i++) {
    float gi = g[i] + (mask[i] ? wd * p[i] : 0.0f);
    m[i] = b1 * m[i] + (1 - b1) * gi;
    v[i] = b2 * v[i] + (1 - b2) * gi * gi;
    p[i] -= step * m[i] / (sqrtf(v[i]) + o->eps);
  }
}
