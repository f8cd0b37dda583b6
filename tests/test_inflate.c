/* Our DEFLATE decoder (src/io/inflate.c) against zlib: round trips of zlib's compress2 and
 * deflateInit2 over levels, strategies, window sizes and data kinds, with the output compared
 * byte for byte to zlib's uncompress(); hand-built streams for what zlib's encoder never
 * emits (distance 32768, runs of 258, every table-building error case), accepted or rejected
 * exactly as zlib does; truncated, bit-flipped and random inputs that must fail cleanly (the
 * ASan build checks that no byte outside the buffers is touched: every input and output is
 * its own exactly sized allocation); the SSSE3 adler32 against zlib's; HDF5 chunks read as
 * stored and decoded (cnnb_h5_read_deflate_chunk: levels, raw chunks, corrupt and missing
 * ones, CNNB_INFLATE=zlib); and image sets read through it (photos across chunk boundaries,
 * in any order, a corrupt chunk named by file and image). */
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "cnnb/imageset.h"
#include "cnnb_test.h"
#include "io/h5util.h"
#include "io/inflate.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static unsigned rnd(void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (unsigned)(rng_state >> 11);
}

enum { D_RANDOM, D_RUNS, D_TEXT, D_IMAGE, D_KINDS };

/* Test data of n bytes: random, runs of one byte, text-like words, or smooth RGB pixels. */
static unsigned char *make_data(size_t n, int kind)
{
  unsigned char *b = malloc(n ? n : 1);
  static const char *words[] = {"the ", "quick ", "brown ", "fox ", "jumps ", "over ", "lazy ", "dog. ", "\n"};
  size_t i = 0;
  while (i < n) {
    switch (kind) {
    case D_RANDOM: b[i++] = (unsigned char)rnd(); break;
    case D_RUNS: {
      unsigned char v = (unsigned char)rnd();
      for (size_t k = 1 + rnd() % 300; k-- && i < n;) b[i++] = v;
      break;
    }
    case D_TEXT: {
      const char *w = words[rnd() % 9];
      for (; *w && i < n; w++) b[i++] = (unsigned char)*w;
      break;
    }
    default: {
      size_t px = i / 3, x = px % 150, y = px / 150;
      int v = (int)(128 + (x * 7 + y * 3) % 90) + (int)(i % 3) * 20 + (int)(rnd() % 5);
      b[i++] = (unsigned char)v;
    }
    }
  }
  return b;
}

/* zlib stream of src by deflateInit2 (level, window bits, memory level, strategy); malloc'ed, exactly sized. */
static unsigned char *zlib_deflate(const unsigned char *src, size_t n, int level, int wbits, int strategy, size_t *zn)
{
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, level, Z_DEFLATED, wbits, 8, strategy) != Z_OK) return NULL;
  size_t cap = deflateBound(&z, (uLong)n);
  unsigned char *tmp = malloc(cap), *out = NULL;
  z.next_in = (unsigned char *)src;
  z.avail_in = (uInt)n;
  z.next_out = tmp;
  z.avail_out = (uInt)cap;
  if (deflate(&z, Z_FINISH) == Z_STREAM_END) {
    *zn = z.total_out;
    out = malloc(*zn);
    memcpy(out, tmp, *zn);
  }
  deflateEnd(&z);
  free(tmp);
  return out;
}

/* Decodes z with ours into an exactly cap-sized buffer and with zlib's uncompress; asserts
 * they agree (both fail, or both give the same bytes). Returns ours' code; *out (if given)
 * gets our output (malloc'ed) and *out_n its size. */
static int decode_both(const unsigned char *z, size_t zn, size_t cap, unsigned char **out, size_t *out_n)
{
  unsigned char *zc = malloc(zn ? zn : 1), *o = malloc(cap ? cap : 1), *r = malloc(cap ? cap : 1);
  if (zn) memcpy(zc, z, zn);
  size_t got = 0;
  int rc = cnnb_inflate_zlib(zc, zn, o, cap, &got);
  uLongf rn = (uLongf)cap;
  int zr = uncompress(r, &rn, zc, (uLong)zn);
  if ((rc == CNNB_INFLATE_OK) != (zr == Z_OK))
    fprintf(stderr, "\n  disagreement: ours %d, zlib %d (input %zu bytes, cap %zu)\n", rc, zr, zn, cap);
  CU_ASSERT_EQUAL(rc == CNNB_INFLATE_OK, zr == Z_OK);
  if (rc == CNNB_INFLATE_OK && zr == Z_OK) {
    CNNB_ASSERT_EQ_INT(got, rn);
    CU_ASSERT(memcmp(o, r, got) == 0);
  }
  free(zc), free(r);
  if (out) *out = o, *out_n = got;
  else free(o);
  return rc;
}

/* One round trip: ours gives back src exactly, in a buffer of exactly n bytes, agrees with
 * zlib, and reports overflow for n - 1. */
