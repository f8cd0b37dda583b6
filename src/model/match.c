/* Matching embeddings (cnnb/match.h): SHA-256 model hashes, sgemm distances, top-K lists, LFW
 * pairs files and the 10-fold verification protocol. */
#include "cnnb/match.h"

#include <cblas.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnnb/error.h"

/* ---- SHA-256 ---- */
static const uint32_t K256[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
  0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
  0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
  0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
  0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
  0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
  0xc67178f2};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha_block(uint32_t h[8], const unsigned char *p)
{
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
    uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CNNB_SHA_NI 1
/* The same compression with the SHA extensions (Intel SHA-NI, AMD Zen): about ten times the
 * portable code, which matters for hashing weights files of tens of MB at every job start.
 * State kept as (A,B,E,F) and (C,D,G,H), the layout sha256rnds2 works on. */
__attribute__((target("sha,sse4.1,ssse3"))) static void sha_blocks_ni(uint32_t h[8], const unsigned char *p,
                                                                        size_t nblocks)
{
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
  __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1); /* C D A B */
  __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B); /* H G F E -> E F G H */
  __m128i s0 = _mm_alignr_epi8(t, s1, 8);   /* A B E F */
  s1 = _mm_blend_epi16(s1, t, 0xF0);        /* C D G H */
  for (; nblocks > 0; nblocks--, p += 64) {
    __m128i w[16], abef = s0, cdgh = s1;
    for (int j = 0; j < 4; j++) w[j] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * j)), bswap);
    for (int j = 4; j < 16; j++) {
      __m128i m = _mm_add_epi32(_mm_sha256msg1_epu32(w[j - 4], w[j - 3]), _mm_alignr_epi8(w[j - 1], w[j - 2], 4));
      w[j] = _mm_sha256msg2_epu32(m, w[j - 1]);
    }
    for (int j = 0; j < 16; j++) {
      __m128i m = _mm_add_epi32(w[j], _mm_loadu_si128((const __m128i *)&K256[4 * j]));
      s1 = _mm_sha256rnds2_epu32(s1, s0, m);
      s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
    }
    s0 = _mm_add_epi32(s0, abef);
    s1 = _mm_add_epi32(s1, cdgh);
  }
  t = _mm_shuffle_epi32(s0, 0x1B);  /* F E B A */
  s1 = _mm_shuffle_epi32(s1, 0xB1); /* D C H G */
  s0 = _mm_blend_epi16(t, s1, 0xF0); /* D C B A */
  s1 = _mm_alignr_epi8(s1, t, 8);    /* H G F E */
  _mm_storeu_si128((__m128i *)&h[0], s0);
  _mm_storeu_si128((__m128i *)&h[4], s1);
}
#endif

static int sha_hw = -1; /* -1: not decided yet */

int cnnb_sha256_hw(int enable)
{
#ifdef CNNB_SHA_NI
  __builtin_cpu_init();
  sha_hw = enable && __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1");
#else
  (void)enable;
  sha_hw = 0;
#endif
  return sha_hw;
}

static void sha_blocks(uint32_t h[8], const unsigned char *p, size_t nblocks)
{
  if (sha_hw < 0) cnnb_sha256_hw(1);
#ifdef CNNB_SHA_NI
  if (sha_hw) {
    sha_blocks_ni(h, p, nblocks);
    return;
  }
#endif
  for (; nblocks > 0; nblocks--, p += 64) sha_block(h, p);
}

void cnnb_sha256_init(cnnb_sha256 *s)
{
  static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, h0, sizeof h0);
  s->len = 0;
  s->nbuf = 0;
}

void cnnb_sha256_update(cnnb_sha256 *s, const void *data, size_t n)
{
  const unsigned char *p = data;
  s->len += n;
  while (n > 0) {
    if (s->nbuf == 0 && n >= 64) {
      sha_blocks(s->h, p, n / 64);
      p += n / 64 * 64, n %= 64;
      continue;
    }
    size_t k = 64 - s->nbuf < n ? 64 - s->nbuf : n;
    memcpy(s->buf + s->nbuf, p, k);
    s->nbuf += k, p += k, n -= k;
    if (s->nbuf == 64) {
      sha_blocks(s->h, s->buf, 1);
      s->nbuf = 0;
    }
  }
}

