/* Whole-buffer DEFLATE / zlib decoding (see inflate.h).
 *
 * Design (after RFC 1951; the fast-path ideas are the well-known ones of libdeflate, no code
 * taken): a 64-bit bit buffer refilled by one unaligned 8-byte load while at least 16 input
 * bytes remain; Huffman tables of 32-bit entries where one lookup gives a literal, or a length
 * or distance base together with the number of its extra bits, so that the value is
 * base + (bits >> codeword length); codes longer than the primary table's width go through a
 * second-level subtable. Matches are copied 16 or 8 bytes at a time, or as a repeated 8-byte
 * pattern for distances below 8, which may write up to 15 bytes past the match: the fast loop
 * runs only while at least FAST_OUT bytes of output room remain. Near the end of either
 * buffer a checked loop takes over: it refills byte by byte, feeds zero bytes past the end of
 * the input (reporting truncation once one of them has been consumed, at the next refill or
 * at the stream's end, so at most 8 are ever decoded) and copies matches byte by byte within
 * cap. */
#include "io/inflate.h"

#include <zlib.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Table entry: bits 0-7 bits to consume (codeword + extra bits; for a subtable pointer the
 * primary width), bits 8-11 codeword length (for a pointer the subtable's index width),
 * flags, and bits 16-31 the value (literal byte, length or distance base, subtable start,
 * code-length symbol). An entry without flags is a length or a distance. */
#define F_LIT 0x1000u
#define F_EOB 0x2000u
#define F_BAD 0x4000u /* a symbol that may not occur: 286, 287, distance 30, 31, or no code */
#define F_SUB 0x8000u

#define LIT_BITS 11
#define DIST_BITS 8
#define PRE_BITS 7
#define LIT_MASK ((1u << LIT_BITS) - 1)
#define DIST_MASK ((1u << DIST_BITS) - 1)
/* Primary tables plus room for every subtable a complete code can need (checked while
 * building: a subtable of depth d holds at least d + 1 codes, so 288 codes need at most
 * 922 subtable entries and 32 distance codes at most 512). */
#define LIT_TAB ((1u << LIT_BITS) + 1024)
#define DIST_TAB ((1u << DIST_BITS) + 512)

/* The fast loop writes at most 3 literals, or a 258-byte match rounded up to 16 bytes. */
#define FAST_OUT 288
/* ... and reads at most two 8-byte refills, 7 bytes apart. */
#define FAST_IN 16

enum { KIND_LIT, KIND_DIST, KIND_PRE };

static const uint16_t len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                       33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                       1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
/* Order of the code-length code's lengths in a dynamic block header. */
static const uint8_t pre_order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

static inline uint64_t load_le64(const uint8_t *p)
{
  uint64_t v;
  memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  memcpy(p, &v, 8);
}

/* The table entry of symbol sym whose codeword (in this table level) is cw bits long. */
static uint32_t sym_entry(int kind, unsigned sym, unsigned cw)
{
  const uint32_t c = cw << 8 | cw;
  if (kind == KIND_LIT) {
    if (sym < 256) return (uint32_t)sym << 16 | F_LIT | c;
    if (sym == 256) return F_EOB | c;
    if (sym < 286) return (uint32_t)len_base[sym - 257] << 16 | cw << 8 | (cw + len_extra[sym - 257]);
    return F_BAD | c;
  }
  if (kind == KIND_DIST) {
    if (sym < 30) return (uint32_t)dist_base[sym] << 16 | cw << 8 | (cw + dist_extra[sym]);
    return F_BAD | c;
  }
  return (uint32_t)sym << 16 | c;
}

/* Byte bit-reversal table: DEFLATE sends Huffman codes most significant bit first into a
 * stream read from the least significant bit, so table indices are reversed codes. */
#define R2(x) x, x + 128, x + 64, x + 192
#define R4(x) R2(x), R2(x + 32), R2(x + 16), R2(x + 48)
#define R6(x) R4(x), R4(x + 8), R4(x + 4), R4(x + 12)
static const uint8_t rev8[256] = {R6(0), R6(2), R6(1), R6(3)};
#undef R2
#undef R4
#undef R6

static inline unsigned reverse_bits(unsigned code, unsigned len)
{
  return ((unsigned)rev8[code & 255] << 8 | rev8[code >> 8 & 255]) >> (16 - len);
}

/* Builds the table for the canonical Huffman code of lens[0..nsym) (RFC 1951 3.2.2): 2^root
 * primary entries indexed by the next root input bits, subtables after them. Accepts what
 * zlib's inflate accepts: no over-subscribed lengths; an incomplete code only when its
 * longest code is 1 bit long (one code, or none at all: every entry then marks an error),
 * never for the code-length code. Returns 0 or -1. */
static int build_table(uint32_t *tab, unsigned tab_size, unsigned root, const uint8_t *lens, unsigned nsym,
                       int kind)
{
  unsigned count[16] = {0}, offs[16], next[16], rem[16];
  uint16_t sorted[288];
  for (unsigned s = 0; s < nsym; s++) count[lens[s]]++;
  count[0] = 0;
  unsigned max = 15;
  while (max > 0 && count[max] == 0) max--;
  const unsigned full = 1u << root;
  if (max == 0) {
    if (kind == KIND_PRE) return -1;
    for (unsigned i = 0; i < full; i++) tab[i] = F_BAD | 1u << 8 | 1u;
    return 0;
  }
  int left = 1;
  for (unsigned len = 1; len <= 15; len++) {
    left = left * 2 - (int)count[len];
    if (left < 0) return -1; /* over-subscribed */
  }
  if (left > 0) {
    if (kind == KIND_PRE || max != 1) return -1; /* incomplete */
    for (unsigned i = 0; i < full; i++) tab[i] = F_BAD | 1u << 8 | 1u;
  }
  offs[1] = 0;
  for (unsigned len = 1; len < 15; len++) offs[len + 1] = offs[len] + count[len];
  for (unsigned s = 0; s < nsym; s++)
    if (lens[s]) sorted[offs[lens[s]]++] = (uint16_t)s;
  unsigned code = 0, nsorted = 0;
  for (unsigned len = 1; len <= 15; len++) {
    code = (code + count[len - 1]) << 1;
    next[len] = code;
    rem[len] = count[len];
    nsorted += count[len];
  }
  unsigned used = full, cur_prefix = ~0u, sub_start = 0, sub_bits = 0;
  for (unsigned i = 0; i < nsorted; i++) {
    const unsigned s = sorted[i], len = lens[s], c = next[len]++;
    rem[len]--;
    if (len <= root) {
      const uint32_t e = sym_entry(kind, s, len);
      for (unsigned j = reverse_bits(c, len); j < full; j += 1u << len) tab[j] = e;
      continue;
    }
    const unsigned sub_len = len - root, prefix = reverse_bits(c >> sub_len, root);
    if (prefix != cur_prefix) {
      /* A new subtable, deep enough for the codes that share this prefix: they come next
       * in canonical order and fill it (zlib's inflate_table sizes its subtables so too). */
      cur_prefix = prefix;
      sub_bits = sub_len;
      int room = 1 << sub_bits;
      room -= (int)rem[len] + 1; /* this code and the other remaining ones of its length */
      while (room > 0 && root + sub_bits < max) {
        sub_bits++;
        room = room * 2 - (int)rem[root + sub_bits];
      }
      sub_start = used;
      used += 1u << sub_bits;
      if (used > tab_size) return -1;
      tab[prefix] = F_SUB | (uint32_t)sub_start << 16 | sub_bits << 8 | root;
    }
    const uint32_t e = sym_entry(kind, s, sub_len);
    for (unsigned j = reverse_bits(c, sub_len); j < (1u << sub_bits); j += 1u << sub_len)
      tab[sub_start + j] = e;
  }
  return 0;
}

/* Tables of the fixed Huffman codes (RFC 1951 3.2.6), built once. */
static uint32_t fixed_lit[LIT_TAB], fixed_dist[DIST_TAB];
static pthread_once_t fixed_once = PTHREAD_ONCE_INIT;

static void build_fixed(void)
{
  uint8_t lens[288];
  unsigned i = 0;
  for (; i < 144; i++) lens[i] = 8;
  for (; i < 256; i++) lens[i] = 9;
  for (; i < 280; i++) lens[i] = 7;
  for (; i < 288; i++) lens[i] = 8;
  build_table(fixed_lit, LIT_TAB, LIT_BITS, lens, 288, KIND_LIT);
  for (i = 0; i < 32; i++) lens[i] = 5;
  build_table(fixed_dist, DIST_TAB, DIST_BITS, lens, 32, KIND_DIST);
}

/* Adds whole bytes to the bit buffer: at least 56 valid bits afterwards. Bits above `left`
 * may hold the next byte's bits already: a later refill ORs the same bits in again. */
#define REFILL_FAST()                                                                              \
  do {                                                                                             \
    buf |= load_le64(in) << left;                                                                  \
    in += (63 - left) >> 3;                                                                        \
    left |= 56;                                                                                    \
  } while (0)

/* Near the end: byte by byte, then zero bytes past the end of the input. When the bits of a
 * zero byte added earlier have been consumed, the stream was truncated. */
#define REFILL()                                                                                   \
  do {                                                                                             \
    if (in_end - in >= 8) {                                                                        \
      REFILL_FAST();                                                                               \
    } else {                                                                                       \
      while (left <= 56) {                                                                         \
        if (in < in_end) {                                                                         \
          buf |= (uint64_t)*in++ << left;                                                          \
        } else {                                                                                   \
          if (over * 8 > left) goto truncated;                                                     \
          over++;                                                                                  \
        }                                                                                          \
        left += 8;                                                                                 \
      }                                                                                            \
    }                                                                                              \
  } while (0)

#define DROP(nb)                                                                                   \
  do {                                                                                             \
    buf >>= (nb);                                                                                  \
    left -= (nb);                                                                                  \
  } while (0)

/* Value of a length or distance entry: base + extra bits, the bits dropped. */
#define TAKE_VALUE(e, v)                                                                           \
  do {                                                                                             \
    const unsigned tot_ = (e) & 63;                                                                \
    (v) = ((e) >> 16) + (size_t)((buf & (((uint64_t)1 << tot_) - 1)) >> (((e) >> 8) & 15));       \
    DROP(tot_);                                                                                    \
  } while (0)

/* Copies a match of len (3..258) bytes from dist (1..out - dst) bytes back; may write up to
 * 15 bytes past out + len. */
static inline __attribute__((always_inline)) void copy_match_fast(uint8_t *out, size_t dist, size_t len)
{
  uint8_t *const end = out + len;
  const uint8_t *s = out - dist;
  if (dist >= 16) {
    do {
      memcpy(out, s, 16);
      out += 16;
      s += 16;
    } while (out < end);
  } else if (dist >= 8) {
    do {
      memcpy(out, s, 8);
      out += 8;
      s += 8;
    } while (out < end);
  } else {
    /* The first dist bytes repeated over one word; stored at every multiple of dist that
     * steps at most 8 bytes, so every stored byte is right. */
    static const uint8_t step[8] = {0, 8, 8, 6, 8, 5, 6, 7};
    uint64_t w;
    if (dist == 1) {
      w = 0x0101010101010101ull * s[0];
    } else {
      w = load_le64(s) & (((uint64_t)1 << (8 * dist)) - 1);
      w |= w << (8 * dist);
      if (dist < 4) w |= w << (16 * dist);
    }
    const size_t st = step[dist];
    do {
      store_le64(out, w);
      out += st;
    } while (out < end);
  }
}

int cnnb_inflate_raw(const void *src, size_t n, void *dst, size_t cap, size_t *out_n, size_t *in_used)
{
  const uint8_t *const in_start = src, *const in_end = in_start + n, *in = in_start;
  uint8_t *const out_start = dst, *const out_end = out_start + cap, *out = out_start;
  uint64_t buf = 0;
  unsigned left = 0;
  size_t over = 0;   /* zero bytes fed past the end of the input */
  int final = 0, rc = CNNB_INFLATE_CORRUPT;
  uint32_t dyn_lit[LIT_TAB], dyn_dist[DIST_TAB];
  const uint32_t *lt, *dt;

  *out_n = 0;
  if (in_used) *in_used = 0;
  do {
    REFILL();
    final = (int)(buf & 1);
    const unsigned type = (unsigned)(buf >> 1) & 3;
    DROP(3);
    if (type == 0) {
      /* Stored: to the byte boundary, then LEN, NLEN and LEN bytes straight from the input. */
      DROP(left & 7);
      if (over * 8 > left) goto truncated;
      in = in_start + ((size_t)(in - in_start) + over - left / 8);
      buf = 0, left = 0, over = 0;
      if (in_end - in < 4) goto truncated;
      const size_t len = (size_t)in[0] | (size_t)in[1] << 8, nlen = (size_t)in[2] | (size_t)in[3] << 8;
      if (len != (~nlen & 0xffff)) goto corrupt;
      in += 4;
      if ((size_t)(in_end - in) < len) goto truncated;
      if ((size_t)(out_end - out) < len) goto overflow;
      if (len) memcpy(out, in, len);
      in += len, out += len;
      continue;
    }
    if (type == 1) {
      pthread_once(&fixed_once, build_fixed);
      lt = fixed_lit, dt = fixed_dist;
    } else if (type == 2) {
      /* Dynamic: the code-length code, then the literal/length and distance code lengths. */
      uint8_t lens[286 + 30], pre_lens[19] = {0};
      uint32_t pre_tab[1u << PRE_BITS];
      REFILL();
      const unsigned nlen = 257 + (unsigned)(buf & 31), ndist = 1 + (unsigned)(buf >> 5 & 31),
                     npre = 4 + (unsigned)(buf >> 10 & 15);
      DROP(14);
      if (nlen > 286 || ndist > 30) goto corrupt;
      for (unsigned i = 0; i < npre; i++) {
        if (left < 3) REFILL();
        pre_lens[pre_order[i]] = (uint8_t)(buf & 7);
        DROP(3);
      }
      if (build_table(pre_tab, 1u << PRE_BITS, PRE_BITS, pre_lens, 19, KIND_PRE) < 0) goto corrupt;
      for (unsigned i = 0; i < nlen + ndist;) {
        if (left < 14) REFILL();
        const uint32_t e = pre_tab[buf & ((1u << PRE_BITS) - 1)];
        const unsigned sym = e >> 16;
        DROP(e & 0xff);
        if (sym < 16) {
          lens[i++] = (uint8_t)sym;
          continue;
        }
        unsigned rep;
        uint8_t v = 0;
        if (sym == 16) {
          if (i == 0) goto corrupt; /* nothing to repeat */
          v = lens[i - 1];
          rep = 3 + (unsigned)(buf & 3);
          DROP(2);
        } else if (sym == 17) {
          rep = 3 + (unsigned)(buf & 7);
          DROP(3);
        } else {
          rep = 11 + (unsigned)(buf & 127);
          DROP(7);
        }
        if (rep > nlen + ndist - i) goto corrupt;
        memset(lens + i, v, rep);
        i += rep;
      }
      if (lens[256] == 0) goto corrupt; /* no end-of-block code */
      if (build_table(dyn_lit, LIT_TAB, LIT_BITS, lens, nlen, KIND_LIT) < 0 ||
          build_table(dyn_dist, DIST_TAB, DIST_BITS, lens + nlen, ndist, KIND_DIST) < 0)
        goto corrupt;
      lt = dyn_lit, dt = dyn_dist;
    } else {
      goto corrupt; /* block type 3 */
    }

    /* Fast loop: room for a whole match with slack, and 16 input bytes for two refills. The
     * next symbol's entry is looked up as soon as its bits are in the buffer (at least 11
     * bits left), ahead of the refill and the match copy, which then run beside the load. */
    if (in_end - in >= FAST_IN && out_end - out >= FAST_OUT) {
      REFILL_FAST();
      uint32_t e = lt[buf & LIT_MASK];
      do {
        /* Here at least 56 bits are buffered and e is the entry of the next symbol. Up to
         * three literals: 3 x 15 bits, leaving 11 for the next lookup; after two, the 26
         * bits left still hold any length symbol with its extra bits. */
        if (e & F_LIT) {
          DROP(e & 63);
          *out++ = (uint8_t)(e >> 16);
          e = lt[buf & LIT_MASK];
          if (e & F_LIT) {
            DROP(e & 63);
            *out++ = (uint8_t)(e >> 16);
            e = lt[buf & LIT_MASK];
            if (e & F_LIT) {
              DROP(e & 63);
              *out++ = (uint8_t)(e >> 16);
              e = lt[buf & LIT_MASK];
              REFILL_FAST();
              continue;
            }
          }
        }
        if (e & F_SUB) {
          DROP(LIT_BITS);
          e = lt[(e >> 16) + (buf & ((1u << ((e >> 8) & 15)) - 1))];
          if (e & F_LIT) {
            DROP(e & 63);
            *out++ = (uint8_t)(e >> 16);
            e = lt[buf & LIT_MASK];
            REFILL_FAST();
            continue;
          }
        }
        if (e & (F_EOB | F_BAD)) {
          if (e & F_BAD) goto corrupt;
          DROP(e & 63);
          goto block_done;
        }
        size_t len, dist;
        TAKE_VALUE(e, len);
        REFILL_FAST();
        e = dt[buf & DIST_MASK];
        if (e & F_SUB) {
          DROP(DIST_BITS);
          e = dt[(e >> 16) + (buf & ((1u << ((e >> 8) & 15)) - 1))];
        }
        if (e & F_BAD) goto corrupt;
        TAKE_VALUE(e, dist);
        if (dist > (size_t)(out - out_start)) goto corrupt; /* too far back */
        e = lt[buf & LIT_MASK]; /* >= 28 bits left */
        copy_match_fast(out, dist, len);
        out += len;
        REFILL_FAST();
      } while (in_end - in >= FAST_IN && out_end - out >= FAST_OUT);
    }

    /* Checked loop for the block's last symbols near either end. */
    for (;;) {
      REFILL();
      uint32_t e = lt[buf & ((1u << LIT_BITS) - 1)];
      if (e & F_SUB) {
        DROP(LIT_BITS);
        e = lt[(e >> 16) + (buf & ((1u << ((e >> 8) & 15)) - 1))];
      }
      if (e & F_LIT) {
        if (out == out_end) goto overflow;
        DROP(e & 0xff);
        *out++ = (uint8_t)(e >> 16);
        continue;
      }
      if (e & (F_EOB | F_BAD)) {
        if (e & F_BAD) goto corrupt;
        DROP(e & 0xff);
        break;
      }
      size_t len, dist;
      TAKE_VALUE(e, len);
      REFILL();
      e = dt[buf & ((1u << DIST_BITS) - 1)];
      if (e & F_SUB) {
        DROP(DIST_BITS);
        e = dt[(e >> 16) + (buf & ((1u << ((e >> 8) & 15)) - 1))];
      }
      if (e & F_BAD) goto corrupt;
      TAKE_VALUE(e, dist);
      if (dist > (size_t)(out - out_start)) goto corrupt;
      if (len > (size_t)(out_end - out)) goto overflow;
      for (size_t i = 0; i < len; i++) out[i] = out[i - dist];
      out += len;
    }
  block_done:;
  } while (!final);

  /* The bytes the blocks took, the last partial byte included; none of them fed zeros. */
  if (over * 8 > left) goto truncated;
  *out_n = (size_t)(out - out_start);
  if (in_used) *in_used = (size_t)(in - in_start) + over - left / 8;
  return CNNB_INFLATE_OK;

overflow:
  /* Zero bytes fed past a truncated input can decode to anything: truncation comes first. */
  rc = over * 8 > left ? CNNB_INFLATE_CORRUPT : CNNB_INFLATE_OVERFLOW;
  *out_n = (size_t)(out - out_start);
  return rc;
truncated:
corrupt:
  *out_n = (size_t)(out - out_start);
  return CNNB_INFLATE_CORRUPT;
}

/* adler32 (RFC 1950 8.2) 32 bytes a step with SSSE3: per step s2 gains 32 s1 plus the bytes
 * weighted 32..1 (pmaddubsw), s1 the bytes' sum (psadbw); reduced mod 65521 every 5536 bytes
 * (zlib's NMAX rounded down to whole steps), before any 32-bit lane can overflow. zlib 1.2.13's
 * scalar adler32 was an eighth of the decoding time. */
#define ADLER_BASE 65521u
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CNNB_ADLER_SSSE3 1
__attribute__((target("ssse3"))) static uint32_t adler32_ssse3(uint32_t adler, const uint8_t *p, size_t n)
{
  uint64_t s1 = adler & 0xffff, s2 = adler >> 16;
  const __m128i w_hi = _mm_setr_epi8(32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17);
  const __m128i w_lo = _mm_setr_epi8(16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
  const __m128i ones = _mm_set1_epi16(1), zero = _mm_setzero_si128();
  while (n >= 32) {
    size_t steps = n / 32;
    if (steps > 5536 / 32) steps = 5536 / 32;
    n -= steps * 32;
    __m128i vs1 = zero, vs2 = zero, vps = zero;
    const uint64_t nbytes = steps * 32;
    for (size_t k = 0; k < steps; k++, p += 32) {
      const __m128i a = _mm_loadu_si128((const __m128i *)p), b = _mm_loadu_si128((const __m128i *)(p + 16));
      vps = _mm_add_epi32(vps, vs1);
      vs1 = _mm_add_epi32(vs1, _mm_add_epi32(_mm_sad_epu8(a, zero), _mm_sad_epu8(b, zero)));
      vs2 = _mm_add_epi32(vs2, _mm_madd_epi16(_mm_maddubs_epi16(a, w_hi), ones));
      vs2 = _mm_add_epi32(vs2, _mm_madd_epi16(_mm_maddubs_epi16(b, w_lo), ones));
    }
    uint32_t l1[4], lp[4], l2[4];
    _mm_storeu_si128((__m128i *)l1, vs1);
    _mm_storeu_si128((__m128i *)lp, vps);
    _mm_storeu_si128((__m128i *)l2, vs2);
    s2 += nbytes * s1 + 32 * ((uint64_t)lp[0] + lp[1] + lp[2] + lp[3]) + ((uint64_t)l2[0] + l2[1] + l2[2] + l2[3]);
    s1 += (uint64_t)l1[0] + l1[1] + l1[2] + l1[3];
    s1 %= ADLER_BASE;
    s2 %= ADLER_BASE;
  }
  while (n--) {
    s1 += *p++;
    s2 += s1;
  }
  return (uint32_t)((s2 % ADLER_BASE) << 16 | (s1 % ADLER_BASE));
}
#endif

uint32_t cnnb_adler32(uint32_t adler, const void *p, size_t n)
{
#ifdef CNNB_ADLER_SSSE3
  static int ssse3 = -1;
  if (ssse3 < 0) ssse3 = __builtin_cpu_supports("ssse3") ? 1 : 0;
  if (ssse3 && n >= 64) return adler32_ssse3(adler, p, n);
#endif
  return (uint32_t)adler32_z(adler, p, n);
}

int cnnb_inflate_zlib(const void *src, size_t n, void *dst, size_t cap, size_t *out_n)
{
  const uint8_t *s = src;
  *out_n = 0;
  if (n < 2) return CNNB_INFLATE_CORRUPT;
  /* RFC 1950: CMF (method 8, window 2^(CINFO+8) <= 32K), FLG with FCHECK and FDICT. */
  if (((unsigned)s[0] << 8 | s[1]) % 31 != 0 || (s[0] & 15) != 8 || (s[0] >> 4) > 7)
    return CNNB_INFLATE_CORRUPT;
  if (s[1] & 0x20) return CNNB_INFLATE_UNSUPPORTED;
  size_t used = 0, got = 0;
  int rc = cnnb_inflate_raw(s + 2, n - 2, dst, cap, &got, &used);
  if (rc != CNNB_INFLATE_OK) return rc;
  const uint8_t *t = s + 2 + used;
  if (n - 2 - used < 4) return CNNB_INFLATE_CORRUPT;
  const uint32_t want = (uint32_t)t[0] << 24 | (uint32_t)t[1] << 16 | (uint32_t)t[2] << 8 | t[3];
  if (cnnb_adler32(1, dst, got) != want) return CNNB_INFLATE_CORRUPT;
  *out_n = got;
  return CNNB_INFLATE_OK;
}

/* ---- The switch ------------------------------------------------------------------------ */

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static int env_enabled;

static void env_read_once(void)
{
  const char *env = getenv("CNNB_INFLATE");
  env_enabled = !(env && strcmp(env, "zlib") == 0);
}

int cnnb_inflate_enabled(void)
{
  pthread_once(&env_once, env_read_once);
  return env_enabled;
}
