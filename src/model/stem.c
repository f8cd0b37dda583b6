/* The fused stem: 3x3 conv 3 -> 16 (valid or same padding; bias or batch norm; leaky) + 2x2/2
 * max pool (src/model/stem.h). */
#include "model/stem.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/parallel.h"
#include "layers/batchnorm_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define STEM_X86 1
#endif

enum { STEM_C = 3, STEM_F = 16, STEM_FG = 4, STEM_V = 8 }; /* channels, filters, filters per pass, lanes */

#ifdef STEM_X86
/* Pooled row py of one sample into out (16 x P x P). rows points at input row 2py (valid) or
 * at the padded rows 2py-1 .. 2py+2 (same), rs apart, channels cs apart; the conv rows are Wc
 * wide (Wc even, >= 8). Conv rows 2py and 2py + 1 are computed in strips of 8 columns (x0 even)
 * for 4 filters at a time (8 accumulators in registers, the taps in the order c, ky, kx as the
 * GEMM's k); then in registers scale and shift on both rows, the max of the two rows and of
 * each column pair, leaky, and the 4 pooled values are stored. */
__attribute__((target("avx2,fma"))) static void stem_row(const float *rows, size_t rs, size_t cs, int Wc,
                                                         const float *w, const float *scale, const float *shift,
                                                         float *out, size_t oplane, int P, int py)
{
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m128 slope = _mm_set1_ps(0.1f), zero = _mm_setzero_ps();
  for (int fg = 0; fg < STEM_F; fg += STEM_FG) {
    const float *wf = w + (size_t)fg * STEM_C * 9;
    __m256 sc[STEM_FG], sh[STEM_FG];
    for (int f = 0; f < STEM_FG; f++) {
      sc[f] = _mm256_set1_ps(scale ? scale[fg + f] : 1.f);
      sh[f] = _mm256_set1_ps(shift[fg + f]);
    }
    for (int xs = 0; xs < Wc; xs += STEM_V) {
      /* the last strip overlaps the one before (Wc is even, so x0 stays even): same values */
      const int x0 = xs + STEM_V <= Wc ? xs : Wc - STEM_V;
      __m256 a0[STEM_FG], a1[STEM_FG]; /* conv row 2py and 2py + 1 */
      for (int f = 0; f < STEM_FG; f++) a0[f] = a1[f] = _mm256_setzero_ps();
      for (int c = 0; c < STEM_C; c++) {
        const float *in = rows + c * cs + x0;
        const float *wc = wf + c * 9;
        for (int ky = 0; ky < 3; ky++)
          for (int kx = 0; kx < 3; kx++) {
            /* tap (ky, kx) reads input row ky for conv row 0 and row ky + 1 for conv row 1 */
            const __m256 v0 = _mm256_loadu_ps(in + (size_t)ky * rs + kx);
            const __m256 v1 = _mm256_loadu_ps(in + (size_t)(ky + 1) * rs + kx);
            for (int f = 0; f < STEM_FG; f++) {
              const __m256 wv = _mm256_broadcast_ss(wc + (size_t)f * STEM_C * 9 + ky * 3 + kx);
              a0[f] = _mm256_fmadd_ps(wv, v0, a0[f]);
              a1[f] = _mm256_fmadd_ps(wv, v1, a1[f]);
            }
          }
      }
      for (int f = 0; f < STEM_FG; f++) {
        /* a negative batch-norm scale reverses the order: scale before the max */
        const __m256 v = _mm256_max_ps(_mm256_fmadd_ps(sc[f], a0[f], sh[f]), _mm256_fmadd_ps(sc[f], a1[f], sh[f]));
        const __m256 p = _mm256_max_ps(v, _mm256_permute_ps(v, 0xB1)); /* pairs (0,1), (2,3), ... */
        const __m128 m = _mm256_castps256_ps128(_mm256_permutevar8x32_ps(p, even));
        /* Darknet's leaky, as cnnb_act_forward: x > 0 ? x : 0.1 x */
        const __m128 y = _mm_blendv_ps(_mm_mul_ps(slope, m), m, _mm_cmpgt_ps(m, zero));
        _mm_storeu_ps(out + (fg + f) * oplane + (size_t)py * P + x0 / 2, y);
      }
    }
  }
}
#endif

