/* xoshiro256** seeded through splitmix64: small, fast, and good enough for initialisation,
 * shuffling, dropout masks and augmentation. */
#include "cnnb/rng.h"

#include <math.h>

static uint64_t splitmix(uint64_t *x)
{
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void cnnb_rng_seed(cnnb_rng *r, uint64_t seed, uint64_t a, uint64_t b, uint64_t c)
{
  uint64_t x = seed;
  x = splitmix(&x) ^ (a * 0xd1342543de82ef95ULL);
  x = splitmix(&x) ^ (b * 0xa0761d6478bd642fULL);
  x = splitmix(&x) ^ (c * 0xe7037ed1a0b428dbULL);
  for (int i = 0; i < 4; i++) r->s[i] = splitmix(&x);
  r->have_spare = 0;
  r->spare = 0;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t cnnb_rng_u64(cnnb_rng *r)
{
  uint64_t *s = r->s;
  uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return out;
}

float cnnb_rng_uniform(cnnb_rng *r) { return (float)(cnnb_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float cnnb_rng_normal(cnnb_rng *r)
{
  if (r->have_spare) {
    r->have_spare = 0;
    return r->spare;
  }
  double u, v, s;
  do {
    u = 2.0 * ((double)(cnnb_rng_u64(r) >> 11) * 0x1.0p-53) - 1.0;
    v = 2.0 * ((double)(cnnb_rng_u64(r) >> 11) * 0x1.0p-53) - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  double m = sqrt(-2.0 * log(s) / s);
  r->spare = (float)(v * m);
  r->have_spare = 1;
  return (float)(u * m);
}

uint64_t cnnb_rng_below(cnnb_rng *r, uint64_t n)
{
  uint64_t lim = -n % n, x;
  do x = cnnb_rng_u64(r);
  while (x < lim);
  return x % n;
}

void cnnb_rng_shuffle_long(cnnb_rng *r, long *a, long n)
{
  for (long i = n - 1; i > 0; i--) {
    long j = (long)cnnb_rng_below(r, (uint64_t)i + 1), t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}
