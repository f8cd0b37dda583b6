/* Winograd forward convolution, F(2x2,3x3) and F(4x4,3x3) (see winograd.h; Lavin & Gray 2015).
 * Both compute Y = A^T [ (G g G^T) .* (B^T d B) ] A over tiles, with the element-wise products
 * summed over channels as alpha^2 GEMMs (alpha = m + 2 = 4 or 6): U[xi] (F x C) times V[xi]
 * (C x T) for a block of T tiles.
 *   F(2x2,3x3), points 0, 1, -1, inf:
 *     G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *     B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *     A^T = [1 1 1 0; 0 1 -1 -1]
 *   F(4x4,3x3), points 0, 1, -1, 2, -2, inf:
 *     G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 *     B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
 *            0 4 0 -5 0 1]
 *     A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * The tile rows of the whole batch are numbered (sample, tile row) and cut into blocks whose V
 * and M fit the scratch budget, so that each block's GEMMs work on cache-resident operands.
 * Each tile row is transformed as whole rows (down the columns for every x at once, then
 * across), so that the loops run over contiguous floats and vectorise. */
#include "core/winograd.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Scratch per block (V: alpha^2 x C x T, M: alpha^2 x F x T) in floats, and the fewest tiles
 * per block: fewer would make each GEMM re-read the transformed filters for too little work
 * (yolov3-tiny's 512 -> 1024 layer, 32 MiB of them: 64 tiles per block ran 20% slower than
 * 192). */
#ifndef CNNB_WINO_BLOCK_FLOATS
#define CNNB_WINO_BLOCK_FLOATS ((size_t)1 << 20) /* 4 MiB */
#endif
#ifndef CNNB_WINO_MIN_TILES
#define CNNB_WINO_MIN_TILES 192
#endif

struct cnnb_wino {
  int F, C;
  float *wcopy;   /* the weights the U were made from (F x C x 9): compared at every forward */
  float *U[2];    /* [0]: F(2x2,3x3), 16 x F x C; [1]: F(4x4,3x3), 36 x F x C; made when first used */
  int fresh[2];   /* U[i] holds the transform of wcopy */
  int made_b[2];  /* the batch size U[i] was first needed for */
};

/* One scratch (V, M and row buffers of a block) for every layer of the process: the layers run
 * one after another, and per-layer buffers of up to 28 MB each (yolov3-tiny's 512 -> 1024
 * layer) cost ~100 MB of first-touch pages per command. Held under a lock for a whole forward,
 * so that forwards from several threads stay correct (one at a time); freed with the last
 * cache (scratch_users counts them). */
static pthread_mutex_t scratch_lock = PTHREAD_MUTEX_INITIALIZER;
static float *scratch;
static size_t nscratch;
static int scratch_users;

static unsigned long wino_count, wino_count4;

unsigned long cnnb_wino_count(void) { return wino_count; }
unsigned long cnnb_wino_count4(void) { return wino_count4; }

int cnnb_wino_enabled(void)
{
  const char *e = getenv("CNNB_WINOGRAD");
  return !(e && e[0] == '0');
}

int cnnb_wino_worth(int b, int c, int f, int oh, int ow)
{
  /* With few channels the GEMMs' K (= c) is too short for sgemm to run near its peak and the
   * transforms (per channel and per filter) weigh more than the multiplies they save; with
   * few tiles (4x4 maps of one sample) each GEMM is too thin, and on small layers the fixed
   * costs (weight check, transforms' set-up) lose: 32x32 channels on 8x8 maps, batch 8, ran
   * 0.9x, 16x16 channels on 32x32 maps 1.07x, 64x64 channels on 17x17 maps 1.26x. */
  const double tiles = (double)b * ((oh + 1) / 2) * ((ow + 1) / 2);
  return c >= 16 && f >= 16 && tiles >= 64 && (double)b * oh * ow * c * f >= (double)(1 << 20);
}

/* 2 or 4 when CNNB_WINOGRAD forces that tile, else 0. */
static int forced_tile(void)
{
  const char *e = getenv("CNNB_WINOGRAD");
  return e && (e[0] == '2' || e[0] == '4') && e[1] == '\0' ? e[0] - '0' : 0;
}

