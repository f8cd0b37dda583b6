/* Winograd F(2x2,3x3) forward convolution (see winograd.h; Lavin & Gray 2015's matrices):
 *   filter  U = G g G^T,   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   input   V = B^T d B,   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   output  Y = A^T M A,   A^T = [1 1 1 0; 0 1 -1 -1]
 * with M[xi] = sum over channels of U[xi] * V[xi] for each of the 16 positions xi of the 4x4
 * tile: 16 GEMMs, U[xi] (F x C) times V[xi] (C x T) for a block of T tiles. The tile rows of
 * the whole batch are numbered (sample, tile row) and cut into blocks whose V and M fit the
 * scratch budget, so that each block's GEMMs work on cache-resident operands. */
#include "core/winograd.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

/* Scratch per block (V: 16 x C x T, M: 16 x F x T) in floats, and the fewest tiles per block:
 * fewer would make each GEMM re-read the transformed filters for too little work (yolov3-tiny's
 * 512 -> 1024 layer, 32 MiB of them: 64 tiles per block ran 20% slower than 192). */
#ifndef CNNB_WINO_BLOCK_FLOATS
#define CNNB_WINO_BLOCK_FLOATS ((size_t)1 << 20) /* 4 MiB */
#endif
#ifndef CNNB_WINO_MIN_TILES
#define CNNB_WINO_MIN_TILES 192
#endif

struct cnnb_wino {
  int F, C;
  float *wcopy;   /* the weights U was made from (F x C x 9): compared at every forward */
  float *U;       /* 16 x F x C */
  float *scratch; /* V then M for one block */
  size_t nscratch;
};

static unsigned long wino_count;

unsigned long cnnb_wino_count(void) { return wino_count; }

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

void cnnb_wino_free(cnnb_wino *st)
{
  if (!st) return;
  free(st->wcopy);
  free(st->U);
  free(st->scratch);
  free(st);
}

/* U[xi][f][c] from the weights g[f][c][3][3]. */
static void filter_transform(const float *w, int F, int C, float *U)
{
  const size_t fc = (size_t)F * C;
  for (size_t i = 0; i < fc; i++) {
    const float *g = w + i * 9;
    float t[4][3], u[16];
    for (int k = 0; k < 3; k++) { /* t = G g */
      t[0][k] = g[k];
      t[1][k] = 0.5f * (g[k] + g[3 + k] + g[6 + k]);
      t[2][k] = 0.5f * (g[k] - g[3 + k] + g[6 + k]);
      t[3][k] = g[6 + k];
    }
    for (int r = 0; r < 4; r++) { /* u = t G^T */
      u[r * 4 + 0] = t[r][0];
      u[r * 4 + 1] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
      u[r * 4 + 2] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
      u[r * 4 + 3] = t[r][2];
    }
    for (int xi = 0; xi < 16; xi++) U[xi * fc + i] = u[xi];
  }
}

/* Makes the cache fit F x C and hold the transform of w; 0 or -1 (out of memory). */
static int ensure_filters(cnnb_wino *st, const float *w, int F, int C)
{
  const size_t n = (size_t)F * C * 9;
  if (st->wcopy && st->F == F && st->C == C && memcmp(st->wcopy, w, n * sizeof *w) == 0) return 0;
  if (!st->wcopy || st->F != F || st->C != C) {
    free(st->wcopy);
    free(st->U);
    st->wcopy = malloc(n * sizeof *w);
    st->U = malloc((size_t)16 * F * C * sizeof(float));
    if (!st->wcopy || !st->U) {
      free(st->wcopy);
      free(st->U);
      st->wcopy = st->U = NULL;
      return -1;
    }
    st->F = F;
    st->C = C;
  }
  memcpy(st->wcopy, w, n * sizeof *w);
  filter_transform(w, F, C, st->U);
  return 0;
}

/* V[xi][c][j] (leading dimension T) for the nr tile rows r0 .. r0+nr-1 (row r: sample r / th,
 * tile row r % th; tile j = (r - r0)*tw + tx). Each tile row's four input rows are copied with
 * their zero padding into d (4 x wp floats), transformed down the columns for the whole row at
 * once, then across in steps of 2: loops over whole rows, so that they vectorise. */
static void input_transform(const float *in, int C, int H, int W, int pad, int th, int tw, size_t r0, int nr,
                            float *V, int T, float *d)
{
  const int wp = 2 * tw + 2;
  const size_t cT = (size_t)C * T;
  float *rr = d + 4 * (size_t)wp;
  for (int c = 0; c < C; c++)
    for (int q = 0; q < nr; q++) {
      const size_t r = r0 + (size_t)q, b = r / (size_t)th;
      const int ty = (int)(r % (size_t)th);
      const float *plane = in + (b * C + c) * (size_t)H * W;
      for (int i = 0; i < 4; i++) {
        float *di = d + (size_t)i * wp;
        const int y = 2 * ty - pad + i;
        if (y < 0 || y >= H) {
          for (int x = 0; x < wp; x++) di[x] = 0.f;
          continue;
        }
        const float *restrict src = plane + (size_t)y * W;
        const int xa = pad < wp ? pad : wp, xb = W + pad < wp ? W + pad : wp; /* the row's span */
        for (int x = 0; x < xa; x++) di[x] = 0.f;
        for (int x = 0; x < xb - xa; x++) di[xa + x] = src[x];
        for (int x = xb > xa ? xb : xa; x < wp; x++) di[x] = 0.f;
      }
      {
        const float *restrict d0 = d, *restrict d1 = d + wp, *restrict d2 = d + 2 * wp, *restrict d3 = d + 3 * wp;
        float *restrict a0 = rr, *restrict a1 = rr + wp, *restrict a2 = rr + 2 * wp, *restrict a3 = rr + 3 * wp;
        for (int x = 0; x < wp; x++) { /* B^T d down the columns */
          a0[x] = d0[x] - d2[x];
          a1[x] = d1[x] + d2[x];
          a2[x] = d2[x] - d1[x];
          a3[x] = d1[x] - d3[x];
        }
      }
      for (int i = 0; i < 4; i++) { /* (B^T d) B across, four tiles' worth of columns per step */
        const float *restrict ri = rr + (size_t)i * wp;
        float *restrict v0 = V + (size_t)(i * 4 + 0) * cT + (size_t)c * T + (size_t)q * tw;
        float *restrict v1 = v0 + cT, *restrict v2 = v0 + 2 * cT, *restrict v3 = v0 + 3 * cT;
        for (int tx = 0; tx < tw; tx++) {
          const float e0 = ri[2 * tx], e1 = ri[2 * tx + 1], e2 = ri[2 * tx + 2], e3 = ri[2 * tx + 3];
          v0[tx] = e0 - e2;
          v1[tx] = e1 + e2;
          v2[tx] = e2 - e1;
          v3[tx] = e1 - e3;
        }
      }
    }
}