typedef struct stem_job {
  cnnb_stem *st;
  cnnb_layer *l;
  cnnb_net *net;
  const float *w, *scale, *shift;
} stem_job;

/* Thread t's samples: each pooled row from the input (valid) or from 4 zero-padded rows
 * (same), built in the thread's own buffer. */
static void stem_task(void *ctx, int t, int nt)
{
#ifdef STEM_X86
  const stem_job *j = ctx;
  cnnb_layer *l = j->l, *pool = &j->net->layers[l->index + 1];
  const int S = l->in.h, pad = j->st->pad, Wc = S - 2 + 2 * pad, P = Wc / 2;
  const size_t in_sz = cnnb_shape_size(l->in), out_sz = cnnb_shape_size(pool->out), plane = (size_t)S * S;
  const size_t rs = (size_t)S + 2, cs = 4 * rs;
  float *buf = pad ? j->st->rows + (size_t)t * STEM_C * cs : NULL;
  int lo, hi;
  cnnb_pool_range(j->net->batch, t, nt, &lo, &hi);
  for (int s = lo; s < hi; s++) {
    const float *x = l->input + s * in_sz;
    float *out = pool->output + s * out_sz;
    for (int py = 0; py < P; py++) {
      if (!pad) {
        stem_row(x + (size_t)(2 * py) * S, (size_t)S, plane, Wc, j->w, j->scale, j->shift, out, (size_t)P * P, P, py);
        continue;
      }
      for (int c = 0; c < STEM_C; c++)
        for (int r = 0; r < 4; r++) {
          float *d = buf + c * cs + r * rs;
          const int y = 2 * py - 1 + r;
          d[0] = d[S + 1] = 0.f;
          if (y < 0 || y >= S)
            memset(d + 1, 0, sizeof(float) * (size_t)S);
          else
            memcpy(d + 1, x + c * plane + (size_t)y * S, sizeof(float) * (size_t)S);
        }
      stem_row(buf, rs, cs, Wc, j->w, j->scale, j->shift, out, (size_t)P * P, P, py);
    }
  }
#else
  (void)ctx, (void)t, (void)nt; /* never installed */
#endif
}

/* Layer 0's forward: the whole stem, written into layer 1's output; layer 0's own output stays
 * unwritten (no other layer reads it: checked at install). */
static void stem_forward(cnnb_layer *l, cnnb_net *net)
{
  cnnb_stem *st = (cnnb_stem *)((char *)l->ops - offsetof(cnnb_stem, ops));
  stem_job j = {st, l, net, cnnb_layer_find_param(l, "weights")->data, NULL, NULL};
  if (st->bn) { /* folded each forward: the weights may have been reloaded since install */
    const float *g = cnnb_layer_find_param(l, "scales")->data, *b = cnnb_layer_find_param(l, "biases")->data;
    const float *m = cnnb_layer_find_param(l, "rolling_mean")->data;
    const float *v = cnnb_layer_find_param(l, "rolling_variance")->data;
    for (int f = 0; f < STEM_F; f++) {
      double a, c;
      cnnb_bn_fold1(g[f], b[f], m[f], v[f], &a, &c);
      st->fold[f] = (float)a, st->fold[STEM_F + f] = (float)c;
    }
    j.scale = st->fold, j.shift = st->fold + STEM_F;
  } else {
    j.shift = cnnb_layer_find_param(l, "biases")->data;
  }
  cnnb_pool_run(net->batch > 1 ? net->pool : NULL, stem_task, &j);
}

/* Layer 1's forward: done by layer 0. */
static void stem_pool_forward(cnnb_layer *l, cnnb_net *net) { (void)l, (void)net; }

static int cfg_is(cnnb_net *net, const cnnb_layer *l, const char *key, int def, int want)
{
  int v;
  return cnnb_cfg_int(&net->cfg, &net->cfg.sec[l->cfg_section], key, def, -(1 << 20), 1 << 20, &v) >= 0 && v == want;
}