void cnnb_sha256_final(cnnb_sha256 *s, unsigned char digest[32], char *hex)
{
  uint64_t bits = s->len * 8;
  unsigned char pad[72] = {0x80};
  size_t np = (s->nbuf < 56 ? 56 : 120) - s->nbuf;
  for (int i = 0; i < 8; i++) pad[np + i] = (unsigned char)(bits >> (56 - 8 * i));
  cnnb_sha256_update(s, pad, np + 8);
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 4; j++) digest[4 * i + j] = (unsigned char)(s->h[i] >> (24 - 8 * j));
  if (hex)
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", digest[i]);
}

static int hash_file(cnnb_sha256 *s, const char *path)
{
  FILE *f = fopen(path, "rb");
  if (!f) return cnnb_error(CNNB_EIO, "%s: %s", path, strerror(errno));
  unsigned char buf[1 << 16];
  size_t k;
  while ((k = fread(buf, 1, sizeof buf, f)) > 0) cnnb_sha256_update(s, buf, k);
  int bad = ferror(f);
  fclose(f);
  return bad ? cnnb_error(CNNB_EIO, "%s: read error", path) : 0;
}

int cnnb_model_hash(const char *cfg_path, const char *weights_path, char hex[65])
{
  cnnb_sha256 s;
  unsigned char d[32];
  cnnb_sha256_init(&s);
  int rc = hash_file(&s, cfg_path);
  if (!rc) rc = hash_file(&s, weights_path);
  if (rc) return rc;
  cnnb_sha256_final(&s, d, hex);
  return 0;
}

/* ---- distances and top-K ---- */
void cnnb_match_sqnorms(const float *a, long n, int d, float *out)
{
  for (long i = 0; i < n; i++) {
    double s = 0;
    for (int j = 0; j < d; j++) s += (double)a[i * d + j] * a[i * d + j];
    out[i] = (float)s;
  }
}

void cnnb_match_dist(const float *a, const float *an, long na, const float *b, const float *bn, long nb, int d,
                     float *out)
{
  if (na <= 0 || nb <= 0) return;
  /* out = -2 a b^T, then the norms are added and the root taken row by row */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)na, (int)nb, d, -2.f, a, d, b, d, 0.f, out, (int)nb);
  for (long i = 0; i < na; i++) {
    float *o = out + i * nb;
    for (long j = 0; j < nb; j++) {
      float v = o[j] + an[i] + bn[j];
      o[j] = v > 0 ? sqrtf(v) : 0.f; /* rounding can make a tiny negative of a zero distance */
    }
  }
}

static int cand_before(float d, long long r, const cnnb_match_cand *c) { return d < c->dist || (d == c->dist && r < c->row); }

int cnnb_match_topk_insert(cnnb_match_cand *list, int count, int k, float dist, long long row)
{
  if (k <= 0) return 0;
  if (count == k && !cand_before(dist, row, &list[k - 1])) return count;
  int i = count < k ? count : k - 1; /* the slot that frees up */
  while (i > 0 && cand_before(dist, row, &list[i - 1])) {
    list[i] = list[i - 1];
    i--;
  }
  list[i].dist = dist;
  list[i].row = row;
  return count < k ? count + 1 : k;
}

/* ---- pairs files ---- */
void cnnb_match_free_strs(char **s, long n)
{
  if (!s) return;
  for (long i = 0; i < n; i++) free(s[i]);
  free(s);
}

void cnnb_pairs_free(cnnb_pairs *p)
{
  free(p->a);
  free(p->b);
  free(p->same);
  free(p->fold);
  memset(p, 0, sizeof *p);
}

/* Identities sorted by name, each with its rows in row order, for lookups. */
typedef struct ident {
  const char *name;
  long first, count; /* slice of the sorted row list */
} ident;

