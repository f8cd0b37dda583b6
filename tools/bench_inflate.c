/* cnnb-bench-inflate: our DEFLATE decoder (src/io/inflate.c) against zlib's uncompress() in
 * the same run, on the two kinds of chunks the project reads:
 *   crops:  N 150x150x3 windows of photos (seeded positions), one zlib stream each at level 4,
 *           as `import` and tools/bench_embed write crop sets;
 *   photos: the photos' pixels end to end, cut into 1 MiB chunks at level 1, as image sets are.
 * Each decoder decodes every chunk of a set per repetition (zlib and ours interleaved); the
 * best of R repetitions gives MB/s of decoded output; outputs are checked to be identical.
 * Also printed: our raw-DEFLATE time (adler32 left out) to show the checksum's share.
 *
 *   cnnb-bench-inflate [--reps R] [--crops N] [PHOTO.jpg ...]
 *
 * Photos: the arguments, else face-api.js's sample*.jpg from the cache ($CNNB_CACHE, else
 * ~/.cache/cnnb, npm/node_modules/@vladmandic/face-api/demo: the crops of tools/bench_embed)
 * and Debian darknet's JPEGs in /usr/share/darknet/data. Wall-clock times: on a busy machine
 * read the ratios. */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "cnnb/error.h"
#include "cnnb/image.h"
#include "io/inflate.h"

typedef struct {
  unsigned char *raw, *z;   /* all chunks, end to end */
  size_t *rn, *zn;          /* each chunk's raw and compressed size */
  size_t *ro, *zo;          /* offsets */
  size_t n, raw_total, z_total;
} chunk_set;

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void set_free(chunk_set *s)
{
  free(s->raw), free(s->z), free(s->rn), free(s->zn), free(s->ro), free(s->zo);
  memset(s, 0, sizeof *s);
}

/* Compresses the chunks of raw (sizes rn[0..n)) at level; 0 or -1. Takes raw and rn. */
static int set_build(chunk_set *s, unsigned char *raw, size_t *rn, size_t n, int level)
{
  memset(s, 0, sizeof *s);
  s->raw = raw, s->rn = rn, s->n = n;
  s->zn = calloc(n, sizeof *s->zn), s->ro = calloc(n, sizeof *s->ro), s->zo = calloc(n, sizeof *s->zo);
  size_t bound = 0;
  for (size_t i = 0; i < n; i++) {
    s->ro[i] = s->raw_total;
    s->raw_total += rn[i];
    bound += compressBound((uLong)rn[i]);
  }
  s->z = malloc(bound);
  if (!s->zn || !s->ro || !s->zo || !s->z) return -1;
  for (size_t i = 0; i < n; i++) {
    uLongf zn = (uLongf)(bound - s->z_total);
    if (compress2(s->z + s->z_total, &zn, raw + s->ro[i], (uLong)rn[i], level) != Z_OK) return -1;
    s->zo[i] = s->z_total, s->zn[i] = zn;
    s->z_total += zn;
  }
  return 0;
}

/* Seconds to decode every chunk of s into out with decoder k (0 zlib, 1 ours, 2 ours raw);
 * negative if an output differs. */
static double run_once(const chunk_set *s, unsigned char *out, int k)
{
  const double t0 = now_s();
  for (size_t i = 0; i < s->n; i++) {
    const unsigned char *z = s->z + s->zo[i];
    unsigned char *o = out + s->ro[i];
    size_t got = 0;
    int ok;
    if (k == 0) {
      uLongf n = (uLongf)s->rn[i];
      ok = uncompress(o, &n, z, (uLong)s->zn[i]) == Z_OK;
      got = n;
    } else if (k == 1) {
      ok = cnnb_inflate_zlib(z, s->zn[i], o, s->rn[i], &got) == CNNB_INFLATE_OK;
    } else {
      ok = cnnb_inflate_raw(z + 2, s->zn[i] - 2, o, s->rn[i], &got, NULL) == CNNB_INFLATE_OK;
    }
    if (!ok || got != s->rn[i]) return -1;
  }
  const double t = now_s() - t0;
  return memcmp(out, s->raw, s->raw_total) ? -1 : t;
}

static int bench(const char *name, const chunk_set *s, int reps)
{
  unsigned char *out = malloc(s->raw_total);
  if (!out) return -1;
  double best[3] = {1e30, 1e30, 1e30};
  for (int r = 0; r < reps; r++)
    for (int k = 0; k < 3; k++) {
      double t = run_once(s, out, k);
      if (t < 0) {
        fprintf(stderr, "cnnb-bench-inflate: %s: decoder %d gave a different output\n", name, k);
        free(out);
        return -1;
      }
      if (t < best[k]) best[k] = t;
    }
  free(out);
  const double mb = (double)s->raw_total / 1e6;
  printf("%-7s %4zu chunks %9.1f KB raw -> %9.1f KB: zlib uncompress %7.2f ms %6.0f MB/s | ours %7.2f ms "
         "%6.0f MB/s (raw, no adler32 %7.2f ms) | speedup %.2fx\n",
         name, s->n, (double)s->raw_total / 1e3, (double)s->z_total / 1e3, 1e3 * best[0], mb / best[0],
         1e3 * best[1], mb / best[1], 1e3 * best[2], best[0] / best[1]);
  return 0;
}