int cnnb_wino_tile(int b, int c, int f, int oh, int ow)
{
  const int forced = forced_tile();
  if (forced) return forced;
  /* F(4x4,3x3) does 36 multiply-adds per 4x4 tile against 16 per 2x2 tile, but pads the map to
   * a multiple of 4, reads 2.25x the transformed filters, runs 36 thinner GEMMs and transforms
   * rows of fewer tiles. Measured (cnnb-bench-wino, batch 1-64, docs/BENCHMARKS.md item 17):
   * it wins (0.64-0.92x the time of F(2x2,3x3)) where it saves a quarter of the multiply-adds
   * or more, has >= 48 tiles in the batch and >= 4 tiles per row (13x13 and larger maps:
   * yolov3-tiny's layers at batch >= 3, the face descriptor's 35x35 and 17x17); it loses on 3x3
   * to 12x12 maps (1.03-1.6x: 5x5, 6x6, 9x9 and 10x10 save little or nothing, 3x3, 4x4, 12x12
   * have 1-3 tiles per row) and ties at 2 samples of 13x13 (32 tiles). */
  const double t2 = (double)b * ((oh + 1) / 2) * ((ow + 1) / 2), t4 = (double)b * ((oh + 3) / 4) * ((ow + 3) / 4);
  (void)c;
  (void)f;
  return 36 * t4 <= 0.75 * 16 * t2 && t4 >= 48 && (ow + 3) / 4 >= 4 ? 4 : 2;
}

void cnnb_wino_free(cnnb_wino *st)
{
  if (!st) return;
  free(st->wcopy);
  free(st->U[0]);
  free(st->U[1]);
  free(st);
  pthread_mutex_lock(&scratch_lock);
  if (--scratch_users == 0) {
    free(scratch);
    scratch = NULL;
    nscratch = 0;
  }
  pthread_mutex_unlock(&scratch_lock);
}

/* Filters per chunk of the filter transform: each chunk's 3x3 taps are gathered into 9
 * arrays, transformed element-wise over the chunk (vectorised loops), and written as alpha^2
 * runs of contiguous floats. */
#define FT_CHUNK 64

/* G (F(2x2,3x3)) applied element-wise over n filters to the column x0, x1, x2: t0..t3. */
static void g2_cols(int n, const float *restrict x0, const float *restrict x1, const float *restrict x2,
                    float *restrict t0, float *restrict t1, float *restrict t2, float *restrict t3)
{
  for (int i = 0; i < n; i++) {
    t0[i] = x0[i];
    t1[i] = 0.5f * (x0[i] + x1[i] + x2[i]);
    t2[i] = 0.5f * (x0[i] - x1[i] + x2[i]);
    t3[i] = x2[i];
  }
}

/* G (F(4x4,3x3)) likewise: t0..t5. */
static void g4_cols(int n, const float *restrict x0, const float *restrict x1, const float *restrict x2,
                    float *restrict t0, float *restrict t1, float *restrict t2, float *restrict t3,
                    float *restrict t4, float *restrict t5)
{
  for (int i = 0; i < n; i++) {
    const float a = x0[i] + x2[i], b = x0[i] * (1.f / 24) + x2[i] * (1.f / 6), c = x1[i] * (1.f / 12);
    t0[i] = 0.25f * x0[i];
    t1[i] = (a + x1[i]) * (-1.f / 6);
    t2[i] = (a - x1[i]) * (-1.f / 6);
    t3[i] = b + c;
    t4[i] = b - c;
    t5[i] = x2[i];
  }
}

/* G applied to the rows x, x + xs, x + 2 * xs into the rows t, t + ts, ... */
static void g_cols(int four, int n, const float *x, int xs, float *t, int ts)
{
  if (four)
    g4_cols(n, x, x + xs, x + 2 * xs, t, t + ts, t + 2 * ts, t + 3 * ts, t + 4 * ts, t + 5 * ts);
  else
    g2_cols(n, x, x + xs, x + 2 * xs, t, t + ts, t + 2 * ts, t + 3 * ts);
}