static void round_trip(const unsigned char *src, size_t n, int level, int wbits, int strategy)
{
  size_t zn = 0;
  unsigned char *z = zlib_deflate(src, n, level, wbits, strategy, &zn), *o = NULL;
  CU_ASSERT_PTR_NOT_NULL_FATAL(z);
  size_t got = 0;
  int rc = decode_both(z, zn, n, &o, &got);
  if (rc != CNNB_INFLATE_OK || got != n || memcmp(o, src, n) != 0)
    fprintf(stderr, "\n  round trip failed: n %zu level %d wbits %d strategy %d rc %d got %zu\n", n, level, wbits,
            strategy, rc, got);
  CNNB_ASSERT_EQ_INT(rc, CNNB_INFLATE_OK);
  CNNB_ASSERT_EQ_INT(got, n);
  CU_ASSERT(n == 0 || memcmp(o, src, n) == 0);
  free(o);
  if (n > 0) {
    unsigned char *zc = malloc(zn), *small = malloc(n - 1 ? n - 1 : 1);
    memcpy(zc, z, zn);
    CNNB_ASSERT_EQ_INT(cnnb_inflate_zlib(zc, zn, small, n - 1, &got), CNNB_INFLATE_OVERFLOW);
    free(zc), free(small);
  }
  free(z);
}

static void test_levels_kinds(void)
{
  static const size_t sizes[] = {0, 1, 2, 3, 257, 1000, 65535, 65536, 67500};
  for (int kind = 0; kind < D_KINDS; kind++)
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
      unsigned char *d = make_data(sizes[si], kind);
      for (int level = 0; level <= 9; level++) round_trip(d, sizes[si], level, 15, Z_DEFAULT_STRATEGY);
      free(d);
    }
}

static void test_strategies_windows(void)
{
  static const int strategies[] = {Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE, Z_FIXED};
  for (int kind = 0; kind < D_KINDS; kind++) {
    unsigned char *d = make_data(70000, kind);
    for (int s = 0; s < 4; s++)
      for (int level = 1; level <= 9; level += 4) round_trip(d, 70000, level, 15, strategies[s]);
    for (int wbits = 9; wbits <= 15; wbits++) round_trip(d, 70000, 6, wbits, Z_DEFAULT_STRATEGY);
    free(d);
  }
}

static void test_one_mib(void)
{
  for (int kind = 0; kind < D_KINDS; kind++) {
    unsigned char *d = make_data(1u << 20, kind);
    round_trip(d, 1u << 20, 1, 15, Z_DEFAULT_STRATEGY);
    round_trip(d, 1u << 20, 9, 15, Z_DEFAULT_STRATEGY);
    free(d);
  }
  /* random sizes and mixtures: data that switches kind inside one stream */
  for (int it = 0; it < 40; it++) {
    size_t n = rnd() % 200000;
    unsigned char *d = malloc(n ? n : 1);
    for (size_t i = 0; i < n;) {
      size_t k = 1 + rnd() % 5000;
      if (k > n - i) k = n - i;
      unsigned char *p = make_data(k, (int)(rnd() % D_KINDS));
      memcpy(d + i, p, k);
      free(p);
      i += k;
    }
    round_trip(d, n, (int)(rnd() % 10), 9 + (int)(rnd() % 7), (int)(rnd() % 5));
    free(d);
  }
}

/* ---- hand-built streams --------------------------------------------------------------- */

typedef struct {
  unsigned char *p;
  size_t n, cap;
  uint64_t acc;
  int nacc;
} bitw;

static void bw_bits(bitw *w, unsigned v, int nbits) /* LSB first, as DEFLATE packs fields */
{
  w->acc |= (uint64_t)v << w->nacc;
  w->nacc += nbits;
  while (w->nacc >= 8) {
    if (w->n == w->cap) w->p = realloc(w->p, w->cap = w->cap * 2 + 64);
    w->p[w->n++] = (unsigned char)w->acc;
    w->acc >>= 8;
    w->nacc -= 8;
  }
}

static void bw_code(bitw *w, unsigned code, int len) /* Huffman codes go most significant bit first */
{
  for (int i = len - 1; i >= 0; i--) bw_bits(w, code >> i & 1, 1);
}

static void bw_flush(bitw *w)
{
  if (w->nacc > 0) bw_bits(w, 0, 8 - w->nacc);
}

/* fixed Huffman code of a literal/length symbol (RFC 1951 3.2.6) */
static void fx_sym(bitw *w, unsigned s)
{
  if (s < 144) bw_code(w, 0x30 + s, 8);
  else if (s < 256) bw_code(w, 0x190 + s - 144, 9);
  else if (s < 280) bw_code(w, s - 256, 7);
  else bw_code(w, 0xc0 + s - 280, 8);
}

