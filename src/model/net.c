/* Network builder and the forward/backward walk (include/cnnb/net.h). Shapes are planned
 * first, layer by layer; then every buffer is allocated once, so nothing is allocated while
 * training. */
#include "cnnb/net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"
#include "core/parallel.h"

cnnb_net_opts cnnb_net_opts_default(void)
{
  cnnb_net_opts o;
  memset(&o, 0, sizeof o);
  o.max_batch = 1;
  return o;
}

int cnnb_layer_param(cnnb_layer *l, const char *name, int trainable, int ndim, const int *dims)
{
  if (l->nparam == CNNB_MAX_PARAMS || ndim < 1 || ndim > 4)
    return cnnb_error(CNNB_EINVAL, "layer %d: too many parameter tensors", l->index);
  cnnb_param *p = &l->param[l->nparam];
  memset(p, 0, sizeof *p);
  strncpy(p->name, name, sizeof p->name - 1);
  p->trainable = trainable;
  p->ndim = ndim;
  p->count = 1;
  for (int i = 0; i < ndim; i++) {
    if (dims[i] <= 0) return cnnb_error(CNNB_ESHAPE, "layer %d: parameter '%s' has an empty dimension", l->index, name);
    p->dims[i] = dims[i];
    p->count *= (size_t)dims[i];
  }
  return l->nparam++;
}

cnnb_param *cnnb_layer_find_param(cnnb_layer *l, const char *name)
{
  for (int i = 0; i < l->nparam; i++)
    if (!strcmp(l->param[i].name, name)) return &l->param[i];
  return NULL;
}

size_t cnnb_layer_num_trainable(const cnnb_layer *l)
{
  size_t n = 0;
  for (int i = 0; i < l->nparam; i++)
    if (l->param[i].trainable) n += l->param[i].count;
  return n;
}

const char *cnnb_layer_kind(const cnnb_layer *l) { return l->ops->section; }

size_t cnnb_net_num_trainable(const cnnb_net *net) { return net->nparams; }

const cnnb_layer *cnnb_net_output_layer(const cnnb_net *net) { return &net->layers[net->n - 1]; }

void cnnb_net_free(cnnb_net *net)
{
  if (!net) return;
  for (int i = 0; i < net->n; i++) {
    cnnb_layer *l = &net->layers[i];
    if (l->ops && l->ops->free) l->ops->free(l);
    if (!net->out_blocks) free(l->output);
    free(l->delta);
  }
  for (int b = 0; b < net->nout_blocks; b++) free(net->out_blocks[b]);
  free(net->out_blocks);
  free(net->layers);
  free(net->params);
  free(net->grads);
  free(net->state);
  free(net->workspace);
  cnnb_pool_free(net->pool);
  free(net->input_delta);
  cnnb_cfg_free(&net->cfg);
  free(net);
}

/* [net] input_mean=R,G,B input_scale=S: the model's own input normalisation (net.h). Both or
 * neither; one mean for every channel or one per channel. */
static int read_input_norm(const cnnb_cfg *cfg, cnnb_cfg_section *s, cnnb_hparams *hp, int c)
{
  int nm = 0, rc;
  cnnb_cfg_kv *km = cnnb_cfg_find(s, "input_mean"), *ks = cnnb_cfg_find(s, "input_scale");
  if ((rc = cnnb_cfg_floats(cfg, s, "input_mean", hp->input_mean, 4, &nm)) < 0) return rc;
  if ((rc = cnnb_cfg_float(cfg, s, "input_scale", 1.0f, -1e30f, 1e30f, &hp->input_scale)) < 0) return rc;
  if (!km && !ks) return 0;
  if (!km || !ks)
    return cnnb_error(CNNB_ECFG, "%s:%d: [net] input_mean and input_scale go together (x = (pixel - mean) * scale)",
                      cfg->path, (km ? km : ks)->line);
  if (nm != 1 && nm != c)
    return cnnb_error(CNNB_ECFG, "%s:%d: [net] input_mean has %d values for %d channels (give 1 or %d)", cfg->path,
                      km->line, nm, c, c);
  if (!(hp->input_scale != 0) || !isfinite(hp->input_scale))
    return cnnb_error(CNNB_ECFG, "%s:%d: [net] input_scale must be finite and not 0", cfg->path, ks->line);
  for (int i = nm; i < 4; i++) hp->input_mean[i] = hp->input_mean[0];
  hp->has_input_norm = 1;
  return 0;
}