/* U[xi][f][c] = (G g G^T)[xi] (xi = row * alpha + column) for the weights g[f][c][3][3]. */
static void filter_transform(const float *w, int F, int C, int four, float *U)
{
  const size_t fc = (size_t)F * C;
  const int alpha = four ? 6 : 4;
  float g[9 * FT_CHUNK], t[6 * 3 * FT_CHUNK], u[36 * FT_CHUNK];
  for (size_t i0 = 0; i0 < fc; i0 += FT_CHUNK) {
    const int n = fc - i0 < FT_CHUNK ? (int)(fc - i0) : FT_CHUNK;
    for (int i = 0; i < n; i++) /* g[tap][i] */
      for (int k = 0; k < 9; k++) g[k * FT_CHUNK + i] = w[(i0 + (size_t)i) * 9 + k];
    for (int k = 0; k < 3; k++) /* t[row][k] = G times column k (taps k, 3 + k, 6 + k) */
      g_cols(four, n, g + k * FT_CHUNK, 3 * FT_CHUNK, t + k * FT_CHUNK, 3 * FT_CHUNK);
    for (int r = 0; r < alpha; r++) /* u[r][col] = row r of t times G^T */
      g_cols(four, n, t + r * 3 * FT_CHUNK, FT_CHUNK, u + r * alpha * FT_CHUNK, FT_CHUNK);
    for (int xi = 0; xi < alpha * alpha; xi++)
      memcpy(U + (size_t)xi * fc + i0, u + xi * FT_CHUNK, (size_t)n * sizeof *u);
  }
}

/* Makes the cache fit F x C and hold a copy of w; when w differs from the copy, the cached
 * transforms are marked stale. 0 or -1 (out of memory). */
static int check_weights(cnnb_wino *st, const float *w, int F, int C)
{
  const size_t n = (size_t)F * C * 9;
  if (!st->wcopy || st->F != F || st->C != C) {
    free(st->wcopy);
    free(st->U[0]);
    free(st->U[1]);
    st->U[0] = st->U[1] = NULL;
    st->fresh[0] = st->fresh[1] = 0;
    if (!(st->wcopy = malloc(n * sizeof *w))) return -1;
    memcpy(st->wcopy, w, n * sizeof *w);
    st->F = F;
    st->C = C;
  } else if (memcmp(st->wcopy, w, n * sizeof *w) != 0) {
    memcpy(st->wcopy, w, n * sizeof *w);
    st->fresh[0] = st->fresh[1] = 0;
  }
  return 0;
}

/* U[which] (0: F(2x2,3x3), 1: F(4x4,3x3)) made from the weights' copy if stale; 0 or -1. */
static int make_filters(cnnb_wino *st, int which, int B)
{
  const int alpha = which ? 6 : 4;
  if (st->fresh[which]) return 0;
  if (!st->U[which] && !(st->U[which] = malloc((size_t)alpha * alpha * st->F * st->C * sizeof(float)))) return -1;
  filter_transform(st->wcopy, st->F, st->C, which, st->U[which]);
  st->fresh[which] = 1;
  st->made_b[which] = B;
  return 0;
}

/* Copies input rows y0 .. y0+n-1 of plane (H x W), shifted right by pad and zero-padded, into
 * d (n rows of wp floats); rows outside the image are zeros. */
static void load_rows(const float *plane, int H, int W, int pad, int y0, int n, int wp, float *d)
{
  const int xa = pad < wp ? pad : wp, xb = W + pad < wp ? W + pad : wp; /* the row's span */
  for (int i = 0; i < n; i++) {
    float *restrict di = d + (size_t)i * wp;
    const int y = y0 + i;
    if (y < 0 || y >= H) {
      for (int x = 0; x < wp; x++) di[x] = 0.f;
      continue;
    }
    const float *restrict src = plane + (size_t)y * W;
    for (int x = 0; x < xa; x++) di[x] = 0.f;
    for (int x = 0; x < xb - xa; x++) di[xa + x] = src[x];
    for (int x = xb > xa ? xb : xa; x < wp; x++) di[x] = 0.f;
  }
}