static void fx_match(bitw *w, unsigned len, unsigned dist)
{
  static const unsigned lb[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                  31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
  static const unsigned db[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
                                  193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
  int l = 28, d = 29;
  while (lb[l] > len) l--;
  while (db[d] > dist) d--;
  fx_sym(w, 257 + (unsigned)l);
  int le = l < 8 || l == 28 ? 0 : (l - 4) / 4, de = d < 4 ? 0 : (d - 2) / 2;
  bw_bits(w, len - lb[l], le);
  bw_code(w, (unsigned)d, 5);
  bw_bits(w, dist - db[d], de);
}

/* The zlib stream around raw DEFLATE data (header 78 01, adler32 of `plain`). */
static unsigned char *zwrap(const bitw *w, const unsigned char *plain, size_t pn, size_t *zn)
{
  *zn = w->n + 6;
  unsigned char *z = malloc(*zn);
  z[0] = 0x78, z[1] = 0x01;
  memcpy(z + 2, w->p, w->n);
  uLong a = adler32(1, plain, (uInt)pn);
  for (int i = 0; i < 4; i++) z[2 + w->n + i] = (unsigned char)(a >> (24 - 8 * i));
  return z;
}

static void test_far_and_long_matches(void)
{
  /* 32768 random literals, then matches at distance 32768 and runs at distance 1 */
  const size_t lit = 32768, n = lit + 10 * 258 + 1 + 100 * 258;
  unsigned char *plain = malloc(n);
  bitw w = {0};
  bw_bits(&w, 1, 1), bw_bits(&w, 1, 2); /* final, fixed */
  size_t o = 0;
  for (; o < lit; o++) fx_sym(&w, plain[o] = (unsigned char)rnd());
  for (int k = 0; k < 10; k++) {
    fx_match(&w, 258, 32768);
    for (int i = 0; i < 258; i++, o++) plain[o] = plain[o - 32768];
  }
  fx_sym(&w, plain[o++] = 'x');
  for (int k = 0; k < 100; k++) {
    fx_match(&w, 258, 1);
    for (int i = 0; i < 258; i++, o++) plain[o] = 'x';
  }
  fx_sym(&w, 256);
  bw_flush(&w);
  CNNB_ASSERT_EQ_INT(o, n);
  size_t zn, got;
  unsigned char *z = zwrap(&w, plain, n, &zn), *out;
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, n, &out, &got), CNNB_INFLATE_OK);
  CNNB_ASSERT_EQ_INT(got, n);
  CU_ASSERT(memcmp(out, plain, n) == 0);
  free(out), free(z), free(w.p);

  /* every distance 1..40 and length 3..40 once, against a plain reference */
  bitw v = {0};
  bw_bits(&v, 1, 1), bw_bits(&v, 1, 2);
  unsigned char *ref = malloc(100000);
  o = 0;
  for (; o < 64; o++) fx_sym(&v, ref[o] = (unsigned char)rnd());
  for (unsigned d = 1; d <= 40; d++)
    for (unsigned len = 3; len <= 40; len++) {
      fx_match(&v, len, d);
      for (unsigned i = 0; i < len; i++, o++) ref[o] = ref[o - d];
    }
  fx_sym(&v, 256);
  bw_flush(&v);
  z = zwrap(&v, ref, o, &zn);
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, o, &out, &got), CNNB_INFLATE_OK);
  CNNB_ASSERT_EQ_INT(got, o);
  CU_ASSERT(memcmp(out, ref, o) == 0);
  free(out), free(z), free(v.p), free(ref), free(plain);
}

/* A zlib stream of one fixed block: a few literals then `tail` (a symbol and/or match). */
static int fixed_case(void (*tail)(bitw *), size_t cap)
{
  bitw w = {0};
  bw_bits(&w, 1, 1), bw_bits(&w, 1, 2);
  fx_sym(&w, 'a');
  tail(&w);
  fx_sym(&w, 256);
  bw_flush(&w);
  size_t zn;
  unsigned char *z = zwrap(&w, (const unsigned char *)"a", 1, &zn);
  int rc = decode_both(z, zn, cap, NULL, NULL);
  free(z), free(w.p);
  return rc;
}
static void tail_far(bitw *w) { fx_match(w, 3, 2); }   /* one byte written, distance 2 */
static void tail_286(bitw *w) { fx_sym(w, 286); }      /* not a length symbol */
static void tail_dist30(bitw *w)                       /* distance symbol 30 */
{
  fx_sym(w, 257);
  bw_code(w, 30, 5);
}
static void tail_none(bitw *w) { (void)w; }

/* A dynamic block whose code-length code gives symbols 0..15 four bits each (canonical code =
 * the length itself), then the given literal/length and distance code lengths, then the
 * codes in `syms` (symbol, code, length triples written MSB first). */
static unsigned char *dyn_case(unsigned nlen, unsigned ndist, const uint8_t *lens, const unsigned *codes, int ncodes,
                               size_t *zn)
{
  bitw w = {0};
  bw_bits(&w, 1, 1), bw_bits(&w, 2, 2);
  bw_bits(&w, nlen - 257, 5), bw_bits(&w, ndist - 1, 5), bw_bits(&w, 19 - 4, 4);
  static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
  for (int i = 0; i < 19; i++) bw_bits(&w, order[i] < 16 ? 4 : 0, 3);
  for (unsigned i = 0; i < nlen + ndist; i++) bw_code(&w, lens[i], 4);
  for (int i = 0; i < ncodes; i++) bw_code(&w, codes[2 * i], (int)codes[2 * i + 1]);
  bw_flush(&w);
  unsigned char *z = zwrap(&w, (const unsigned char *)"aa", 2, zn);
  free(w.p);
  return z;
}

