/* Shared test helpers (cnnb_test.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnb_test.h"

const char *cnnb_test_tmpdir(void)
{
  static char dir[256];
  if (!dir[0]) {
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/cnnb-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
      perror("mkdtemp");
      abort();
    }
  }
  return dir;
}

const char *cnnb_test_path(const char *name)
{
  static char bufs[8][512];
  static int k;
  char *b = bufs[k++ & 7];
  snprintf(b, 512, "%s/%s", cnnb_test_tmpdir(), name);
  return b;
}

const char *cnnb_test_source_dir(void)
{
  const char *s = getenv("CNNB_SOURCE_DIR");
  return s && *s ? s : ".";
}

int cnnb_test_run(void)
{
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  CU_cleanup_registry();
  return failed ? 1 : 0;
}
