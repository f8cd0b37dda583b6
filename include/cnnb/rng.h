/* Counter-based random numbers: everything random in cnn-batch derives from
 * (seed, stream) so that a run is reproducible on any rank count. */
#ifndef CNNB_RNG_H
#define CNNB_RNG_H
#include <stdint.h>

typedef struct cnnb_rng {
  uint64_t s[4];
  int have_spare;
  float spare;
} cnnb_rng;

/* Seeds from a seed and up to three stream numbers (say rank, epoch, step). */
void cnnb_rng_seed(cnnb_rng *r, uint64_t seed, uint64_t a, uint64_t b, uint64_t c);
uint64_t cnnb_rng_u64(cnnb_rng *r);
float cnnb_rng_uniform(cnnb_rng *r);           /* [0, 1) */
float cnnb_rng_normal(cnnb_rng *r);            /* mean 0, sd 1 */
uint64_t cnnb_rng_below(cnnb_rng *r, uint64_t n); /* [0, n) without modulo bias */
void cnnb_rng_shuffle_long(cnnb_rng *r, long *a, long n);
#endif