static const char *const *g_ids; /* for qsort's comparator only (set while sorting) */

static int cmp_rows_by_id(const void *x, const void *y)
{
  long a = *(const long *)x, b = *(const long *)y;
  int c = strcmp(g_ids[a], g_ids[b]);
  return c ? c : (a > b) - (a < b);
}

typedef struct id_index {
  long *rows;  /* every row, sorted by (identity, row) */
  ident *ids;
  long nids;
} id_index;

static int index_build(id_index *x, char *const *ids, long n)
{
  memset(x, 0, sizeof *x);
  x->rows = malloc(sizeof *x->rows * (size_t)(n ? n : 1));
  x->ids = malloc(sizeof *x->ids * (size_t)(n ? n : 1));
  if (!x->rows || !x->ids) return cnnb_error(CNNB_ENOMEM, "out of memory for %ld identities", n);
  for (long i = 0; i < n; i++) x->rows[i] = i;
  g_ids = (const char *const *)ids;
  qsort(x->rows, (size_t)n, sizeof *x->rows, cmp_rows_by_id);
  g_ids = NULL;
  for (long i = 0; i < n; i++) {
    if (x->nids && !strcmp(x->ids[x->nids - 1].name, ids[x->rows[i]])) {
      x->ids[x->nids - 1].count++;
    } else {
      x->ids[x->nids].name = ids[x->rows[i]];
      x->ids[x->nids].first = i;
      x->ids[x->nids].count = 1;
      x->nids++;
    }
  }
  return 0;
}

static void index_free(id_index *x)
{
  free(x->rows);
  free(x->ids);
}

/* Row of image number num (1-based) of name, or -1 with an error naming both files. */
static long index_row(const id_index *x, const char *name, long num, const char *pairs_path, long line,
                      const char *emb_path)
{
  long lo = 0, hi = x->nids;
  while (lo < hi) {
    long mid = (lo + hi) / 2;
    if (strcmp(x->ids[mid].name, name) < 0) lo = mid + 1;
    else hi = mid;
  }
  if (lo == x->nids || strcmp(x->ids[lo].name, name)) {
    cnnb_error(CNNB_EINVAL, "%s:%ld: name '%s' is not in %s", pairs_path, line, name, emb_path);
    return -1;
  }
  if (num < 1 || num > x->ids[lo].count) {
    cnnb_error(CNNB_EINVAL, "%s:%ld: image %ld of '%s' but %s has %ld image%s of '%s'", pairs_path, line, num, name,
               emb_path, x->ids[lo].count, x->ids[lo].count == 1 ? "" : "s", name);
    return -1;
  }
  return x->rows[x->ids[lo].first + num - 1];
}

/* Splits line into at most 5 whitespace-separated tokens; returns their count. */
static int tokens(char *line, char **tok)
{
  int n = 0;
  for (char *s = strtok(line, " \t\r\n"); s; s = strtok(NULL, " \t\r\n")) {
    if (n == 5) return 6;
    tok[n++] = s;
  }
  return n;
}

static int parse_num(const char *s, long *v)
{
  char *end;
  errno = 0;
  long x = strtol(s, &end, 10);
  if (end == s || *end || errno) return -1;
  *v = x;
  return 0;
}

