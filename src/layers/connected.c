/* [connected]: fully connected layer on the flattened input (c*h*w per sample), Darknet's keys
 * output (default 1), activation (default logistic), batch_normalize (default 0).
 * Params: weights [outputs, inputs] (Darknet's layout), then biases [outputs] without BN, or
 * scales, biases, rolling_mean, rolling_variance [outputs] with BN. Output shape outputs x 1 x 1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "cnnb/net.h"
#include "core/parallel.h"
#include "layers/batchnorm_impl.h"

typedef struct conn_priv {
  int inputs, outputs, bn_on;
  int p_weights, p_biases;
  cnnb_bn bn;
} conn_priv;

static int conn_setup(cnnb_layer *l, cnnb_cfg_section *s, cnnb_net *net)
{
  const cnnb_cfg *cfg = &net->cfg;
  int outputs, bn_on, rc;
  if ((rc = cnnb_cfg_int(cfg, s, "output", 1, 1, 1 << 24, &outputs)) < 0) return rc;
  if ((rc = cnnb_cfg_int(cfg, s, "batch_normalize", 0, 0, 1, &bn_on)) < 0) return rc;
  const char *an = cnnb_cfg_str(s, "activation", "logistic");
  int act = cnnb_act_parse(an);
  if (act < 0) return cnnb_error(CNNB_ECFG, "unknown activation '%s' (known: linear, relu, leaky, logistic, tanh, relu6)", an);
  const size_t inputs = cnnb_shape_size(l->in);
  if (inputs < 1 || inputs > (1u << 30))
    return cnnb_error(CNNB_ESHAPE, "input size %zu out of range", inputs);

  l->out.c = outputs;
  l->out.h = l->out.w = 1;
  l->act = (cnnb_act)act;
  conn_priv *p = calloc(1, sizeof *p);
  if (!p) return cnnb_error(CNNB_ENOMEM, "out of memory");
  p->inputs = (int)inputs;
  p->outputs = outputs;
  p->bn_on = bn_on;
  int wd[2] = {outputs, (int)inputs};
  if ((rc = p->p_weights = cnnb_layer_param(l, "weights", 1, 2, wd)) < 0) goto fail;
  if (bn_on) {
    if ((rc = cnnb_bn_setup(&p->bn, l, outputs, 1, net)) < 0) goto fail;
    p->p_biases = p->bn.p_biases;
  } else {
    int bd[1] = {outputs};
    if ((rc = p->p_biases = cnnb_layer_param(l, "biases", 1, 1, bd)) < 0) goto fail;
  }
  l->priv = p;
  l->workspace = 0;
  l->madds = (double)inputs * outputs;
  return 0;
fail:
  free(p);
  return rc;
}

static void conn_init(cnnb_layer *l, cnnb_rng *rng)
{
  conn_priv *p = l->priv;
  cnnb_param *wp = &l->param[p->p_weights];
  const float sd = sqrtf(2.f / (float)p->inputs); /* He-normal, as the convolution */
  for (size_t i = 0; i < wp->count; i++) wp->data[i] = sd * cnnb_rng_normal(rng);
  if (p->bn_on)
    cnnb_bn_init(&p->bn, l);
  else
    memset(l->param[p->p_biases].data, 0, sizeof(float) * (size_t)p->outputs);
}

static void conn_forward(cnnb_layer *l, cnnb_net *net)
{
  conn_priv *p = l->priv;
  const int B = net->batch, NI = p->inputs, NO = p->outputs;
  /* out[B x O] = in[B x I] * W^T, W stored [O x I] */
  /* split only when training: inference gives the same bits on any thread count */
  cnnb_pool_sgemm(net->backprop ? net->pool : NULL, 0, 1, B, NO, NI, 1.f, l->input, NI, l->param[p->p_weights].data,
                  NI, 0.f, l->output, NO);
  if (p->bn_on) {
    cnnb_bn_forward(&p->bn, l, l->output, B, net->train);
  } else {
    const float *bias = l->param[p->p_biases].data;
    for (int b = 0; b < B; b++)
      for (int o = 0; o < NO; o++) l->output[(size_t)b * NO + o] += bias[o];
  }
  cnnb_act_forward(l->act, l->output, (size_t)B * NO);
}

static void conn_backward(cnnb_layer *l, cnnb_net *net)
{
  conn_priv *p = l->priv;
  const int B = net->batch, NI = p->inputs, NO = p->outputs;
  float *delta = l->delta;
  cnnb_act_backward(l->act, l->output, delta, (size_t)B * NO);
  if (p->bn_on) {
    cnnb_bn_backward(&p->bn, l, delta, delta, B, net->train, 0);
  } else if (l->param[p->p_biases].grad) {
    float *gb = l->param[p->p_biases].grad;
    for (int b = 0; b < B; b++)
      for (int o = 0; o < NO; o++) gb[o] += delta[(size_t)b * NO + o];
  }
  float *gw = l->param[p->p_weights].grad;
  if (gw) /* dW[O x I] += delta^T[O x B] * in[B x I] */
    cnnb_pool_sgemm(net->pool, 1, 0, NO, NI, B, 1.f, delta, NO, l->input, NI, 1.f, gw, NI);
  if (l->input_delta) /* din[B x I] += delta[B x O] * W[O x I] */
    cnnb_pool_sgemm(net->pool, 0, 0, B, NI, NO, 1.f, delta, NO, l->param[p->p_weights].data, NI, 1.f,
                    l->input_delta, NI);
}

static void conn_free(cnnb_layer *l)
{
  conn_priv *p = l->priv;
  if (!p) return;
  if (p->bn_on) cnnb_bn_free(&p->bn);
  free(p);
  l->priv = NULL;
}

const cnnb_layer_ops cnnb_layer_connected_ops = {
  .section = "connected",
  .setup = conn_setup,
  .init = conn_init,
  .forward = conn_forward,
  .backward = conn_backward,
  .free = conn_free,
  .loss = NULL,
};