typedef struct {
  unsigned char *px;
  int h, w;
} photo;

int main(int argc, char **argv)
{
  int reps = 7, ncrops = 128;
  const char *paths[256];
  int np = 0;
  glob_t g1, g2;
  memset(&g1, 0, sizeof g1), memset(&g2, 0, sizeof g2);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--crops") && i + 1 < argc) ncrops = atoi(argv[++i]);
    else if (argv[i][0] == '-') {
      fprintf(stderr, "usage: cnnb-bench-inflate [--reps R] [--crops N] [PHOTO.jpg ...]\n");
      return 2;
    } else if (np < 256) paths[np++] = argv[i];
  }
  if (reps < 1 || ncrops < 1) return 2;
  if (np == 0) {
    char pat[1024];
    const char *cache = getenv("CNNB_CACHE"), *home = getenv("HOME");
    if (cache) snprintf(pat, sizeof pat, "%s/npm/node_modules/@vladmandic/face-api/demo/sample*.jpg", cache);
    else snprintf(pat, sizeof pat, "%s/.cache/cnnb/npm/node_modules/@vladmandic/face-api/demo/sample*.jpg", home ? home : "");
    glob(pat, 0, NULL, &g1);
    glob("/usr/share/darknet/data/*.jpg", 0, NULL, &g2);
    for (size_t i = 0; i < g1.gl_pathc && np < 256; i++) paths[np++] = g1.gl_pathv[i];
    for (size_t i = 0; i < g2.gl_pathc && np < 256; i++) paths[np++] = g2.gl_pathv[i];
  }
  photo ph[256];
  int nph = 0;
  size_t all = 0;
  for (int i = 0; i < np; i++) {
    if (cnnb_image_load_rgb(paths[i], &ph[nph].px, &ph[nph].h, &ph[nph].w) < 0) {
      fprintf(stderr, "cnnb-bench-inflate: %s: %s (skipped)\n", paths[i], cnnb_error_message());
      continue;
    }
    if (ph[nph].h < 150 || ph[nph].w < 150) {
      free(ph[nph].px);
      continue;
    }
    all += (size_t)ph[nph].h * (size_t)ph[nph].w * 3;
    nph++;
  }
  if (nph == 0) {
    fprintf(stderr, "cnnb-bench-inflate: no photos (give some JPEGs)\n");
    return 1;
  }
  printf("cnnb-bench-inflate: %d photos, %d crops, best of %d reps (wall clock)\n", nph, ncrops, reps);

  /* crops: seeded 150x150 windows, photo i % (the first photos: face-api's samples if found) */
  const size_t cb = 150 * 150 * 3;
  unsigned char *craw = malloc((size_t)ncrops * cb);
  size_t *crn = malloc((size_t)ncrops * sizeof *crn);
  unsigned long long rs = 12345;
  const int crop_from = g1.gl_pathc > 0 ? (int)(g1.gl_pathc < (size_t)nph ? g1.gl_pathc : (size_t)nph) : nph;
  for (int i = 0; i < ncrops && craw && crn; i++) {
    const photo *p = &ph[i % crop_from];
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    int y = (int)((rs >> 33) % (unsigned)(p->h - 149));
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    int x = (int)((rs >> 33) % (unsigned)(p->w - 149));
    for (int r = 0; r < 150; r++)
      memcpy(craw + (size_t)i * cb + (size_t)r * 450, p->px + ((size_t)(y + r) * (size_t)p->w + (size_t)x) * 3, 450);
    crn[i] = cb;
  }
  /* photos: all pixels end to end in 1 MiB chunks */
  const size_t mib = 1u << 20, nch = (all + mib - 1) / mib;
  unsigned char *praw = malloc(all);
  size_t *prn = malloc(nch * sizeof *prn), o = 0;
  for (int i = 0; i < nph && praw; i++) {
    size_t b = (size_t)ph[i].h * (size_t)ph[i].w * 3;
    memcpy(praw + o, ph[i].px, b);
    o += b;
  }
  for (size_t i = 0; i < nch && prn; i++) prn[i] = i + 1 < nch ? mib : all - i * mib;
  for (int i = 0; i < nph; i++) free(ph[i].px);
  globfree(&g1), globfree(&g2);

  chunk_set crops, photos;
  int rc = 0;
  if (!craw || !crn || !praw || !prn || set_build(&crops, craw, crn, (size_t)ncrops, 4) < 0 ||
      set_build(&photos, praw, prn, nch, 1) < 0) {
    fprintf(stderr, "cnnb-bench-inflate: out of memory or compress2 failed\n");
    return 1;
  }
  if (bench("crops", &crops, reps) < 0 || bench("photos", &photos, reps) < 0) rc = 1;
  set_free(&crops);
  set_free(&photos);
  return rc;
}