int cnnb_pairs_load(cnnb_pairs *p, const char *pairs_path, char *const *ids, long nrows, const char *emb_path)
{
  memset(p, 0, sizeof *p);
  FILE *f = fopen(pairs_path, "r");
  if (!f) return cnnb_error(CNNB_EIO, "%s: %s", pairs_path, strerror(errno));
  id_index x;
  int rc = index_build(&x, ids, nrows);
  char line[4096], *tok[6];
  long ln = 1, F = 0, N = 0;
  if (!rc) {
    int nt = fgets(line, sizeof line, f) ? tokens(line, tok) : 0;
    if (nt != 2 || parse_num(tok[0], &F) || parse_num(tok[1], &N) || F < 1 || N < 1 || F > CNNB_VERIFY_MAX_FOLDS ||
        N > 100000000L / F)
      rc = cnnb_error(CNNB_EINVAL, "%s:1: expected 'FOLDS PAIRS_PER_FOLD' (two positive numbers, at most %d folds)",
                      pairs_path, CNNB_VERIFY_MAX_FOLDS);
  }
  if (!rc) {
    p->folds = (int)F, p->per_fold = (int)N, p->n = 2 * F * N;
    p->a = malloc(sizeof *p->a * (size_t)p->n);
    p->b = malloc(sizeof *p->b * (size_t)p->n);
    p->same = malloc(sizeof *p->same * (size_t)p->n);
    p->fold = malloc(sizeof *p->fold * (size_t)p->n);
    if (!p->a || !p->b || !p->same || !p->fold) rc = cnnb_error(CNNB_ENOMEM, "%s: out of memory", pairs_path);
  }
  for (long k = 0; k < p->n && !rc; k++) {
    int same = k % (2 * N) < N;
    ln++;
    if (!fgets(line, sizeof line, f)) {
      rc = cnnb_error(CNNB_EINVAL, "%s:%ld: file ends after %ld of %ld pairs (%ld folds of %ld matched and %ld mismatched)",
                      pairs_path, ln, k, p->n, F, N, N);
      break;
    }
    if (!strchr(line, '\n') && !feof(f)) {
      rc = cnnb_error(CNNB_EINVAL, "%s:%ld: line longer than %zu characters", pairs_path, ln, sizeof line - 2);
      break;
    }
    int nt = tokens(line, tok);
    long i, j;
    if (same && (nt != 3 || parse_num(tok[1], &i) || parse_num(tok[2], &j))) {
      rc = cnnb_error(CNNB_EINVAL, "%s:%ld: expected a matched pair 'name i j' (pair %ld of fold %ld)", pairs_path, ln,
                      k % (2 * N) + 1, k / (2 * N) + 1);
      break;
    }
    if (!same && (nt != 4 || parse_num(tok[1], &i) || parse_num(tok[3], &j))) {
      rc = cnnb_error(CNNB_EINVAL, "%s:%ld: expected a mismatched pair 'name1 i name2 j' (pair %ld of fold %ld)",
                      pairs_path, ln, k % (2 * N) + 1, k / (2 * N) + 1);
      break;
    }
    p->a[k] = index_row(&x, tok[0], i, pairs_path, ln, emb_path);
    p->b[k] = p->a[k] < 0 ? -1 : index_row(&x, same ? tok[0] : tok[2], j, pairs_path, ln, emb_path);
    if (p->a[k] < 0 || p->b[k] < 0) {
      rc = CNNB_EINVAL;
      break;
    }
    p->same[k] = same;
    p->fold[k] = (int)(k / (2 * N));
  }
  if (!rc) {
    /* Anything after the last fold but blank lines is a malformed file. */
    while (fgets(line, sizeof line, f)) {
      ln++;
      if (tokens(line, tok) > 0) {
        rc = cnnb_error(CNNB_EINVAL, "%s:%ld: more lines than the %ld folds of %ld + %ld pairs the first line announces",
                        pairs_path, ln, F, N, N);
        break;
      }
    }
  }
  fclose(f);
  index_free(&x);
  if (rc) cnnb_pairs_free(p);
  return rc;
}

/* ---- verification ---- */
static const float *g_dist; /* for qsort's comparator only */

static int cmp_by_dist(const void *x, const void *y)
{
  long a = *(const long *)x, b = *(const long *)y;
  float da = g_dist[a], db = g_dist[b];
  return da < db ? -1 : da > db ? 1 : (a > b) - (a < b);
}

