/* Augmentation: crops and flips move pixels exactly, draws depend only on the sample's position
 * in the global batch (not on how the batch is split), and about half the images flip. */
#include <string.h>

#include "cnnb/augment.h"
#include "cnnb_test.h"

static const cnnb_shape S = {2, 5, 6};

static void fill(float *x, int n)
{
  for (int i = 0; i < n * (int)cnnb_shape_size(S); i++) x[i] = (float)(i + 1);
}

static void test_flip_only(void)
{
  float x[4 * 60], ref[4 * 60], scratch[30];
  cnnb_augment a = {0, 1};
  fill(x, 4);
  memcpy(ref, x, sizeof x);
  int flipped = 0;
  for (int trial = 0; trial < 50; trial++) {
    memcpy(x, ref, sizeof x);
    cnnb_augment_batch(&a, x, 4, S, 9, 0, (uint64_t)trial, 0, scratch);
    for (int i = 0; i < 4; i++) {
      const float *o = x + i * 60, *r = ref + i * 60;
      int same = !memcmp(o, r, 60 * sizeof(float)), mirror = 1;
      for (int c = 0; c < 2; c++)
        for (int y = 0; y < 5; y++)
          for (int xx = 0; xx < 6; xx++) mirror &= o[c * 30 + y * 6 + xx] == r[c * 30 + y * 6 + 5 - xx];
      CU_ASSERT(same || mirror);
      flipped += !same;
    }
  }
  /* 200 fair coin flips: far from 0 and 200. */
  CU_ASSERT(flipped > 60 && flipped < 140);
}

static void test_crop_shift(void)
{
  float x[60], ref[60], scratch[30];
  cnnb_augment a = {2, 0};
  int moved = 0;
  for (int trial = 0; trial < 20; trial++) {
    fill(x, 1);
    memcpy(ref, x, sizeof x);
    cnnb_augment_batch(&a, x, 1, S, 3, 1, (uint64_t)trial, 7, scratch);
    /* Find the shift from the top-left source pixel visible, then check every pixel. */
    int found = 0;
    for (int dy = -2; dy <= 2 && !found; dy++)
      for (int dx = -2; dx <= 2 && !found; dx++) {
        int ok = 1;
        for (int c = 0; c < 2; c++)
          for (int y = 0; y < 5; y++)
            for (int xx = 0; xx < 6; xx++) {
              int sy = y + dy, sx = xx + dx;
              float want = sy >= 0 && sy < 5 && sx >= 0 && sx < 6 ? ref[c * 30 + sy * 6 + sx] : 0.0f;
              ok &= x[c * 30 + y * 6 + xx] == want;
            }
        if (ok) found = 1, moved += dx || dy;
      }
    CU_ASSERT(found);
  }
  CU_ASSERT(moved >= 10);
}

static void test_split_invariance(void)
{
  /* One batch of 6 augmented at once equals the same batch augmented as 4 + 2 (two ranks). */
  float a1[6 * 60], a2[6 * 60], scratch[30];
  cnnb_augment a = {1, 1};
  fill(a1, 6);
  memcpy(a2, a1, sizeof a1);
  cnnb_augment_batch(&a, a1, 6, S, 11, 2, 5, 0, scratch);
  cnnb_augment_batch(&a, a2, 4, S, 11, 2, 5, 0, scratch);
  cnnb_augment_batch(&a, a2 + 4 * 60, 2, S, 11, 2, 5, 4, scratch);
  CU_ASSERT(memcmp(a1, a2, sizeof a1) == 0);
}

int main(void)
{
  CU_initialize_registry();
  CU_pSuite s = CU_add_suite("augment", NULL, NULL);
  CU_add_test(s, "flip mirrors or keeps, about half the time", test_flip_only);
  CU_add_test(s, "crop with padding shifts exactly, zero outside", test_crop_shift);
  CU_add_test(s, "draws do not depend on the batch split", test_split_invariance);
  return cnnb_test_run();
}