static void test_table_cases(void)
{
  CNNB_ASSERT_EQ_INT(fixed_case(tail_none, 16), CNNB_INFLATE_OK);
  CNNB_ASSERT_EQ_INT(fixed_case(tail_far, 16), CNNB_INFLATE_CORRUPT);
  CNNB_ASSERT_EQ_INT(fixed_case(tail_286, 16), CNNB_INFLATE_CORRUPT);
  CNNB_ASSERT_EQ_INT(fixed_case(tail_dist30, 16), CNNB_INFLATE_CORRUPT);

  uint8_t lens[320];
  size_t zn;
  unsigned char *z, *out;
  size_t got;
  /* 'a' and end-of-block one bit each (complete); one distance code of one bit (incomplete,
   * allowed): "aa" */
  memset(lens, 0, sizeof lens);
  lens['a'] = 1, lens[256] = 1, lens[257] = 1;
  const unsigned aa[] = {0, 1, 0, 1, 1, 1};
  z = dyn_case(257, 1, lens, aa, 3, &zn);
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, 16, &out, &got), CNNB_INFLATE_OK);
  CNNB_ASSERT_EQ_INT(got, 2);
  CU_ASSERT(memcmp(out, "aa", 2) == 0);
  free(out), free(z);
  /* only end-of-block, one bit (incomplete, allowed); no distance code */
  memset(lens, 0, sizeof lens);
  lens[256] = 1;
  const unsigned eob[] = {0, 1};
  z = dyn_case(257, 1, lens, eob, 1, &zn);
  z[zn - 4] = 0, z[zn - 3] = 0, z[zn - 2] = 0, z[zn - 1] = 1; /* adler32 of nothing */
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, 16, &out, &got), CNNB_INFLATE_OK);
  CNNB_ASSERT_EQ_INT(got, 0);
  free(out), free(z);
  /* over-subscribed: three one-bit codes */
  memset(lens, 0, sizeof lens);
  lens['a'] = 1, lens['b'] = 1, lens[256] = 1;
  z = dyn_case(257, 1, lens, aa, 3, &zn);
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, 16, NULL, NULL), CNNB_INFLATE_CORRUPT);
  free(z);
  /* incomplete with a two-bit longest code */
  memset(lens, 0, sizeof lens);
  lens['a'] = 2, lens[256] = 2;
  const unsigned aa2[] = {0, 2, 0, 2, 1, 2};
  z = dyn_case(257, 1, lens, aa2, 3, &zn);
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, 16, NULL, NULL), CNNB_INFLATE_CORRUPT);
  free(z);
  /* incomplete distance code with a two-bit longest code */
  memset(lens, 0, sizeof lens);
  lens['a'] = 1, lens[256] = 1, lens[257] = 2, lens[258] = 2;
  z = dyn_case(257, 2, lens, aa, 3, &zn);
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, 16, NULL, NULL), CNNB_INFLATE_CORRUPT);
  free(z);
  /* no end-of-block code */
  memset(lens, 0, sizeof lens);
  lens['a'] = 1, lens['b'] = 1;
  z = dyn_case(257, 1, lens, aa, 3, &zn);
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, 16, NULL, NULL), CNNB_INFLATE_CORRUPT);
  free(z);
  /* 287 literal/length codes, 31 distance codes: more than a block may have */
  memset(lens, 0, sizeof lens);
  lens['a'] = 1, lens[256] = 1;
  z = dyn_case(287, 1, lens, aa, 3, &zn);
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, 16, NULL, NULL), CNNB_INFLATE_CORRUPT);
  free(z);
  z = dyn_case(257, 31, lens, aa, 3, &zn);
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, 16, NULL, NULL), CNNB_INFLATE_CORRUPT);
  free(z);
  /* a long code (15 bits) through the second-level tables: lengths 1, 2, ..., 14, 15, 15 */
  memset(lens, 0, sizeof lens);
  for (int i = 0; i < 14; i++) lens['a' + i] = (uint8_t)(i + 1);
  lens['a' + 14] = 15, lens[256] = 15;
  unsigned lng[2 * 17];
  for (int i = 0; i < 15; i++) lng[2 * i] = (1u << (i + 1)) - 2, lng[2 * i + 1] = (unsigned)(i + 1);
  lng[28] = 0x7ffe, lng[29] = 15;       /* 'o' (15 bits) */
  lng[30] = 0x7ffe, lng[31] = 15;       /* 'o' again */
  lng[32] = 0x7fff, lng[33] = 15;       /* end of block */
  /* codes: 'a'=0, 'b'=10, 'c'=110, ... each i bits; 14 symbols then 'o' twice then EOB */
  z = dyn_case(257, 1, lens, lng, 17, &zn);
  unsigned char want[17];
  for (int i = 0; i < 14; i++) want[i] = (unsigned char)('a' + i);
  want[14] = 'o', want[15] = 'o';
  uLong a = adler32(1, want, 16);
  for (int i = 0; i < 4; i++) z[zn - 4 + (size_t)i] = (unsigned char)(a >> (24 - 8 * i));
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, 16, &out, &got), CNNB_INFLATE_OK);
  CNNB_ASSERT_EQ_INT(got, 16);
  CU_ASSERT(memcmp(out, want, 16) == 0);
  free(out), free(z);
  /* a repeat of the previous length as the very first code length: needs symbol 16 in the
   * code-length code, so a code of 0, 1, 16, 17 at two bits each */
  bitw w = {0};
  bw_bits(&w, 1, 1), bw_bits(&w, 2, 2);
  bw_bits(&w, 0, 5), bw_bits(&w, 0, 5), bw_bits(&w, 19 - 4, 4);
  static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
  for (int i = 0; i < 19; i++) {
    unsigned s = order[i];
    bw_bits(&w, s == 0 || s == 1 || s == 16 || s == 17 ? 2 : 0, 3);
  }
  bw_code(&w, 2, 2), bw_bits(&w, 0, 2); /* symbol 16 first */
  for (int i = 0; i < 40; i++) bw_code(&w, 0, 2);
  bw_flush(&w);
  z = zwrap(&w, (const unsigned char *)"", 0, &zn);
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, 16, NULL, NULL), CNNB_INFLATE_CORRUPT);
  free(z), free(w.p);
}

/* ---- corrupt, truncated and hostile input --------------------------------------------- */