/* The loops below take their rows as restrict parameters: GCC ignores restrict on pointers
 * declared inside a function and then gives up on vectorising for want of alias checks. */

/* B^T d down the columns of 4 rows (F(2x2,3x3)). */
static void bt4_cols(int n, const float *restrict d0, const float *restrict d1, const float *restrict d2,
                     const float *restrict d3, float *restrict a0, float *restrict a1, float *restrict a2,
                     float *restrict a3)
{
  for (int x = 0; x < n; x++) {
    a0[x] = d0[x] - d2[x];
    a1[x] = d1[x] + d2[x];
    a2[x] = d2[x] - d1[x];
    a3[x] = d1[x] - d3[x];
  }
}

/* (B^T d) B across one row r of 2*tw + 2 floats, into the four positions of tw tiles. */
static void bt4_row(int tw, const float *restrict r, float *restrict v0, float *restrict v1, float *restrict v2,
                    float *restrict v3)
{
  for (int tx = 0; tx < tw; tx++) {
    const float e0 = r[2 * tx], e1 = r[2 * tx + 1], e2 = r[2 * tx + 2], e3 = r[2 * tx + 3];
    v0[tx] = e0 - e2;
    v1[tx] = e1 + e2;
    v2[tx] = e2 - e1;
    v3[tx] = e1 - e3;
  }
}

/* p_j[i] = s[4i + j]: a row split into its four phases, so that F(4x4,3x3)'s tiles (which
 * step by 4) read each of their columns from a contiguous array. */
static void deint4(int n, const float *restrict s, float *restrict p0, float *restrict p1, float *restrict p2,
                   float *restrict p3)
{
  for (int i = 0; i < n; i++) {
    p0[i] = s[4 * i];
    p1[i] = s[4 * i + 1];
    p2[i] = s[4 * i + 2];
    p3[i] = s[4 * i + 3];
  }
}

/* One row of B^T (F(4x4,3x3)) applied to e0..e5, element-wise over n: the outputs k = 0..5. */
static void bt6_cols(int n, const float *restrict e0, const float *restrict e1, const float *restrict e2,
                     const float *restrict e3, const float *restrict e4, const float *restrict e5,
                     float *restrict a0, float *restrict a1, float *restrict a2, float *restrict a3,
                     float *restrict a4, float *restrict a5)
{
  for (int x = 0; x < n; x++) {
    const float s = e4[x] - e2[x], t = 2.f * (e1[x] - e3[x]);
    a0[x] = 4.f * e0[x] - 5.f * e2[x] + e4[x];
    a1[x] = e3[x] + e4[x] - 4.f * (e1[x] + e2[x]);
    a2[x] = e4[x] - e3[x] + 4.f * (e1[x] - e2[x]);
    a3[x] = s - t;
    a4[x] = s + t;
    a5[x] = 4.f * e1[x] - 5.f * e3[x] + e5[x];
  }
}

/* F(2x2,3x3): V[xi][c][j] (leading dimension T) for the nr tile rows r0 .. r0+nr-1 (row r:
 * sample r / th, tile row r % th; tile j = (r - r0)*tw + tx). Each tile row's four input rows
 * are copied with their zero padding, transformed down the columns for the whole row at once,
 * then across. */
static void input_transform2(const float *in, int C, int H, int W, int pad, int th, int tw, size_t r0, int nr,
                             float *V, int T, float *d)
{
  const int wp = 2 * tw + 2;
  const size_t cT = (size_t)C * T;
  float *rr = d + 4 * (size_t)wp;
  for (int c = 0; c < C; c++)
    for (int q = 0; q < nr; q++) {
      const size_t r = r0 + (size_t)q, b = r / (size_t)th;
      const int ty = (int)(r % (size_t)th);
      load_rows(in + (b * C + c) * (size_t)H * W, H, W, pad, 2 * ty - pad, 4, wp, d);
      bt4_cols(wp, d, d + wp, d + 2 * wp, d + 3 * wp, rr, rr + wp, rr + 2 * wp, rr + 3 * wp);
      for (int i = 0; i < 4; i++) {
        float *v = V + (size_t)(i * 4) * cT + (size_t)c * T + (size_t)q * tw;
        bt4_row(tw, rr + (size_t)i * wp, v, v + cT, v + 2 * cT, v + 3 * cT);
      }
    }
}