int cnnb_net_input_norm(const cnnb_net *net, float *mean, float *scale)
{
  if (!net->hp.has_input_norm) return 0;
  for (int i = 0; mean && i < net->in.c && i < 4; i++) mean[i] = net->hp.input_mean[i];
  if (scale) *scale = net->hp.input_scale;
  return 1;
}

void cnnb_net_normalize_input(const cnnb_net *net, const float *pixels, int n, float *out)
{
  const size_t plane = (size_t)net->in.h * net->in.w;
  for (int b = 0; b < n; b++)
    for (int c = 0; c < net->in.c; c++) {
      const size_t o = ((size_t)b * net->in.c + c) * plane;
      if (!net->hp.has_input_norm) {
        if (out != pixels) memcpy(out + o, pixels + o, plane * sizeof *out);
        continue;
      }
      const float m = net->hp.input_mean[c < 4 ? c : 3], sc = net->hp.input_scale;
      for (size_t i = 0; i < plane; i++) out[o + i] = (pixels[o + i] - m) * sc;
    }
}

static int read_net_section(cnnb_net *net, cnnb_cfg_section *s, const cnnb_net_opts *o)
{
  cnnb_cfg *cfg = &net->cfg;
  int h, w, c, rc = 0;
  cnnb_hparams *hp = &net->hp;
  rc = rc ? rc : cnnb_cfg_int(cfg, s, "height", 0, 0, 1 << 16, &h);
  rc = rc ? rc : cnnb_cfg_int(cfg, s, "width", 0, 0, 1 << 16, &w);
  rc = rc ? rc : cnnb_cfg_int(cfg, s, "channels", 0, 0, 1 << 16, &c);
  rc = rc ? rc : cnnb_cfg_int(cfg, s, "batch", 1, 1, 1 << 20, &hp->batch);
  rc = rc ? rc : cnnb_cfg_float(cfg, s, "learning_rate", 0.001f, 0, 1e3f, &hp->learning_rate);
  rc = rc ? rc : cnnb_cfg_float(cfg, s, "momentum", 0.9f, 0, 1, &hp->momentum);
  rc = rc ? rc : cnnb_cfg_float(cfg, s, "decay", 0.0001f, 0, 1, &hp->decay);
  rc = rc ? rc : cnnb_cfg_floats(cfg, s, "mean", hp->mean, 4, &hp->nmean);
  rc = rc ? rc : cnnb_cfg_floats(cfg, s, "std", hp->std, 4, &hp->nstd);
  const char *policy = cnnb_cfg_str(s, "policy", "constant");
  if (!strcmp(policy, "constant"))
    hp->policy = CNNB_LR_CONSTANT;
  else if (!strcmp(policy, "steps"))
    hp->policy = CNNB_LR_STEPS;
  else if (!strcmp(policy, "poly"))
    hp->policy = CNNB_LR_POLY;
  else if (!strcmp(policy, "cosine"))
    hp->policy = CNNB_LR_COSINE;
  else
    return cnnb_error(CNNB_ECFG, "%s:%d: key 'policy' = '%s': use constant, steps, poly or cosine", cfg->path,
                      cnnb_cfg_find(s, "policy")->line, policy);
  int nscales = 0;
  rc = rc ? rc : cnnb_cfg_ints(cfg, s, "steps", hp->steps, 16, &hp->nsteps);
  rc = rc ? rc : cnnb_cfg_floats(cfg, s, "scales", hp->scales, 16, &nscales);
  rc = rc ? rc : cnnb_cfg_int(cfg, s, "burn_in", 0, 0, 1 << 30, &hp->burn_in);
  rc = rc ? rc : cnnb_cfg_float(cfg, s, "power", 4, 0, 100, &hp->power);
  rc = rc ? rc : cnnb_cfg_int(cfg, s, "max_batches", 0, 0, 1 << 30, &hp->max_batches);
  rc = rc ? rc : cnnb_cfg_int(cfg, s, "flip", 0, 0, 1, &hp->flip);
  rc = rc ? rc : cnnb_cfg_int(cfg, s, "crop_pad", 0, 0, 1024, &hp->crop_pad);
  rc = rc ? rc : cnnb_cfg_int(cfg, s, "pk_p", 0, 0, 1 << 20, &hp->pk_p); /* P x K batches: src/io/pk_sampler.c */
  rc = rc ? rc : cnnb_cfg_int(cfg, s, "pk_k", 0, 0, 1 << 20, &hp->pk_k);
  rc = rc ? rc : cnnb_cfg_int(cfg, s, "freeze", 0, 0, 1 << 20, &hp->freeze);
  if (rc) return rc;
  hp->pk_line = cnnb_cfg_find(s, "pk_p") ? cnnb_cfg_find(s, "pk_p")->line : s->line;
  if (hp->policy == CNNB_LR_STEPS && nscales != hp->nsteps)
    return cnnb_error(CNNB_ECFG, "%s:%d: [net] has %d steps but %d scales", cfg->path, s->line, hp->nsteps, nscales);
  for (int i = 0; i < hp->nstd; i++)
    if (!(hp->std[i] > 0)) return cnnb_error(CNNB_ECFG, "%s:%d: [net] std must be positive", cfg->path, s->line);
  /* Darknet's "inputs" describes a flat input of that many values. */
  int inputs;
  rc = cnnb_cfg_int(cfg, s, "inputs", 0, 0, 1 << 30, &inputs);
  if (rc) return rc;
  if (inputs && !h && !w && !c) h = w = 1, c = inputs;
  if (o->h > 0) h = o->h;
  if (o->w > 0) w = o->w;
  if (o->c > 0) c = o->c;
  if (h <= 0 || w <= 0 || c <= 0)
    return cnnb_error(CNNB_ECFG, "%s:%d: [net] needs height, width and channels (got %dx%dx%d)", cfg->path,
                      s->line, h, w, c);
  if ((rc = read_input_norm(cfg, s, hp, c)) < 0) return rc;
  net->in = (cnnb_shape){c, h, w};
  return 0;
}

