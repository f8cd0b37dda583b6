/* Long-option parsing for the subcommands (args.h). */
#include "cmd/args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_help(const char *usage, const cnnb_opt *o)
{
  printf("%s\n\noptions:\n", usage);
  for (; o->name; o++) {
    char lhs[64];
    snprintf(lhs, sizeof lhs, "--%s%s%s", o->name, o->metavar ? " " : "", o->metavar ? o->metavar : "");
    printf("  %-24s %s\n", lhs, o->help);
  }
  printf("  %-24s %s\n", "--help", "show this help");
}

int cnnb_args_parse(int argc, char **argv, const char *usage, const cnnb_opt *opts, const char **pos, int maxpos,
                    int *npos)
{
  *npos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      print_help(usage, opts);
      return 1;
    }
    if (strncmp(a, "--", 2) && strcmp(a, "-o")) {
      if (*npos == maxpos) {
        fprintf(stderr, "cnn-batch %s: unexpected argument '%s'\n%s\n", argv[0], a, usage);
        return -1;
      }
      pos[(*npos)++] = a;
      continue;
    }
    const char *name = !strcmp(a, "-o") ? "output" : a + 2;
    size_t len = strcspn(name, "=");
    const cnnb_opt *o = opts;
    for (; o->name; o++)
      if (strlen(o->name) == len && !strncmp(o->name, name, len)) break;
    if (!o->name) {
      fprintf(stderr, "cnn-batch %s: unknown option '%s' (see --help)\n", argv[0], a);
      return -1;
    }
    if (!o->metavar) {
      if (name[len]) {
        fprintf(stderr, "cnn-batch %s: --%s takes no value\n", argv[0], o->name);
        return -1;
      }
      *o->flag = 1;
      continue;
    }
    if (name[len] == '=') {
      *o->value = name + len + 1;
    } else if (i + 1 < argc) {
      *o->value = argv[++i];
    } else {
      fprintf(stderr, "cnn-batch %s: --%s needs a value (%s)\n", argv[0], o->name, o->metavar);
      return -1;
    }
  }
  return 0;
}

int cnnb_arg_long(const char *cmd, const char *name, const char *s, long lo, long hi, long *out)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (end == s || *end || errno || v < lo || v > hi) {
    fprintf(stderr, "cnn-batch %s: --%s: '%s' is not an integer in [%ld, %ld]\n", cmd, name, s, lo, hi);
    return -1;
  }
  *out = v;
  return 0;
}

int cnnb_arg_float(const char *cmd, const char *name, const char *s, double lo, double hi, double *out)
{
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) {
    fprintf(stderr, "cnn-batch %s: --%s: '%s' is not a number in [%g, %g]\n", cmd, name, s, lo, hi);
    return -1;
  }
  *out = v;
  return 0;
}