/* F(4x4,3x3): as input_transform2 with 6x6 tiles that step by 4. The six input rows (4n
 * floats each, n = tw + 1, zero-padded) are split into their four phases, so that column
 * 4*tx + j of a row is phase j's element tx (and column 4*tx + 4 + j phase j's tx + 1);
 * then B^T down the columns (element-wise over the rows) and across (element-wise over the
 * phases) are both contiguous loops. */
static void input_transform4(const float *in, int C, int H, int W, int pad, int th, int tw, size_t r0, int nr,
                             float *V, int T, float *d)
{
  const int n = tw + 1, wp = 4 * n;
  const size_t cT = (size_t)C * T;
  float *ph = d + 6 * (size_t)wp, *rr = ph + 6 * (size_t)wp;
  for (int c = 0; c < C; c++)
    for (int q = 0; q < nr; q++) {
      const size_t r = r0 + (size_t)q, b = r / (size_t)th;
      const int ty = (int)(r % (size_t)th);
      load_rows(in + (b * C + c) * (size_t)H * W, H, W, pad, 4 * ty - pad, 6, wp, d);
      for (int i = 0; i < 6; i++) {
        float *p = ph + (size_t)i * wp;
        deint4(n, d + (size_t)i * wp, p, p + n, p + 2 * n, p + 3 * n);
      }
      bt6_cols(wp, ph, ph + wp, ph + 2 * wp, ph + 3 * wp, ph + 4 * wp, ph + 5 * wp, rr, rr + wp, rr + 2 * wp,
               rr + 3 * wp, rr + 4 * wp, rr + 5 * wp);
      for (int i = 0; i < 6; i++) { /* across: e_j = phase j (j < 4), e_4, e_5 = phases 0, 1 one tile on */
        const float *p = rr + (size_t)i * wp;
        float *v = V + (size_t)(i * 6) * cT + (size_t)c * T + (size_t)q * tw;
        bt6_cols(tw, p, p + n, p + 2 * n, p + 3 * n, p + 1, p + n + 1, v, v + cT, v + 2 * cT, v + 3 * cT, v + 4 * cT,
                 v + 5 * cT);
      }
    }
}

/* A^T m A for one tile row of F(2x2,3x3): m + xi*ld is position xi of its tw tiles; the four
 * outputs of tile tx go to y00[tx], y01[tx] (top row), y10[tx], y11[tx]. */
static void output_row2(const float *m, size_t ld, int tw, float *restrict y00, float *restrict y01,
                        float *restrict y10, float *restrict y11)
{
  const float *restrict m0 = m, *restrict m1 = m + ld, *restrict m2 = m + 2 * ld, *restrict m3 = m + 3 * ld;
  const float *restrict m4 = m + 4 * ld, *restrict m5 = m + 5 * ld, *restrict m6 = m + 6 * ld;
  const float *restrict m7 = m + 7 * ld, *restrict m8 = m + 8 * ld, *restrict m9 = m + 9 * ld;
  const float *restrict m10 = m + 10 * ld, *restrict m11 = m + 11 * ld, *restrict m12 = m + 12 * ld;
  const float *restrict m13 = m + 13 * ld, *restrict m14 = m + 14 * ld, *restrict m15 = m + 15 * ld;
  for (int tx = 0; tx < tw; tx++) {
    /* A^T m: column k of the 4x4 tile is m_k, m_4+k, m_8+k, m_12+k */
    const float a0 = m0[tx] + m4[tx] + m8[tx], a1 = m1[tx] + m5[tx] + m9[tx];
    const float a2 = m2[tx] + m6[tx] + m10[tx], a3 = m3[tx] + m7[tx] + m11[tx];
    const float c0 = m4[tx] - m8[tx] - m12[tx], c1 = m5[tx] - m9[tx] - m13[tx];
    const float c2 = m6[tx] - m10[tx] - m14[tx], c3 = m7[tx] - m11[tx] - m15[tx];
    y00[tx] = a0 + a1 + a2; /* (A^T m) A */
    y01[tx] = a1 - a2 - a3;
    y10[tx] = c0 + c1 + c2;
    y11[tx] = c1 - c2 - c3;
  }
}