static void test_headers_and_trailer(void)
{
  unsigned char *d = make_data(5000, D_TEXT);
  size_t zn;
  unsigned char *z = zlib_deflate(d, 5000, 6, 15, Z_DEFAULT_STRATEGY, &zn);
  CNNB_ASSERT_EQ_INT(decode_both(z, zn, 5000, NULL, NULL), CNNB_INFLATE_OK);
  unsigned char *c = malloc(zn);
  /* FCHECK wrong */
  memcpy(c, z, zn), c[1] ^= 1;
  CNNB_ASSERT_EQ_INT(decode_both(c, zn, 5000, NULL, NULL), CNNB_INFLATE_CORRUPT);
  /* method 7 (header check fixed up) */
  memcpy(c, z, zn), c[0] = 0x77, c[1] = (unsigned char)(c[1] & 0xe0), c[1] = (unsigned char)(c[1] + (31 - (0x77 * 256 + c[1]) % 31) % 31);
  CNNB_ASSERT_EQ_INT(decode_both(c, zn, 5000, NULL, NULL), CNNB_INFLATE_CORRUPT);
  /* window 2^16 (CINFO 8) */
  memcpy(c, z, zn), c[0] = 0x88, c[1] = (unsigned char)(c[1] & 0xe0), c[1] = (unsigned char)(c[1] + (31 - (0x88 * 256 + c[1]) % 31) % 31);
  CNNB_ASSERT_EQ_INT(decode_both(c, zn, 5000, NULL, NULL), CNNB_INFLATE_CORRUPT);
  /* preset dictionary: left to zlib */
  memcpy(c, z, zn), c[1] = 0x20, c[1] = (unsigned char)(c[1] + (31 - (0x78 * 256 + c[1]) % 31) % 31);
  unsigned char *o = malloc(5000);
  size_t got;
  CNNB_ASSERT_EQ_INT(cnnb_inflate_zlib(c, zn, o, 5000, &got), CNNB_INFLATE_UNSUPPORTED);
  /* adler32 wrong */
  memcpy(c, z, zn), c[zn - 1] ^= 0x10;
  CNNB_ASSERT_EQ_INT(decode_both(c, zn, 5000, NULL, NULL), CNNB_INFLATE_CORRUPT);
  /* block type 3 */
  memcpy(c, z, zn), c[2] = (unsigned char)(c[2] | 6);
  CNNB_ASSERT_EQ_INT(decode_both(c, zn, 5000, NULL, NULL), CNNB_INFLATE_CORRUPT);
  /* a stored block whose NLEN is not ~LEN */
  unsigned char st[] = {0x78, 0x01, 0x01, 0x03, 0x00, 0xfc, 0xfe, 'a', 'b', 'c', 0, 0, 0, 0};
  CNNB_ASSERT_EQ_INT(decode_both(st, sizeof st, 16, NULL, NULL), CNNB_INFLATE_CORRUPT);
  st[5] = 0xfc, st[6] = 0xff;
  uLong a = adler32(1, (const unsigned char *)"abc", 3);
  for (int i = 0; i < 4; i++) st[10 + i] = (unsigned char)(a >> (24 - 8 * i));
  CNNB_ASSERT_EQ_INT(decode_both(st, sizeof st, 16, NULL, NULL), CNNB_INFLATE_OK);
  CNNB_ASSERT_EQ_INT(decode_both(st, sizeof st, 2, NULL, NULL), CNNB_INFLATE_OVERFLOW);
  /* trailing bytes after the trailer are ignored, as zlib does */
  unsigned char *t = malloc(zn + 7);
  memcpy(t, z, zn), memset(t + zn, 0xab, 7);
  CNNB_ASSERT_EQ_INT(decode_both(t, zn + 7, 5000, NULL, NULL), CNNB_INFLATE_OK);
  free(t), free(o), free(c), free(z), free(d);
}

static void test_truncated_everywhere(void)
{
  static const int levels[] = {0, 1, 6, 9};
  for (int kind = 0; kind < D_KINDS; kind++)
    for (int li = 0; li < 4; li++) {
      unsigned char *d = make_data(3000, kind);
      size_t zn;
      unsigned char *z = zlib_deflate(d, 3000, levels[li], 15, li == 3 ? Z_FIXED : Z_DEFAULT_STRATEGY, &zn);
      for (size_t cut = 0; cut < zn; cut++) {
        /* with room to spare the zero bits fed past the end are found out before any
         * overflow; with exactly the room, the output may fill first (zlib then says
         * Z_BUF_ERROR too) */
        unsigned char *c = malloc(cut ? cut : 1), *o = malloc(30000);
        memcpy(c, z, cut);
        size_t got;
        int rc = cnnb_inflate_zlib(c, cut, o, 30000, &got);
        if (rc != CNNB_INFLATE_CORRUPT) fprintf(stderr, "\n  cut at %zu of %zu: %d\n", cut, zn, rc);
        CNNB_ASSERT_EQ_INT(rc, CNNB_INFLATE_CORRUPT);
        free(o);
        o = malloc(3000);
        rc = cnnb_inflate_zlib(c, cut, o, 3000, &got);
        CU_ASSERT(rc == CNNB_INFLATE_CORRUPT || rc == CNNB_INFLATE_OVERFLOW);
        free(c), free(o);
      }
      free(z), free(d);
    }
}