/* Plans every layer's shape and parameters; nothing big is allocated yet. */
static int plan_layers(cnnb_net *net, const cnnb_net_opts *o)
{
  cnnb_cfg *cfg = &net->cfg;
  net->layers = calloc((size_t)cfg->nsec, sizeof *net->layers);
  if (!net->layers) return cnnb_error(CNNB_ENOMEM, "%s: out of memory", cfg->path);
  cnnb_shape prev = net->in;
  for (int i = 1; i < cfg->nsec; i++) {
    cnnb_cfg_section *s = &cfg->sec[i];
    const cnnb_layer_ops *ops = cnnb_layer_ops_find(s->name);
    if (!ops)
      return cnnb_error(CNNB_ECFG, "%s:%d: unknown section [%s] (known: net, %s)", cfg->path, s->line, s->name,
                        cnnb_layer_known_sections());
    cnnb_layer *l = &net->layers[net->n];
    l->ops = ops;
    l->index = net->n;
    l->cfg_section = i;
    l->in = prev;
    l->out = prev;
    net->n++; /* counted before setup so that a failing layer is still freed */
    int rc = ops->setup(l, s, net);
    if (rc < 0) {
      /* Messages from cfg getters already name file and line; others get them here. */
      if (!strstr(cnnb_error_message(), cfg->path))
        cnnb_error_prefix(rc, "%s:%d: layer %d [%s]: ", cfg->path, s->line, l->index, s->name);
      return rc;
    }
    if (l->out.c <= 0 || l->out.h <= 0 || l->out.w <= 0)
      return cnnb_error(CNNB_ESHAPE, "%s:%d: layer %d [%s]: input %dx%dx%d gives an empty output %dx%dx%d",
                        cfg->path, s->line, l->index, s->name, l->in.h, l->in.w, l->in.c, l->out.h, l->out.w,
                        l->out.c);
    prev = l->out;
  }
  if (!net->n) return cnnb_error(CNNB_ECFG, "%s: no layers after [net]", cfg->path);
  return 0;
}

