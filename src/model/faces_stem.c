/* The face detector's fused stem: 3x3 conv 3 -> 16 ('valid', bias, leaky) + 2x2/2 max pool
 * (src/model/faces_stem.h). */
#include "model/faces_stem.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define STEM_X86 1
#endif

enum { STEM_C = 3, STEM_F = 16, STEM_FG = 4, STEM_V = 8 }; /* channels, filters, filters per pass, lanes */

#ifdef STEM_X86
/* One sample: x is 3 x S x S, w 16 x 3 x 3 x 3, out 16 x P x P with P = (S - 2) / 2. For each
 * pooled row, conv rows 2py and 2py + 1 are computed in strips of 8 columns (x0 even) for 4
 * filters at a time (8 accumulators in registers, the taps in the order c, ky, kx as the
 * GEMM's k); then in registers the max of the two rows, of each column pair, + bias, leaky,
 * and the 4 pooled values are stored. */
__attribute__((target("avx2,fma"))) static void stem_avx2(const float *x, int S, const float *w, const float *bias,
                                                          float *out)
{
  const int Wc = S - 2, P = Wc / 2;
  const size_t plane = (size_t)S * S, oplane = (size_t)P * P;
  const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
  const __m128 slope = _mm_set1_ps(0.1f), zero = _mm_setzero_ps();
  for (int py = 0; py < P; py++) {
    const float *rows = x + (size_t)(2 * py) * S; /* input rows 2py .. 2py + 3 */
    for (int fg = 0; fg < STEM_F; fg += STEM_FG) {
      const float *wf = w + (size_t)fg * STEM_C * 9;
      for (int xs = 0; xs < Wc; xs += STEM_V) {
        /* the last strip overlaps the one before (Wc is even, so x0 stays even): same values */
        const int x0 = xs + STEM_V <= Wc ? xs : Wc - STEM_V;
        __m256 a0[STEM_FG], a1[STEM_FG]; /* conv row 2py and 2py + 1 */
        for (int f = 0; f < STEM_FG; f++) a0[f] = a1[f] = _mm256_setzero_ps();
        for (int c = 0; c < STEM_C; c++) {
          const float *in = rows + c * plane + x0;
          const float *wc = wf + c * 9;
          for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++) {
              /* tap (ky, kx) reads input row ky for conv row 0 and row ky + 1 for conv row 1 */
              const __m256 v0 = _mm256_loadu_ps(in + (size_t)ky * S + kx);
              const __m256 v1 = _mm256_loadu_ps(in + (size_t)(ky + 1) * S + kx);
              for (int f = 0; f < STEM_FG; f++) {
                const __m256 wv = _mm256_broadcast_ss(wc + (size_t)f * STEM_C * 9 + ky * 3 + kx);
                a0[f] = _mm256_fmadd_ps(wv, v0, a0[f]);
                a1[f] = _mm256_fmadd_ps(wv, v1, a1[f]);
              }
            }
        }
        for (int f = 0; f < STEM_FG; f++) {
          const __m256 v = _mm256_max_ps(a0[f], a1[f]);
          const __m256 p = _mm256_max_ps(v, _mm256_permute_ps(v, 0xB1)); /* pairs (0,1), (2,3), ... */
          const __m128 m = _mm_add_ps(_mm256_castps256_ps128(_mm256_permutevar8x32_ps(p, even)),
                                      _mm_set1_ps(bias[fg + f]));
          /* Darknet's leaky, as cnnb_act_forward: x > 0 ? x : 0.1 x */
          const __m128 y = _mm_blendv_ps(_mm_mul_ps(slope, m), m, _mm_cmpgt_ps(m, zero));
          _mm_storeu_ps(out + (fg + f) * oplane + (size_t)py * P + x0 / 2, y);
        }
      }
    }
  }
}
#endif

/* Layer 0's forward: the whole stem, written into layer 1's output; layer 0's own output stays
 * unwritten (no other layer reads it: checked at install). */