static void test_flipped_bits_and_noise(void)
{
  for (int kind = 0; kind < D_KINDS; kind++) {
    unsigned char *d = make_data(20000, kind);
    size_t zn;
    unsigned char *z = zlib_deflate(d, 20000, 1 + kind * 2, 15, Z_DEFAULT_STRATEGY, &zn);
    unsigned char *c = malloc(zn);
    for (int it = 0; it < 300; it++) {
      memcpy(c, z, zn);
      for (int f = 1 + (int)(rnd() % 3); f > 0; f--) c[2 + rnd() % (zn - 2)] ^= (unsigned char)(1u << (rnd() % 8));
      /* both decoders agree on every corrupted stream, whatever the output room */
      decode_both(c, zn, it % 2 ? 20000 : 20000 + rnd() % 100000, NULL, NULL);
    }
    free(c), free(z), free(d);
  }
  /* random bytes behind a valid header */
  for (int it = 0; it < 3000; it++) {
    size_t n = 3 + rnd() % 400;
    unsigned char *c = malloc(n);
    for (size_t i = 0; i < n; i++) c[i] = (unsigned char)rnd();
    c[0] = 0x78, c[1] = 0x9c;
    if (it % 3 == 0) c[2] = (unsigned char)((c[2] & ~6u) | 2); /* fixed block */
    if (it % 3 == 1) c[2] = (unsigned char)((c[2] & ~6u) | 4); /* dynamic block */
    decode_both(c, n, 1 + rnd() % 3000, NULL, NULL);
    free(c);
  }
}

static void test_raw_and_adler(void)
{
  /* raw DEFLATE: the blocks' length is reported */
  unsigned char *d = make_data(40000, D_IMAGE);
  size_t zn, got, used;
  unsigned char *z = zlib_deflate(d, 40000, 4, -15, Z_DEFAULT_STRATEGY, &zn), *o = malloc(40000);
  CNNB_ASSERT_EQ_INT(cnnb_inflate_raw(z, zn, o, 40000, &got, &used), CNNB_INFLATE_OK);
  CNNB_ASSERT_EQ_INT(got, 40000);
  CNNB_ASSERT_EQ_INT(used, zn);
  CU_ASSERT(memcmp(o, d, 40000) == 0);
  free(z), free(o), free(d);
  /* adler32 against zlib's at every length up to 300, long lengths, odd starts, all 0xff */
  unsigned char *b = make_data(200000, D_RANDOM);
  for (size_t n = 0; n <= 300; n++) CNNB_ASSERT_EQ_INT(cnnb_adler32(1, b + n % 7, n), adler32(1, b + n % 7, (uInt)n));
  static const size_t lens[] = {5535, 5536, 5537, 5552, 11073, 65536, 199990};
  for (size_t i = 0; i < 7; i++) {
    CNNB_ASSERT_EQ_INT(cnnb_adler32(1, b + 3, lens[i]), adler32(1, b + 3, (uInt)lens[i]));
    CNNB_ASSERT_EQ_INT(cnnb_adler32(0x12345678u % 65521u, b, lens[i]), adler32(0x12345678u % 65521u, b, (uInt)lens[i]));
  }
  memset(b, 0xff, 200000);
  CNNB_ASSERT_EQ_INT(cnnb_adler32(1, b, 200000), adler32(1, b, 200000));
  CNNB_ASSERT_EQ_INT(cnnb_adler32(0xfff0fff0u, b, 200000), adler32(0xfff0fff0u, b, 200000));
  free(b);
}

/* ---- HDF5 chunks read as stored ----------------------------------------------------- */

/* Writes /x (n x rb bytes, one row per chunk) with deflate at level into path; returns the
 * data (malloc'ed). */