/* The epilogue (cnnb_wino_ep) of filter f over the output rows that tile rows r0..r0+nr-1 of
 * m x m tiles wrote, while they are in cache: one call per run of rows in one output plane
 * (the block may span samples), not one per row (13-float rows made the calls cost more than
 * the arithmetic). */
static void ep_block(const cnnb_wino_ep *ep, int f, float *out, int F, int oh, int ow, int th, int m, size_t r0,
                     int nr)
{
  const float a = ep->scale ? ep->scale[f] : 1.f, c = ep->shift ? ep->shift[f] : 0.f;
  for (int q = 0; q < nr;) {
    const size_t b = (r0 + (size_t)q) / (size_t)th;
    const int ty = (int)((r0 + (size_t)q) % (size_t)th);
    const int k = th - ty < nr - q ? th - ty : nr - q; /* tile rows left in this plane */
    const int y0 = m * ty, y1 = m * (ty + k) < oh ? m * (ty + k) : oh;
    cnnb_act_affine(ep->act, out + ((b * (size_t)F + (size_t)f) * oh + (size_t)y0) * ow, (size_t)(y1 - y0) * ow, a, c);
    q += k;
  }
}

/* F(2x2,3x3): the 2x2 output tiles of tile rows r0 .. r0+nr-1 from M[xi][f][j] (leading
 * dimension T). For each filter, A^T m A of all n = nr*tw tiles of the block at once (a tile
 * row's tiles are contiguous in M, and so are consecutive tile rows): four arrays of n floats
 * (o: 4*n), then interleaved row by row into the output without the odd column or row past the
 * edge; separate loops, so that the first one runs long and vectorises. */
static void output_transform2(const float *M, int F, int oh, int ow, int th, int tw, size_t r0, int nr, int T,
                              float *out, float *o, const cnnb_wino_ep *ep)
{
  const size_t fT = (size_t)F * T, ohw = (size_t)oh * ow, n = (size_t)nr * tw;
  float *restrict y00 = o, *restrict y01 = o + n, *restrict y10 = o + 2 * n, *restrict y11 = o + 3 * n;
  const int half = ow / 2;
  for (int f = 0; f < F; f++) {
    output_row2(M + (size_t)f * T, fT, (int)n, y00, y01, y10, y11);
    for (int q = 0; q < nr; q++) {
      const size_t r = r0 + (size_t)q, b = r / (size_t)th, j = (size_t)q * tw;
      const int ty = (int)(r % (size_t)th);
      float *restrict dst = out + (b * F + f) * ohw + (size_t)(2 * ty) * ow;
      for (int tx = 0; tx < half; tx++) {
        dst[2 * tx] = y00[j + tx];
        dst[2 * tx + 1] = y01[j + tx];
      }
      if (ow & 1) dst[ow - 1] = y00[j + tw - 1];
      if (2 * ty + 1 < oh) {
        dst += ow;
        for (int tx = 0; tx < half; tx++) {
          dst[2 * tx] = y10[j + tx];
          dst[2 * tx + 1] = y11[j + tx];
        }
        if (ow & 1) dst[ow - 1] = y10[j + tw - 1];
      }
    }
    if (ep) ep_block(ep, f, out, F, oh, ow, th, 2, r0, nr);
  }
}

