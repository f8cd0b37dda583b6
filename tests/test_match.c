/* Matching (cnnb/match.h): SHA-256 against FIPS 180-2's test vectors, sgemm distances against
 * a 3-4-5 triangle, top-K order, the threshold choice and 10-fold protocol on a worked example
 * computed by hand, pairs-file parsing and its errors. */
#include <stdlib.h>
#include <string.h>

#include "cnnb/match.h"
#include "cnnb_test.h"

static void hex_of(const char *msg, size_t n, size_t piece, char *hex)
{
  cnnb_sha256 s;
  unsigned char d[32];
  cnnb_sha256_init(&s);
  for (size_t i = 0; i < n; i += piece) cnnb_sha256_update(&s, msg + i, n - i < piece ? n - i : piece);
  cnnb_sha256_final(&s, d, hex);
}

static void sha256_vectors(void)
{
  char hex[65];
  hex_of("", 0, 1, hex);
  CU_ASSERT_STRING_EQUAL(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  hex_of("abc", 3, 3, hex);
  CU_ASSERT_STRING_EQUAL(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 56 bytes: padding spills */
  hex_of(m, strlen(m), 5, hex);
  CU_ASSERT_STRING_EQUAL(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  char *a = malloc(1000000);
  CU_ASSERT_PTR_NOT_NULL_FATAL(a);
  memset(a, 'a', 1000000);
  hex_of(a, 1000000, 4099, hex); /* pieces not aligned on blocks */
  CU_ASSERT_STRING_EQUAL(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  free(a);
}

static void test_sha256(void)
{
  char hex[65];
  /* both implementations: the CPU's SHA extensions (where present) and the portable code */
  int hw = cnnb_sha256_hw(1);
  sha256_vectors();
  if (hw) {
    CU_ASSERT_EQUAL(cnnb_sha256_hw(0), 0);
    sha256_vectors();
    cnnb_sha256_hw(1);
  } else {
    fprintf(stderr, "\n  note: no SHA extensions on this CPU: portable SHA-256 only\n");
  }
  /* the model hash is the hash of both files' bytes in one stream */
  FILE *f = fopen(cnnb_test_path("h1"), "w");
  fputs("ab", f);
  fclose(f);
  f = fopen(cnnb_test_path("h2"), "w");
  fputs("c", f);
  fclose(f);
  CU_ASSERT_EQUAL(cnnb_model_hash(cnnb_test_path("h1"), cnnb_test_path("h2"), hex), 0);
  CU_ASSERT_STRING_EQUAL(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CU_ASSERT_EQUAL(cnnb_model_hash(cnnb_test_path("h1"), cnnb_test_path("nope"), hex), CNNB_EIO);
  CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), "nope"));
}

static void test_dist_topk(void)
{
  /* a = (0,0), (3,4); b = (0,0), (6,8), (3,0) */
  const float a[] = {0, 0, 3, 4}, b[] = {0, 0, 6, 8, 3, 0};
  float an[2], bn[3], d[6];
  cnnb_match_sqnorms(a, 2, 2, an);
  cnnb_match_sqnorms(b, 3, 2, bn);
  cnnb_match_dist(a, an, 2, b, bn, 3, 2, d);
  const float want[] = {0, 10, 3, 5, 5, 4};
  for (int i = 0; i < 6; i++) CNNB_ASSERT_NEAR(d[i], want[i], 1e-5);

  cnnb_match_cand l[3];
  int n = 0;
  const float v[] = {5, 1, 3, 1, 0.5f, 9};
  for (int i = 0; i < 6; i++) n = cnnb_match_topk_insert(l, n, 3, v[i], 10 + i);
  CNNB_ASSERT_EQ_INT(n, 3);
  /* 0.5 (row 14), then the tie at 1 in row order: 11, 13 */
  CNNB_ASSERT_EQ_INT(l[0].row, 14);
  CNNB_ASSERT_EQ_INT(l[1].row, 11);
  CNNB_ASSERT_EQ_INT(l[2].row, 13);
  n = cnnb_match_topk_insert(l, n, 3, 1, 12); /* same distance, row between: pushes 13 out */
  CNNB_ASSERT_EQ_INT(l[2].row, 12);
}

static void test_threshold(void)
{
  /* sorted 0.375 S, 0.75 D, 1.0 S, 4.125 D: cuts right 2, 3, 2, 3, 2 -> first best 0.5625 */
  const float d[] = {1.0f, 0.375f, 4.125f, 0.75f};
  const int s[] = {1, 1, 0, 0};
  long order[4];
  double acc;
  CNNB_ASSERT_NEAR(cnnb_verify_best_threshold(d, s, 4, order, &acc), 0.5625, 1e-12);
  CNNB_ASSERT_NEAR(acc, 0.75, 1e-12);
  /* all same: threshold above the largest (largest + 1) */
  const int all[] = {1, 1, 1, 1};
  CNNB_ASSERT_NEAR(cnnb_verify_best_threshold(d, all, 4, order, &acc), 5.125, 1e-12);
  CNNB_ASSERT_NEAR(acc, 1, 1e-12);
  /* equal distances of both kinds: no threshold between them */
  const float e[] = {1, 1, 2};
  const int se[] = {1, 0, 0};
  CNNB_ASSERT_NEAR(cnnb_verify_best_threshold(e, se, 3, order, &acc), 1, 1e-12); /* below all: 2 of 3 */
  CNNB_ASSERT_NEAR(acc, 2.0 / 3, 1e-12);
}

static const char *write_file(const char *name, const char *text)
{
  const char *p = cnnb_test_path(name);
  FILE *f = fopen(p, "w");
  fputs(text, f);
  fclose(f);
  return p;
}

/* The worked example of tests/e2e/match.sh: alice 0, 0.25; bob 1.0, 1.5; carol -0.5, -0.875;
 * dave 2.25, 3.25 (1-D). */
static void test_pairs_verify(void)
{
  char *ids[] = {"alice", "bob", "alice", "carol", "bob", "dave", "carol", "dave"};
  const float x[] = {0, 1.0f, 0.25f, -0.5f, 1.5f, 2.25f, -0.875f, 3.25f};
  const char *p = write_file("pairs.txt", "2 2\nalice 1 2\nbob 1 2\nalice 1 bob 1\nalice 2 carol 1\n"
                                          "carol 1 2\ndave\t1\t2\nbob 2 dave 1\ncarol 2 dave 2\n\n");
  cnnb_pairs pr;
  CU_ASSERT_EQUAL_FATAL(cnnb_pairs_load(&pr, p, ids, 8, "E.h5"), 0);
  CNNB_ASSERT_EQ_INT(pr.n, 8);
  const long wa[] = {0, 1, 0, 2, 3, 5, 4, 6}, wb[] = {2, 4, 1, 3, 6, 7, 5, 7};
  float dist[8];
  for (int k = 0; k < 8; k++) {
    CNNB_ASSERT_EQ_INT(pr.a[k], wa[k]);
    CNNB_ASSERT_EQ_INT(pr.b[k], wb[k]);
    CNNB_ASSERT_EQ_INT(pr.same[k], k % 4 < 2);
    CNNB_ASSERT_EQ_INT(pr.fold[k], k / 4);
    dist[k] = fabsf(x[pr.a[k]] - x[pr.b[k]]);
  }
  cnnb_verify_result r;
  CU_ASSERT_EQUAL_FATAL(cnnb_verify_eval(&pr, dist, 0.8, 0.5, &r), 0);
  CNNB_ASSERT_NEAR(r.fold_threshold[0], 0.5625, 1e-12);
  CNNB_ASSERT_NEAR(r.fold_threshold[1], 0.625, 1e-12);
  CNNB_ASSERT_NEAR(r.fold_accuracy[0], 1.0, 1e-12);
  CNNB_ASSERT_NEAR(r.fold_accuracy[1], 0.75, 1e-12);
  CNNB_ASSERT_NEAR(r.mean, 0.875, 1e-12);
  CNNB_ASSERT_NEAR(r.std, 0.125, 1e-12);
  CNNB_ASSERT_NEAR(r.accuracy_at, 0.625, 1e-12);
  CNNB_ASSERT_NEAR(r.val_threshold, 1.0, 1e-12);
  CNNB_ASSERT_NEAR(r.val, 0.75, 1e-12);
  CNNB_ASSERT_NEAR(r.far, 0.5, 1e-12);
  CU_ASSERT_EQUAL_FATAL(cnnb_verify_eval(&pr, dist, 0.6, 1e-3, &r), 0);
  CNNB_ASSERT_NEAR(r.val_threshold, 0.75, 1e-12);
  CNNB_ASSERT_NEAR(r.val, 0.75, 1e-12);
  CNNB_ASSERT_NEAR(r.far, 0, 1e-12);
  cnnb_pairs_free(&pr);

  struct {
    const char *text, *msg;
  } bad[] = {
    {"2 2\nalice 1 2\n", "bad.txt:3: file ends after 1 of 8 pairs"},
    {"1 1\nalice 1 2\nalice 1 bob\n", "bad.txt:3: expected a mismatched pair"},
    {"1 1\nalice 1\n", "bad.txt:2: expected a matched pair"},
    {"1 1\nalice 1 x\n", "bad.txt:2: expected a matched pair"},
    {"1\n", "bad.txt:1: expected 'FOLDS PAIRS_PER_FOLD'"},
    {"1 1\nalice 1 2\nalice 1 bob 1\nalice 1 2\n", "bad.txt:4: more lines than"},
    {"1 1\nalice 1 3\nalice 1 bob 1\n", "bad.txt:2: image 3 of 'alice' but E.h5 has 2 images of 'alice'"},
    {"1 1\nalice 1 2\nalice 1 erin 1\n", "bad.txt:3: name 'erin' is not in E.h5"},
    {"1 1\nalice 0 2\nalice 1 bob 1\n", "bad.txt:2: image 0 of 'alice'"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    p = write_file("bad.txt", bad[i].text);
    int rc = cnnb_pairs_load(&pr, p, ids, 8, "E.h5");
    CU_ASSERT_EQUAL(rc, CNNB_EINVAL);
    if (!strstr(cnnb_error_message(), bad[i].msg))
      fprintf(stderr, "\n  case %zu: '%s' lacks '%s'\n", i, cnnb_error_message(), bad[i].msg);
    CU_ASSERT_PTR_NOT_NULL(strstr(cnnb_error_message(), bad[i].msg));
  }
  /* one fold: no cross-validation */
  p = write_file("one.txt", "1 1\nalice 1 2\nalice 1 bob 1\n");
  CU_ASSERT_EQUAL_FATAL(cnnb_pairs_load(&pr, p, ids, 8, "E.h5"), 0);
  CU_ASSERT_EQUAL(cnnb_verify_eval(&pr, dist, 0.6, 1e-3, &r), CNNB_EINVAL);
  cnnb_pairs_free(&pr);
}

int main(void)
{
  CU_initialize_registry();
  CU_pSuite s = CU_add_suite("match", NULL, NULL);
  CU_add_test(s, "sha256 and the model hash", test_sha256);
  CU_add_test(s, "sgemm distances and top-K order", test_dist_topk);
  CU_add_test(s, "threshold choice", test_threshold);
  CU_add_test(s, "pairs file and the 10-fold protocol", test_pairs_verify);
  return cnnb_test_run();
}