/* Output sharing for inference (cnnb_net_opts.share_outputs): layer i's output is read by
 * layer i+1 and by the later layers that name it as a source; the last layer's and loss
 * layers' outputs are read after forward. Walking the layers in order, a buffer whose layer
 * has no reader left goes back to a free list, and each output takes the smallest free buffer
 * that fits (else the largest, grown; else a new one). A layer never writes into a buffer
 * that its own inputs occupy: those are still read at its step. For yolov3-tiny this halves
 * the memory forward touches (fewer first-touch page faults and cache misses). */
static int share_outputs(cnnb_net *net, size_t max_batch)
{
  const int n = net->n;
  int *last = malloc(sizeof(int) * (size_t)n), *blk = malloc(sizeof(int) * (size_t)n);
  int *owner = malloc(sizeof(int) * (size_t)n);
  size_t *cap = calloc((size_t)n, sizeof *cap);
  int rc = 0, nb = 0;
  if (!last || !blk || !owner || !cap) {
    rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", net->cfg.path);
    goto done;
  }
  for (int i = 0; i < n; i++)
    last[i] = i == n - 1 || net->layers[i].ops->loss ? n : i + 1;
  for (int j = 0; j < n; j++) {
    int idx[64];
    const cnnb_layer_ops *ops = net->layers[j].ops;
    const int k = ops->sources ? ops->sources(&net->layers[j], idx, 64) : 0;
    for (int m = 0; m < k; m++)
      if (idx[m] >= 0 && idx[m] < n && last[idx[m]] < j) last[idx[m]] = j;
  }
  for (int i = 0; i < n; i++) {
    for (int b = 0; b < nb; b++)
      if (owner[b] >= 0 && last[owner[b]] < i) owner[b] = -1;
    const size_t need = max_batch * cnnb_shape_size(net->layers[i].out);
    int best = -1; /* the smallest free buffer that fits, else the largest free one */
    for (int b = 0; b < nb; b++) {
      if (owner[b] >= 0) continue;
      if (best < 0)
        best = b;
      else if (cap[b] >= need && (cap[best] < need || cap[b] < cap[best]))
        best = b;
      else if (cap[b] < need && cap[best] < need && cap[b] > cap[best])
        best = b;
    }
    if (best < 0) best = nb++;
    owner[best] = i;
    blk[i] = best;
    if (cap[best] < need) cap[best] = need;
  }
  net->out_blocks = calloc((size_t)nb, sizeof *net->out_blocks);
  if (!net->out_blocks) {
    rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", net->cfg.path);
    goto done;
  }
  net->nout_blocks = nb;
  for (int b = 0; b < nb; b++)
    if (!(net->out_blocks[b] = calloc(cap[b], sizeof(float)))) {
      rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory for layer outputs", net->cfg.path);
      goto done;
    }
  for (int i = 0; i < n; i++) net->layers[i].output = net->out_blocks[blk[i]];
done:
  free(last);
  free(blk);
  free(owner);
  free(cap);
  return rc;
}