/* One row of A^T (F(4x4,3x3)) applied to m0..m5, element-wise over n: the outputs 0..3. */
static void at6_cols(int n, const float *restrict m0, const float *restrict m1, const float *restrict m2,
                     const float *restrict m3, const float *restrict m4, const float *restrict m5,
                     float *restrict t0, float *restrict t1, float *restrict t2, float *restrict t3)
{
  for (int x = 0; x < n; x++) {
    const float s12 = m1[x] + m2[x], d12 = m1[x] - m2[x];
    const float s34 = m3[x] + m4[x], d34 = m3[x] - m4[x];
    t0[x] = m0[x] + s12 + s34;
    t1[x] = d12 + 2.f * d34;
    t2[x] = s12 + 4.f * s34;
    t3[x] = d12 + 8.f * d34 + m5[x];
  }
}

/* The same across: the four outputs of tile tx to dst[4*tx .. 4*tx + 3], for n whole tiles. */
static void at6_row(int n, const float *restrict e0, const float *restrict e1, const float *restrict e2,
                    const float *restrict e3, const float *restrict e4, const float *restrict e5,
                    float *restrict dst)
{
  for (int tx = 0; tx < n; tx++) {
    const float s12 = e1[tx] + e2[tx], d12 = e1[tx] - e2[tx];
    const float s34 = e3[tx] + e4[tx], d34 = e3[tx] - e4[tx];
    dst[4 * tx] = e0[tx] + s12 + s34;
    dst[4 * tx + 1] = d12 + 2.f * d34;
    dst[4 * tx + 2] = s12 + 4.f * s34;
    dst[4 * tx + 3] = d12 + 8.f * d34 + e5[tx];
  }
}

/* F(4x4,3x3): the 4x4 output tiles of tile rows r0 .. r0+nr-1 from M[xi][f][j]. For each
 * filter, first A^T m down the columns for all n = nr*tw tiles of the block at once (t: 4 x 6
 * arrays of n floats; one long loop per column, however few tiles a row has), then across,
 * four outputs per tile straight into each output row; the last tile's columns and the last
 * tile row's rows past the edge are dropped. */
static void output_transform4(const float *M, int F, int oh, int ow, int th, int tw, size_t r0, int nr, int T,
                              float *out, float *t, const cnnb_wino_ep *ep)
{
  const size_t fT = (size_t)F * T, ohw = (size_t)oh * ow, n = (size_t)nr * tw, n6 = 6 * n;
  const int full = ow / 4, rem = ow - 4 * full;
  for (int f = 0; f < F; f++) {
    const float *m = M + (size_t)f * T;
    for (int k = 0; k < 6; k++) { /* column k of the 6x6 tiles is m_k, m_6+k, ..., m_30+k */
      const float *mk = m + (size_t)k * fT;
      float *tk = t + (size_t)k * n;
      at6_cols((int)n, mk, mk + 6 * fT, mk + 12 * fT, mk + 18 * fT, mk + 24 * fT, mk + 30 * fT, tk, tk + n6,
               tk + 2 * n6, tk + 3 * n6);
    }
    for (int q = 0; q < nr; q++) {
      const size_t r = r0 + (size_t)q, b = r / (size_t)th;
      const int ty = (int)(r % (size_t)th);
      float *plane = out + (b * F + f) * ohw;
      for (int i = 0; i < 4 && 4 * ty + i < oh; i++) { /* across */
        const float *e = t + (size_t)i * n6 + (size_t)q * tw;
        float *dst = plane + (size_t)(4 * ty + i) * ow;
        at6_row(full, e, e + n, e + 2 * n, e + 3 * n, e + 4 * n, e + 5 * n, dst);
        if (rem) {
          float y[4];
          at6_row(1, e + full, e + n + full, e + 2 * n + full, e + 3 * n + full, e + 4 * n + full,
                  e + 5 * n + full, y);
          for (int j = 0; j < rem; j++) dst[4 * full + j] = y[j];
        }
      }
    }
    if (ep) ep_block(ep, f, out, F, oh, ow, th, 4, r0, nr);
  }
}

int cnnb_wino_forward_tile(cnnb_wino **stp, int m, const float *weights, int F, int C, const float *in, int B,
                           int H, int W, int pad, float *out)
{
  return cnnb_wino_forward_ep(stp, m, weights, F, C, in, B, H, W, pad, out, NULL);
}