static void stem_forward(cnnb_layer *l, cnnb_net *net)
{
#ifdef STEM_X86
  cnnb_layer *pool = &net->layers[l->index + 1];
  const int S = l->in.h;
  const float *w = cnnb_layer_find_param(l, "weights")->data, *b = cnnb_layer_find_param(l, "biases")->data;
  const size_t in_sz = cnnb_shape_size(l->in), out_sz = cnnb_shape_size(pool->out);
  for (int s = 0; s < net->batch; s++) stem_avx2(l->input + s * in_sz, S, w, b, pool->output + s * out_sz);
#else
  (void)l, (void)net; /* never installed */
#endif
}

/* Layer 1's forward: done by layer 0. */
static void stem_pool_forward(cnnb_layer *l, cnnb_net *net) { (void)l, (void)net; }

static int cfg_is(cnnb_net *net, const cnnb_layer *l, const char *key, int def, int want)
{
  int v;
  return cnnb_cfg_int(&net->cfg, &net->cfg.sec[l->cfg_section], key, def, -(1 << 20), 1 << 20, &v) >= 0 && v == want;
}

int cnnb_faces_stem_install(cnnb_faces_stem *st, cnnb_net *net)
{
  memset(st, 0, sizeof *st);
  const char *env = getenv("CNNB_FACES_STEM");
  if ((env && !strcmp(env, "0")) || net->train || net->n < 3) return 0;
#ifdef STEM_X86
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
#else
  return 0;
#endif
  cnnb_layer *cv = &net->layers[0], *mp = &net->layers[1];
  const int S = cv->in.h;
  if (strcmp(cv->ops->section, "convolutional") || strcmp(mp->ops->section, "maxpool")) return 0;
  if (cv->in.c != STEM_C || cv->in.w != S || S < 2 + 2 * STEM_V || S % 2 || cv->act != CNNB_ACT_LEAKY) return 0;
  if (cv->out.c != STEM_F || cv->out.h != S - 2 || cv->out.w != S - 2) return 0;
  const cnnb_param *w = cnnb_layer_find_param(cv, "weights"), *b = cnnb_layer_find_param(cv, "biases");
  if (cv->nparam != 2 || !w || !b || w->count != (size_t)STEM_F * STEM_C * 9 || b->count != STEM_F) return 0;
  if (!cfg_is(net, cv, "size", 1, 3) || !cfg_is(net, cv, "stride", 1, 1) || !cfg_is(net, cv, "pad", 0, 0) ||
      !cfg_is(net, cv, "padding", 0, 0) || !cfg_is(net, cv, "groups", 1, 1) || !cfg_is(net, cv, "batch_normalize", 0, 0))
    return 0;
  if (!cfg_is(net, mp, "size", 1, 2) || !cfg_is(net, mp, "stride", 1, 2) || !cfg_is(net, mp, "stride_x", 2, 2) ||
      !cfg_is(net, mp, "stride_y", 2, 2) || !cfg_is(net, mp, "padding", 1, 1) || !cfg_is(net, mp, "maxpool_depth", 0, 0) ||
      !cfg_is(net, mp, "antialiasing", 0, 0))
    return 0;
  if (mp->input != cv->output || mp->out.c != STEM_F || mp->out.h != (S - 2) / 2 || mp->out.w != (S - 2) / 2) return 0;
  /* layer 0's output is no longer written: only a chain of convolutions and pools may follow,
   * each reading its predecessor (no [route] or [shortcut] that could read layer 0) */
  for (int i = 2; i < net->n; i++) {
    const char *k = net->layers[i].ops->section;
    if (strcmp(k, "convolutional") && strcmp(k, "maxpool") && strcmp(k, "region")) return 0;
    if (net->layers[i].input != net->layers[i - 1].output) return 0;
  }
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

void cnnb_faces_stem_remove(cnnb_faces_stem *st, cnnb_net *net)
{
  if (!st->on) return;
  for (int k = 0; k < 2; k++) net->layers[k].ops = st->orig[k];
  st->on = 0;
}
