/* A small long-option parser shared by the subcommands: "--name value", "--name=value" and
 * flags; every command gets --help from its option table. */
#ifndef CNNB_CMD_ARGS_H
#define CNNB_CMD_ARGS_H

typedef struct cnnb_opt {
  const char *name;   /* without the leading dashes */
  const char *metavar; /* NULL for a flag */
  const char *help;
  const char **value; /* receives the argument (options with metavar) */
  int *flag;          /* set to 1 (flags) */
} cnnb_opt;

/* Returns 0 on success, 1 when --help was printed (exit 0), -1 on a usage error (message
 * printed; exit 2). Positional arguments go to pos (at most maxpos, count in *npos). */
int cnnb_args_parse(int argc, char **argv, const char *usage, const cnnb_opt *opts, const char **pos, int maxpos,
                    int *npos);
/* Converters that print "cnn-batch CMD: --name: ..." and return -1 on a bad value. */
int cnnb_arg_long(const char *cmd, const char *name, const char *s, long lo, long hi, long *out);
int cnnb_arg_float(const char *cmd, const char *name, const char *s, double lo, double hi, double *out);
#endif