static int allocate(cnnb_net *net, const cnnb_net_opts *o)
{
  size_t np = 0, ns = 0, ws = 0;
  for (int i = 0; i < net->n; i++) {
    cnnb_layer *l = &net->layers[i];
    for (int j = 0; j < l->nparam; j++) {
      cnnb_param *p = &l->param[j];
      p->offset = p->trainable ? np : ns;
      if (p->trainable)
        np += p->count;
      else
        ns += p->count;
    }
    if (l->workspace > ws) ws = l->workspace;
  }
  net->nparams = np;
  net->nstate = ns;
  if (o->max_batch <= 0) return 0; /* planning only (info): no buffers */
  net->params = calloc(np ? np : 1, sizeof(float));
  net->state = calloc(ns ? ns : 1, sizeof(float));
  net->grads = o->train ? calloc(np ? np : 1, sizeof(float)) : NULL;
  net->nworkspace = ws;
  /* Threads inside the rank (core/parallel.h): each gets a slice of the scratch, and when
   * training room for a private weight gradient of the largest layer. */
  int nt = o->threads > 0 ? o->threads : cnnb_threads_default();
  if (nt > o->max_batch) nt = o->max_batch;
  size_t tws = ws;
  if (nt > 1 && o->train) {
    size_t wmax = 0;
    for (int i = 0; i < net->n; i++)
      for (int j = 0; j < net->layers[i].nparam; j++)
        if (net->layers[i].param[j].count > wmax) wmax = net->layers[i].param[j].count;
    tws += wmax;
  }
  net->nthreads = 1;
  if (nt > 1) {
    int rc = cnnb_pool_new(&net->pool, nt);
    if (rc < 0) return rc;
    net->nthreads = nt;
  }
  net->thread_ws = tws;
  const size_t wsall = tws * (size_t)net->nthreads;
  net->workspace = wsall ? malloc(wsall * sizeof(float)) : NULL;
  int want_delta = o->train || o->input_grad;
  if (!net->params || !net->state || (o->train && !net->grads) || (wsall && !net->workspace))
    return cnnb_error(CNNB_ENOMEM, "%s: out of memory for %zu parameters", net->cfg.path, np);
  if (o->input_grad) {
    net->input_delta = calloc((size_t)o->max_batch * cnnb_shape_size(net->in), sizeof(float));
    if (!net->input_delta) return cnnb_error(CNNB_ENOMEM, "%s: out of memory", net->cfg.path);
  }
  const int share = o->share_outputs && !want_delta;
  if (share) {
    int rc = share_outputs(net, (size_t)o->max_batch);
    if (rc < 0) return rc;
  }
  for (int i = 0; i < net->n; i++) {
    cnnb_layer *l = &net->layers[i];
    for (int j = 0; j < l->nparam; j++) {
      cnnb_param *p = &l->param[j];
      p->data = (p->trainable ? net->params : net->state) + p->offset;
      p->grad = p->trainable && net->grads ? net->grads + p->offset : NULL;
    }
    size_t n = (size_t)o->max_batch * cnnb_shape_size(l->out);
    if (!share) l->output = calloc(n, sizeof(float));
    l->delta = want_delta ? calloc(n, sizeof(float)) : NULL;
    if (!l->output || (want_delta && !l->delta))
      return cnnb_error(CNNB_ENOMEM, "%s: out of memory for layer %d outputs", net->cfg.path, i);
    l->input = i ? net->layers[i - 1].output : NULL;
    l->input_delta = i ? net->layers[i - 1].delta : net->input_delta;
  }
  return 0;
}

static int build(cnnb_net *net, const cnnb_net_opts *o)
{
  cnnb_cfg *cfg = &net->cfg;
  if (strcmp(cfg->sec[0].name, "net") && strcmp(cfg->sec[0].name, "network"))
    return cnnb_error(CNNB_ECFG, "%s:%d: the first section must be [net], not [%s]", cfg->path, cfg->sec[0].line,
                      cfg->sec[0].name);
  net->max_batch = o->max_batch;
  net->train = o->train;
  net->backprop = o->train || o->input_grad;
  int rc = read_net_section(net, &cfg->sec[0], o);
  if (!rc) rc = plan_layers(net, o);
  if (!rc) rc = cnnb_cfg_check_unused(cfg, !o->quiet);
  if (!rc) rc = allocate(net, o);
  cnnb_rng_seed(&net->rng, 0, 0, 0, 0);
  return rc;
}

int cnnb_net_from_string(cnnb_net **out, const char *text, const char *name, const cnnb_net_opts *opts)
{
  cnnb_net_opts o = opts ? *opts : cnnb_net_opts_default();
  *out = NULL;
  cnnb_net *net = calloc(1, sizeof *net);
  if (!net) return cnnb_error(CNNB_ENOMEM, "out of memory");
  int rc = cnnb_cfg_parse(&net->cfg, text, name);
  if (!rc) rc = build(net, &o);
  if (rc) {
    cnnb_net_free(net);
    return rc;
  }
  *out = net;
  return 0;
}