int cnnb_wino_forward_ep(cnnb_wino **stp, int m, const float *weights, int F, int C, const float *in, int B,
                         int H, int W, int pad, float *out, const cnnb_wino_ep *ep)
{
  const int oh = H + 2 * pad - 2, ow = W + 2 * pad - 2;
  if (oh < 1 || ow < 1 || B < 1 || F < 1 || C < 1) return -1;
  if (!*stp) {
    if (!(*stp = calloc(1, sizeof **stp))) return -1;
    pthread_mutex_lock(&scratch_lock);
    scratch_users++;
    pthread_mutex_unlock(&scratch_lock);
  }
  cnnb_wino *st = *stp;
  if (check_weights(st, weights, F, C) < 0) return -1;
  if (m != 2 && m != 4) {
    m = cnnb_wino_tile(B, C, F, oh, ow);
    /* A batch no larger than the one the other tile's filters were made for (the last,
     * partial batch of a run) keeps that tile: transforming all the filters again costs more
     * than what the better tile would save on it. */
    const int want = m == 4;
    if (!forced_tile() && !st->fresh[want] && st->fresh[!want] && B <= st->made_b[!want]) m = want ? 2 : 4;
  }
  const int four = m == 4, alpha = m + 2, P = alpha * alpha;
  if (make_filters(st, four, B) < 0) return -1;
  const int th = (oh + m - 1) / m, tw = (ow + m - 1) / m;
  const size_t rows = (size_t)B * th; /* tile rows of the batch */
  /* whole tile rows per block, at least CNNB_WINO_MIN_TILES tiles, within the budget */
  size_t R = CNNB_WINO_BLOCK_FLOATS / ((size_t)P * (C + F) * tw);
  if (R * tw < CNNB_WINO_MIN_TILES) R = (CNNB_WINO_MIN_TILES + tw - 1) / tw;
  if (R > rows) R = rows;
  /* row buffers: input rows, their phases and their column transform (3 x alpha rows of at
   * most 4 * (tw + 1) floats), or the output's 4 x 6 (2x2: 4) arrays of a block's tiles */
  const size_t T = R * tw, row_buf = 3 * (size_t)alpha * 4 * ((size_t)tw + 1) + 24 * T;
  const size_t need = (size_t)P * (C + F) * T + row_buf;
  pthread_mutex_lock(&scratch_lock);
  if (nscratch < need) {
    free(scratch);
    nscratch = 0;
    if (!(scratch = malloc(need * sizeof(float)))) {
      pthread_mutex_unlock(&scratch_lock);
      return -1;
    }
    nscratch = need;
  }
  float *V = scratch, *M = scratch + (size_t)P * C * T, *buf = M + (size_t)P * F * T;
  const float *U = st->U[four];
  const size_t fc = (size_t)F * C;
  for (size_t r0 = 0; r0 < rows; r0 += R) {
    const int nr = (int)(rows - r0 < R ? rows - r0 : R), n = nr * tw;
    if (four)
      input_transform4(in, C, H, W, pad, th, tw, r0, nr, V, (int)T, buf);
    else
      input_transform2(in, C, H, W, pad, th, tw, r0, nr, V, (int)T, buf);
    for (int xi = 0; xi < P; xi++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, n, C, 1.f, U + xi * fc, C, V + (size_t)xi * C * T,
                  (int)T, 0.f, M + (size_t)xi * F * T, (int)T);
    if (four)
      output_transform4(M, F, oh, ow, th, tw, r0, nr, (int)T, out, buf, ep);
    else
      output_transform2(M, F, oh, ow, th, tw, r0, nr, (int)T, out, buf, ep);
  }
  pthread_mutex_unlock(&scratch_lock);
  wino_count++;
  wino_count4 += (unsigned long)four;
  return 0;
}

int cnnb_wino_forward(cnnb_wino **st, const float *weights, int F, int C, const float *in, int B, int H, int W,
                      int pad, float *out)
{
  return cnnb_wino_forward_tile(st, 0, weights, F, C, in, B, H, W, pad, out);
}