double cnnb_verify_best_threshold(const float *dist, const int *same, long n, long *order, double *acc)
{
  if (n <= 0) {
    *acc = 0;
    return 0;
  }
  for (long i = 0; i < n; i++) order[i] = i;
  g_dist = dist;
  qsort(order, (size_t)n, sizeof *order, cmp_by_dist);
  g_dist = NULL;
  long ndiff = 0;
  for (long i = 0; i < n; i++) ndiff += !same[i];
  /* Threshold below everything: every pair called different. */
  long best = ndiff, correct = ndiff;
  double thr = dist[order[0]];
  for (long j = 1; j <= n; j++) {
    /* cut after j sorted pairs: those are called same */
    correct += same[order[j - 1]] ? 1 : -1;
    if (j < n && dist[order[j]] == dist[order[j - 1]]) continue; /* no threshold between equal values */
    if (correct > best) {
      best = correct;
      thr = j < n ? 0.5 * ((double)dist[order[j - 1]] + dist[order[j]]) : (double)dist[order[n - 1]] + 1.0;
    }
  }
  *acc = (double)best / (double)n;
  return thr;
}

static double accuracy_at(const float *dist, const int *same, long n, double t)
{
  long c = 0;
  for (long i = 0; i < n; i++) c += (dist[i] < t) == (same[i] != 0);
  return n ? (double)c / (double)n : 0;
}

int cnnb_verify_eval(const cnnb_pairs *p, const float *dist, double threshold, double far_target,
                     cnnb_verify_result *r)
{
  memset(r, 0, sizeof *r);
  if (p->folds < 2) return cnnb_error(CNNB_EINVAL, "10-fold verification needs at least 2 folds, the pairs have %d",
                                      p->folds);
  long n = p->n;
  float *td = malloc(sizeof *td * (size_t)n);
  int *ts = malloc(sizeof *ts * (size_t)n);
  long *order = malloc(sizeof *order * (size_t)n);
  if (!td || !ts || !order) {
    free(td), free(ts), free(order);
    return cnnb_error(CNNB_ENOMEM, "out of memory for %ld pairs", n);
  }
  r->folds = p->folds;
  double sum = 0, sum2 = 0;
  for (int f = 0; f < p->folds; f++) {
    long m = 0;
    for (long i = 0; i < n; i++)
      if (p->fold[i] != f) td[m] = dist[i], ts[m] = p->same[i], m++;
    double tacc;
    double t = cnnb_verify_best_threshold(td, ts, m, order, &tacc);
    m = 0;
    for (long i = 0; i < n; i++)
      if (p->fold[i] == f) td[m] = dist[i], ts[m] = p->same[i], m++;
    r->fold_threshold[f] = t;
    r->fold_accuracy[f] = accuracy_at(td, ts, m, t);
    sum += r->fold_accuracy[f];
  }
  r->mean = sum / p->folds;
  for (int f = 0; f < p->folds; f++) sum2 += (r->fold_accuracy[f] - r->mean) * (r->fold_accuracy[f] - r->mean);
  r->std = sqrt(sum2 / p->folds);
  r->accuracy_at = accuracy_at(dist, p->same, n, threshold);

  /* VAL at FAR: the mismatched distances sorted; with k = floor(far_target x mismatched), the
   * threshold is the (k+1)-th smallest: at most k mismatched pairs lie strictly below it. */
  long nd = 0, ns = 0;
  for (long i = 0; i < n; i++)
    if (!p->same[i]) td[nd++] = dist[i];
  ns = n - nd;
  for (long i = 0; i < nd; i++) order[i] = i;
  g_dist = td;
  qsort(order, (size_t)nd, sizeof *order, cmp_by_dist);
  g_dist = NULL;
  long k = (long)floor(far_target * (double)nd + 1e-9);
  double t = k < nd ? td[order[k]] : (nd ? (double)td[order[nd - 1]] + 1.0 : 0);
  long fa = 0, ta = 0;
  for (long i = 0; i < n; i++) {
    if (dist[i] >= t) continue;
    if (p->same[i]) ta++;
    else fa++;
  }
  r->val_threshold = t;
  r->val = ns ? (double)ta / (double)ns : 0;
  r->far = nd ? (double)fa / (double)nd : 0;
  free(td), free(ts), free(order);
  return 0;
}