int cnnb_net_load(cnnb_net **out, const char *path, const cnnb_net_opts *opts)
{
  cnnb_net_opts o = opts ? *opts : cnnb_net_opts_default();
  *out = NULL;
  cnnb_net *net = calloc(1, sizeof *net);
  if (!net) return cnnb_error(CNNB_ENOMEM, "out of memory");
  int rc = cnnb_cfg_load(&net->cfg, path);
  if (!rc) rc = build(net, &o);
  if (rc) {
    cnnb_net_free(net);
    return rc;
  }
  *out = net;
  return 0;
}

float cnnb_lr_at(const cnnb_hparams *hp, float base, long long step, long long total)
{
  if (hp->max_batches > 0) total = hp->max_batches;
  if (hp->burn_in > 0 && step < hp->burn_in) return base * powf((float)(step + 1) / (float)hp->burn_in, hp->power);
  double t = total > 0 ? fmin(1.0, (double)step / (double)total) : 0;
  switch (hp->policy) {
  case CNNB_LR_STEPS: {
    float lr = base;
    for (int i = 0; i < hp->nsteps && hp->steps[i] <= step; i++) lr *= hp->scales[i];
    return lr;
  }
  case CNNB_LR_POLY: return (float)(base * pow(1 - t, hp->power));
  case CNNB_LR_COSINE: return (float)(base * 0.5 * (1 + cos(3.14159265358979323846 * t)));
  default: return base;
  }
}

void cnnb_net_init_params(cnnb_net *net, unsigned long long seed)
{
  cnnb_rng r;
  for (int i = 0; i < net->n; i++) {
    cnnb_layer *l = &net->layers[i];
    /* One stream per layer: adding a layer does not change the others' initial values. */
    cnnb_rng_seed(&r, seed, 0x1a7e, (uint64_t)i, 0);
    if (l->ops->init) l->ops->init(l, &r);
  }
}

const float *cnnb_net_forward(cnnb_net *net, const float *x, int n)
{
  net->batch = n;
  net->input = x;
  net->layers[0].input = x;
  const int blas = cnnb_pool_blas_begin(net->pool, n);
  for (int i = 0; i < net->n; i++) net->layers[i].ops->forward(&net->layers[i], net);
  cnnb_pool_blas_end(blas);
  return net->layers[net->n - 1].output;
}

double cnnb_net_loss(cnnb_net *net)
{
  cnnb_layer *l = &net->layers[net->n - 1];
  if (!l->ops->loss || !l->delta) return NAN;
  if (!(net->loss_scale > 0)) net->loss_scale = 1.0f / (float)net->batch;
  return l->ops->loss(l, net);
}

void cnnb_net_backward(cnnb_net *net)
{
  size_t nb = (size_t)net->batch;
  for (int i = 0; i < net->n - 1; i++)
    memset(net->layers[i].delta, 0, nb * cnnb_shape_size(net->layers[i].out) * sizeof(float));
  if (net->input_delta) memset(net->input_delta, 0, nb * cnnb_shape_size(net->in) * sizeof(float));
  const int blas = cnnb_pool_blas_begin(net->pool, net->batch);
  for (int i = net->n - 1; i >= 0; i--) {
    net->layers[i].ops->backward(&net->layers[i], net);
    if (net->backward_hook) net->backward_hook(net, i, net->backward_hook_ctx);
  }
  cnnb_pool_blas_end(blas);
}

void cnnb_net_zero_grads(cnnb_net *net)
{
  if (net->grads) memset(net->grads, 0, net->nparams * sizeof(float));
}

double cnnb_net_train_step(cnnb_net *net, const float *x, int n)
{
  cnnb_net_forward(net, x, n);
  double loss = cnnb_net_loss(net);
  cnnb_net_backward(net);
  return loss;
}