int cnnb_stem_install(cnnb_stem *st, cnnb_net *net)
{
  memset(st, 0, sizeof *st);
  const char *env = getenv("CNNB_STEM");
  if ((env && !strcmp(env, "0")) || net->backprop || net->n < 3) return 0;
#ifdef STEM_X86
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
#else
  return 0;
#endif
  cnnb_layer *cv = &net->layers[0], *mp = &net->layers[1];
  const int S = cv->in.h;
  if (strcmp(cv->ops->section, "convolutional") || strcmp(mp->ops->section, "maxpool")) return 0;
  if (cv->in.c != STEM_C || cv->in.w != S || S % 2 || cv->act != CNNB_ACT_LEAKY || cv->out.c != STEM_F) return 0;
  /* 'same' (padding 1) or 'valid' (none), read from the output size: the stride is checked
   * below to be 1 */
  const int same = cv->out.h == S, Wc = same ? S : S - 2;
  if (Wc < STEM_V || cv->out.h != Wc || cv->out.w != Wc) return 0;
  const int bn = cfg_is(net, cv, "batch_normalize", 0, 1);
  if (!bn && !cfg_is(net, cv, "batch_normalize", 0, 0)) return 0;
  const cnnb_param *w = cnnb_layer_find_param(cv, "weights"), *b = cnnb_layer_find_param(cv, "biases");
  if (!w || !b || w->count != (size_t)STEM_F * STEM_C * 9 || b->count != STEM_F || cv->nparam != (bn ? 5 : 2)) return 0;
  static const char *const bnp[] = {"scales", "rolling_mean", "rolling_variance"};
  for (int i = 0; bn && i < 3; i++) {
    const cnnb_param *q = cnnb_layer_find_param(cv, bnp[i]);
    if (!q || q->count != STEM_F) return 0;
  }
  if (!cfg_is(net, cv, "size", 1, 3) || !cfg_is(net, cv, "stride", 1, 1) || !cfg_is(net, cv, "groups", 1, 1) ||
      !cfg_is(net, cv, "dilation", 1, 1))
    return 0;
  if (!cfg_is(net, mp, "size", 1, 2) || !cfg_is(net, mp, "stride", 1, 2) || !cfg_is(net, mp, "stride_x", 2, 2) ||
      !cfg_is(net, mp, "stride_y", 2, 2) || !cfg_is(net, mp, "padding", 1, 1) || !cfg_is(net, mp, "maxpool_depth", 0, 0) ||
      !cfg_is(net, mp, "antialiasing", 0, 0))
    return 0;
  if (mp->input != cv->output || mp->out.c != STEM_F || mp->out.h != Wc / 2 || mp->out.w != Wc / 2) return 0;
  /* layer 0's output is no longer written: no layer after the pool may read it ([route],
   * [shortcut]; every other layer reads only its predecessor) */
  for (int i = 2; i < net->n; i++) {
    int idx[64];
    const cnnb_layer_ops *ops = net->layers[i].ops;
    const int k = ops->sources ? ops->sources(&net->layers[i], idx, 64) : 0;
    for (int m = 0; m < k; m++)
      if (idx[m] == 0) return 0;
  }
  st->pad = same;
  st->bn = bn;
  st->nrows = net->nthreads > 1 ? net->nthreads : 1;
  if (same && !(st->rows = malloc(sizeof(float) * (size_t)st->nrows * STEM_C * 4 * ((size_t)S + 2)))) return 0;
  for (int k = 0; k < 2; k++) {
    st->orig[k] = net->layers[k].ops;
    st->ops[k] = *net->layers[k].ops;
    net->layers[k].ops = &st->ops[k];
  }
  st->ops[0].forward = stem_forward;
  st->ops[1].forward = stem_pool_forward;
  st->on = 1;
  return 1;
}

void cnnb_stem_remove(cnnb_stem *st, cnnb_net *net)
{
  if (!st->on) return;
  for (int k = 0; k < 2; k++) net->layers[k].ops = st->orig[k];
  free(st->rows);
  st->rows = NULL;
  st->on = 0;
}
