/* Shared test helpers (cnnb_test.h). */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnnb_test.h"

static char tmp_dir[256];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

/* Test processes leave nothing behind in /tmp. */
static void remove_tmpdir(void) { nftw(tmp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

const char *cnnb_test_tmpdir(void)
{
  char *dir = tmp_dir;
  if (!dir[0]) {
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof tmp_dir, "%s/cnnb-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(dir)) {
      perror("mkdtemp");
      abort();
    }
    atexit(remove_tmpdir);
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

cnnb_net *cnnb_test_net(const char *cfg, int max_batch, int train)
{
  cnnb_net_opts o = cnnb_net_opts_default();
  o.max_batch = max_batch;
  o.train = train;
  o.quiet = 1;
  cnnb_net *net = NULL;
  int rc = cnnb_net_from_string(&net, cfg, "test.cfg", &o);
  if (rc) fprintf(stderr, "\n  build failed: %s\n", cnnb_error_message());
  CU_ASSERT_EQUAL(rc, 0);
  return net;
}