static unsigned char *write_rows(const char *path, int level, size_t n, size_t rb)
{
  unsigned char *x = malloc(n * rb);
  for (size_t i = 0; i < n; i++) {
    unsigned char *p = make_data(rb, i % 2 ? D_IMAGE : D_TEXT);
    memcpy(x + i * rb, p, rb);
    free(p);
  }
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t dx[2] = {n, rb}, cx[2] = {1, rb};
  hid_t sx = H5Screate_simple(2, dx, NULL), px = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(px, 2, cx);
  H5Pset_deflate(px, (unsigned)level);
  hid_t ds = H5Dcreate2(f, "x", H5T_NATIVE_UCHAR, sx, H5P_DEFAULT, px, H5P_DEFAULT);
  CU_ASSERT(H5Dwrite(ds, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
  H5Dclose(ds), H5Pclose(px), H5Sclose(sx);
  CU_ASSERT(H5Fclose(f) >= 0);
  return x;
}

/* Every row of path's /x through cnnb_h5_read_deflate_chunk equals x; 1 if so. */
static int rows_equal(const char *path, const unsigned char *x, size_t n, size_t rb)
{
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), ds = H5Dopen2(f, "x", H5P_DEFAULT);
  hid_t dcpl = H5Dget_create_plist(ds);
  int ok = cnnb_h5_deflate_only(dcpl);
  H5Pclose(dcpl);
  unsigned char *row = malloc(rb), *z = NULL;
  size_t zcap = 0;
  for (size_t i = 0; i < n && ok; i++) {
    hsize_t off[2] = {i, 0};
    ok = cnnb_h5_read_deflate_chunk(ds, off, row, rb, &z, &zcap) == 0 && !memcmp(row, x + i * rb, rb);
  }
  free(row), free(z);
  H5Dclose(ds), H5Fclose(f);
  return ok;
}

/* In a child process (the switch is read once per process): CNNB_INFLATE=zlib decodes the
 * same chunks with zlib, to the same bytes. */
static void test_h5_env_zlib(void)
{
  cnnb_test_tmpdir(); /* made here, so that this process removes it at exit */
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    setenv("CNNB_INFLATE", "zlib", 1);
    cnnb_h5_quiet();
    int bad = cnnb_inflate_enabled() != 0;
    unsigned char *x = write_rows(cnnb_test_path("env.h5"), 4, 6, 5000);
    bad |= !rows_equal(cnnb_test_path("env.h5"), x, 6, 5000);
    free(x);
    _exit(bad ? 1 : 0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Chunks written by HDF5's own filter at levels 1, 5, 9 decode to the data; a chunk stored
 * without the filter is copied; a corrupt chunk and a chunk never written fail. */
static void test_h5_chunks(void)
{
  cnnb_h5_quiet();
  CU_ASSERT(cnnb_inflate_enabled());
  const size_t n = 12, rb = 150 * 150 * 3;
  const char *path = cnnb_test_path("rows.h5");
  for (int level = 1; level <= 9; level += 4) {
    unsigned char *x = write_rows(path, level, n, rb);
    CU_ASSERT(rows_equal(path, x, n, rb));
    if (level == 5) {
      /* row 2 stored raw (filter mask 1), as HDF5 does when deflate would not shrink it, and
       * row 3 with a flipped byte in the middle; read after closing (HDF5 1.10 does not see a
       * chunk written by H5Dwrite_chunk before the file is flushed) */
      hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), ds = H5Dopen2(f, "x", H5P_DEFAULT);
      unsigned char *chunk = malloc(compressBound(rb)), *row = malloc(rb), *z = NULL;
      size_t zcap = 0;
      hsize_t off[2] = {2, 0}, sz = 0;
      uint32_t mask = 0;
      CU_ASSERT(H5Dwrite_chunk(ds, H5P_DEFAULT, 1, off, rb, x + 2 * rb) >= 0);
      off[0] = 3;
      CU_ASSERT(H5Dget_chunk_storage_size(ds, off, &sz) >= 0 && sz > 0);
      CU_ASSERT(H5Dread_chunk(ds, H5P_DEFAULT, off, &mask, chunk) >= 0);
      chunk[sz / 2] ^= 0x55;
      CU_ASSERT(H5Dwrite_chunk(ds, H5P_DEFAULT, 0, off, sz, chunk) >= 0);
      H5Dclose(ds), H5Fclose(f);
      f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), ds = H5Dopen2(f, "x", H5P_DEFAULT);
      off[0] = 2;
      CNNB_ASSERT_EQ_INT(cnnb_h5_read_deflate_chunk(ds, off, row, rb, &z, &zcap), 0);
      CU_ASSERT(memcmp(row, x + 2 * rb, rb) == 0);
      off[0] = 3;
      CU_ASSERT(H5Dget_chunk_storage_size(ds, off, &sz) >= 0 && sz > 0); /* there, but corrupt */
      CNNB_ASSERT_EQ_INT(cnnb_h5_read_deflate_chunk(ds, off, row, rb, &z, &zcap), -1);
      /* a row size that is not the chunk's */
      off[0] = 4;
      CNNB_ASSERT_EQ_INT(cnnb_h5_read_deflate_chunk(ds, off, row, rb - 1, &z, &zcap), -1);
      off[0] = 5;
      CNNB_ASSERT_EQ_INT(cnnb_h5_read_deflate_chunk(ds, off, row, rb, &z, &zcap), 0); /* the rest reads */
      CU_ASSERT(memcmp(row, x + 5 * rb, rb) == 0);
      free(chunk), free(row), free(z);
      H5Dclose(ds), H5Fclose(f);
    }
    free(x);
  }
  /* a dataset with a chunk never written (extent 3 rows, only row 0 written) */
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t d[2] = {3, 100}, c[2] = {1, 100};
  hid_t sp = H5Screate_simple(2, d, NULL), pl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(pl, 2, c);
  H5Pset_deflate(pl, 1);
  hid_t ds = H5Dcreate2(f, "x", H5T_NATIVE_UCHAR, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
  unsigned char row[100] = {1, 2, 3}, *z = NULL;
  size_t zcap = 0;
  hsize_t off[2] = {1, 0};
  CNNB_ASSERT_EQ_INT(cnnb_h5_read_deflate_chunk(ds, off, row, 100, &z, &zcap), -1);
  free(z);
  H5Dclose(ds), H5Pclose(pl), H5Sclose(sp), H5Fclose(f);
}

/* An image set (docs/FORMATS.md "Image sets") with 1000-byte gzip chunks and images of 3 to
 * 3600 bytes, so that images start and end inside chunks, span up to five of them and share
 * chunks with both neighbours: read in order, backwards and at random, each image equals what
 * was written; the same file with its pixels uncompressed (HDF5's read path) too; a corrupt
 * chunk fails the images that touch it, with the file and the image in the message. */
static void write_set(const char *path, const unsigned char *px, size_t total, const int64_t *offs,
                      const int32_t *shapes, int n, int deflate)
{
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t dn = total, mx = H5S_UNLIMITED, cn = 1000, on = (hsize_t)n, sd[2] = {(hsize_t)n, 3};
  hid_t sp = H5Screate_simple(1, &dn, &mx), pl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(pl, 1, &cn);
  if (deflate) H5Pset_deflate(pl, 1);
  hid_t ds = H5Dcreate2(f, "pixels", H5T_NATIVE_UINT8, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
  CU_ASSERT(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, px) >= 0);
  H5Dclose(ds), H5Pclose(pl), H5Sclose(sp);
  sp = H5Screate_simple(1, &on, NULL);
  ds = H5Dcreate2(f, "offsets", H5T_NATIVE_INT64, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  CU_ASSERT(H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, offs) >= 0);
  H5Dclose(ds), H5Sclose(sp);
  sp = H5Screate_simple(2, sd, NULL);
  ds = H5Dcreate2(f, "shapes", H5T_NATIVE_INT32, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  CU_ASSERT(H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, shapes) >= 0);
  H5Dclose(ds), H5Sclose(sp);
  H5Fclose(f);
}

static int set_reads(const char *path, const unsigned char *px, const int64_t *offs, const int32_t *shapes, int n)
{
  cnnb_imageset *s = NULL;
  if (cnnb_imageset_open(&s, path)) return 0;
  int ok = cnnb_imageset_count(s) == n;
  unsigned char *buf = malloc(3600);
  for (int pass = 0; pass < 3 && ok; pass++)
    for (int k = 0; k < n && ok; k++) {
      const int i = pass == 0 ? k : pass == 1 ? n - 1 - k : (int)(rnd() % (unsigned)n);
      const size_t len = (size_t)shapes[3 * i] * shapes[3 * i + 1] * 3;
      ok = cnnb_imageset_read(s, i, buf) == 0 && !memcmp(buf, px + offs[i], len);
    }
  free(buf);
  cnnb_imageset_close(s);
  return ok;
}

static void test_imageset_chunks(void)
{
  enum { N = 40 };
  int64_t offs[N];
  int32_t shapes[3 * N];
  size_t total = 0;
  for (int i = 0; i < N; i++) {
    const int h = i % 7 == 3 ? 1 : 1 + (int)(rnd() % 30), w = i % 7 == 3 ? 1 : 1 + (int)(rnd() % 40);
    shapes[3 * i] = h, shapes[3 * i + 1] = w, shapes[3 * i + 2] = 3;
    offs[i] = (int64_t)total;
    total += (size_t)h * w * 3;
  }
  unsigned char *px = make_data(total, D_IMAGE);
  const char *gz = cnnb_test_path("set_gz.h5"), *raw = cnnb_test_path("set_raw.h5");
  write_set(gz, px, total, offs, shapes, N, 1);
  write_set(raw, px, total, offs, shapes, N, 0);
  CU_ASSERT(set_reads(gz, px, offs, shapes, N));
  CU_ASSERT(set_reads(raw, px, offs, shapes, N));
  /* corrupt the chunk that holds the middle image's first byte */
  const int mid = N / 2;
  hid_t f = H5Fopen(gz, H5F_ACC_RDWR, H5P_DEFAULT), ds = H5Dopen2(f, "pixels", H5P_DEFAULT);
  hsize_t off = (hsize_t)(offs[mid] / 1000 * 1000), sz = 0;
  uint32_t mask = 0;
  unsigned char chunk[2048];
  CU_ASSERT(H5Dget_chunk_storage_size(ds, &off, &sz) >= 0 && sz <= sizeof chunk);
  CU_ASSERT(H5Dread_chunk(ds, H5P_DEFAULT, &off, &mask, chunk) >= 0);
  chunk[sz / 2] ^= 0x55;
  CU_ASSERT(H5Dwrite_chunk(ds, H5P_DEFAULT, 0, &off, sz, chunk) >= 0);
  H5Dclose(ds), H5Fclose(f);
  cnnb_imageset *s = NULL;
  CU_ASSERT_FATAL(cnnb_imageset_open(&s, gz) == 0);
  unsigned char *buf = malloc(3600);
  CNNB_ASSERT_EQ_INT(cnnb_imageset_read(s, mid, buf), CNNB_EIO);
  char want[64];
  snprintf(want, sizeof want, "of image %d", mid);
  CU_ASSERT(strstr(cnnb_error_message(), gz) != NULL && strstr(cnnb_error_message(), want) != NULL);
  CNNB_ASSERT_EQ_INT(cnnb_imageset_read(s, 0, buf), 0); /* other chunks still read */
  CU_ASSERT(memcmp(buf, px, (size_t)shapes[0] * shapes[1] * 3) == 0);
  free(buf);
  cnnb_imageset_close(s);
  free(px);
}

int main(void)
{
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("inflate", NULL, NULL);
  CU_add_test(s, "CNNB_INFLATE=zlib: zlib decodes the same chunks", test_h5_env_zlib);
  CU_add_test(s, "round trips: levels 0-9, data kinds, sizes", test_levels_kinds);
  CU_add_test(s, "round trips: strategies and window sizes", test_strategies_windows);
  CU_add_test(s, "round trips: 1 MiB and mixed data", test_one_mib);
  CU_add_test(s, "distance 32768, runs of 258, every short distance", test_far_and_long_matches);
  CU_add_test(s, "code tables accepted and rejected as zlib does", test_table_cases);
  CU_add_test(s, "headers, trailer, stored blocks", test_headers_and_trailer);
  CU_add_test(s, "truncated at every byte", test_truncated_everywhere);
  CU_add_test(s, "flipped bits and random input agree with zlib", test_flipped_bits_and_noise);
  CU_add_test(s, "raw DEFLATE and adler32", test_raw_and_adler);
  CU_add_test(s, "HDF5 chunks read as stored: levels, raw, corrupt, missing", test_h5_chunks);
  CU_add_test(s, "image sets: photos across gzip chunks, any order, corrupt chunk", test_imageset_chunks);
  return cnnb_test_run();
}