/* A^T m A for one tile row: m + xi*ld is position xi of its tw tiles; the four outputs of tile
 * tx go to y00[tx], y01[tx] (top row), y10[tx], y11[tx]. */
static void output_row(const float *m, size_t ld, int tw, float *restrict y00, float *restrict y01,
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

/* The 2x2 output tiles of tile rows r0 .. r0+nr-1 from M[xi][f][j] (leading dimension T): each
 * tile row's four outputs per tile go to four arrays of tw floats (o: 4*tw), then interleaved
 * into the output's two rows without the odd column or row past the edge; separate loops, so
 * that the first one vectorises. */
static void output_transform(const float *M, int F, int oh, int ow, int th, int tw, size_t r0, int nr, int T,
                             float *out, float *o)
{
  const size_t fT = (size_t)F * T, ohw = (size_t)oh * ow;
  float *restrict y00 = o, *restrict y01 = o + tw, *restrict y10 = o + 2 * (size_t)tw,
                  *restrict y11 = o + 3 * (size_t)tw;
  for (int f = 0; f < F; f++)
    for (int q = 0; q < nr; q++) {
      const size_t r = r0 + (size_t)q, b = r / (size_t)th;
      const int ty = (int)(r % (size_t)th);
      output_row(M + (size_t)f * T + (size_t)q * tw, fT, tw, y00, y01, y10, y11);
      float *restrict dst = out + (b * F + f) * ohw + (size_t)(2 * ty) * ow;
      const int half = ow / 2;
      for (int tx = 0; tx < half; tx++) {
        dst[2 * tx] = y00[tx];
        dst[2 * tx + 1] = y01[tx];
      }
      if (ow & 1) dst[ow - 1] = y00[tw - 1];
      if (2 * ty + 1 < oh) {
        dst += ow;
        for (int tx = 0; tx < half; tx++) {
          dst[2 * tx] = y10[tx];
          dst[2 * tx + 1] = y11[tx];
        }
        if (ow & 1) dst[ow - 1] = y10[tw - 1];
      }
    }
}

int cnnb_wino_forward(cnnb_wino **stp, const float *weights, int F, int C, const float *in, int B, int H,
                      int W, int pad, float *out)
{
  const int oh = H + 2 * pad - 2, ow = W + 2 * pad - 2;
  if (oh < 1 || ow < 1 || B < 1) return -1;
  if (!*stp && !(*stp = calloc(1, sizeof **stp))) return -1;
  cnnb_wino *st = *stp;
  if (ensure_filters(st, weights, F, C) < 0) return -1;
  const int th = (oh + 1) / 2, tw = (ow + 1) / 2;
  const size_t rows = (size_t)B * th; /* tile rows of the batch */
  /* whole tile rows per block, at least CNNB_WINO_MIN_TILES tiles, within the budget */
  size_t R = CNNB_WINO_BLOCK_FLOATS / ((size_t)16 * (C + F) * tw);
  if (R * tw < CNNB_WINO_MIN_TILES) R = (CNNB_WINO_MIN_TILES + tw - 1) / tw;
  if (R > rows) R = rows;
  const size_t T = R * tw, row_buf = 8 * ((size_t)2 * tw + 2);
  const size_t need = (size_t)16 * (C + F) * T + row_buf;
  if (st->nscratch < need) {
    free(st->scratch);
    st->nscratch = 0;
    if (!(st->scratch = malloc(need * sizeof(float)))) return -1;
    st->nscratch = need;
  }
  float *V = st->scratch, *M = st->scratch + (size_t)16 * C * T, *buf = M + (size_t)16 * F * T;
  const size_t fc = (size_t)F * C;
  for (size_t r0 = 0; r0 < rows; r0 += R) {
    const int nr = (int)(rows - r0 < R ? rows - r0 : R), n = nr * tw;
    input_transform(in, C, H, W, pad, th, tw, r0, nr, V, (int)T, buf);
    for (int xi = 0; xi < 16; xi++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, n, C, 1.f, st->U + xi * fc, C,
                  V + (size_t)xi * C * T, (int)T, 0.f, M + (size_t)xi * F * T, (int)T);
    output_transform(M, F, oh, ow, th, tw, r0, nr, (int)T, out, buf);
  }
  wino_count++;
  return 0;
}
