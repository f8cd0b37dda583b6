/* Optimizers over a network's parameter arena: one loop over contiguous floats. Weight decay
 * applies to weights only (not biases or batch-norm scales), as in Darknet. */
#ifndef CNNB_OPTIM_H
#define CNNB_OPTIM_H

#include <stddef.h>

#include "cnnb/net.h"

typedef enum cnnb_optim_kind { CNNB_OPTIM_SGD = 0, CNNB_OPTIM_ADAM = 1 } cnnb_optim_kind;

typedef struct cnnb_optim {
  cnnb_optim_kind kind;
  float momentum, decay; /* SGD momentum, L2 weight decay */
  int nesterov;
  float beta1, beta2, eps; /* Adam */
  long long t;             /* steps taken (Adam's bias correction; checkpoints) */
  size_t n;
  float *m, *v;            /* momentum / first moment, second moment (Adam) */
  unsigned char *decay_mask; /* 1 where decay applies */
} cnnb_optim;

/* Sizes state for net's parameters; hyper-parameters from net->hp (momentum, decay). */
int cnnb_optim_init(cnnb_optim *o, cnnb_optim_kind kind, const cnnb_net *net);
void cnnb_optim_free(cnnb_optim *o);
/* params -= update(grads) with learning rate lr; grads are already averaged. */
void cnnb_optim_step(cnnb_optim *o, float *params, const float *grads, float lr);
/* Parses "sgd" / "adam"; -1 when unknown. */
int cnnb_optim_parse(const char *name);

#endif
